"""Sends the request parameters of the official `openai` SDK that the gateway does not carry,
one per request, then one request with the parameters it accepts at their defaults and the
controls it carries (`user`, `stop`, `seed`, `top_p`, `response_format`).

Usage: openai_params.py BASE_URL API_KEY. Prints one JSON object: for each refused parameter
the error the SDK raised, and the answer to the request with the defaults. The Rust test
(tests/router/gateway.rs) queues the one mock reply and checks the results.
"""
import json
import sys

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=30)
HI = [{"role": "user", "content": "hi"}]
FUNCTION = {"name": "f", "description": "a function", "parameters": {"type": "object", "properties": {}}}
SCHEMA = {"name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}

# Each: the parameter the error must name, and the create() arguments that set it.
REFUSED = [
    ("frequency_penalty", {"frequency_penalty": 0.5}),
    ("presence_penalty", {"presence_penalty": -0.5}),
    ("logit_bias", {"logit_bias": {"50256": -100}}),
    ("logprobs", {"logprobs": True}),
    ("top_logprobs", {"top_logprobs": 2}),
    ("parallel_tool_calls", {"parallel_tool_calls": False, "tools": [{"type": "function", "function": FUNCTION}]}),
    ("n", {"n": 2}),
    ("store", {"store": True}),
    ("metadata", {"metadata": {"k": "v"}}),
    ("service_tier", {"service_tier": "flex"}),
    ("modalities", {"modalities": ["text"]}),
    ("prediction", {"prediction": {"type": "content", "content": "hello"}}),
    ("safety_identifier", {"safety_identifier": "s-1"}),
    ("verbosity", {"verbosity": "low"}),
    ("web_search_options", {"web_search_options": {}}),
    ("stream_options.include_obfuscation", {"stream": True, "stream_options": {"include_obfuscation": True}}),
    ("messages[0].name", {"messages": [{"role": "user", "content": "hi", "name": "alice"}]}),
    ("colour", {"extra_body": {"colour": "red"}}),
]

out = {"refused": []}
for param, args in REFUSED:
    args = {"model": "gpt", "messages": HI, **args}
    try:
        r = client.chat.completions.create(**args)
        if args.get("stream"):
            list(r)
        out["refused"].append({"expect": param, "error": None})
    except openai.BadRequestError as e:
        out["refused"].append({"expect": param, "error": {
            "status": e.status_code, "param": e.param, "code": e.code, "body": e.body}})

# The defaults, which change nothing, are accepted; and the end user and sampling controls,
# which are carried.
r = client.chat.completions.create(model="gpt", messages=HI, n=1, logprobs=False, parallel_tool_calls=True,
                                   user="customer-42", stop="\n\n", seed=7, top_p=0.5, reasoning_effort="low",
                                   prompt_cache_key="tenant-a",
                                   response_format={"type": "json_schema", "json_schema": SCHEMA},
                                   store=False, frequency_penalty=0, presence_penalty=0,
                                   tools=[{"type": "function", "function": {**FUNCTION, "strict": True}}])
out["defaults"] = {"text": r.choices[0].message.content}
print(json.dumps(out))
