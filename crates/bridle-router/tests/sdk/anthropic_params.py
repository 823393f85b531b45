"""Sends the request parameters of the official `anthropic` SDK that the gateway does not
carry, one per request, then one request with the parameters it accepts at their defaults and
the sampling controls it carries (`stop_sequences`, `top_p`).

Usage: anthropic_params.py BASE_URL API_KEY. Prints one JSON object: for each refused parameter
the error the SDK raised, and the answer to the request with the defaults. The Rust test
(tests/router/gateway.rs) queues the one mock reply and checks the results.
"""
import json
import sys

import anthropic

base, key = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, timeout=30)
HI = [{"role": "user", "content": "hi"}]
TOOL = {"name": "f", "description": "a function", "input_schema": {"type": "object", "properties": {}}}
CACHED = [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]

# Each: the parameter the error must name, and the create() arguments that set it (sampling
# fields this SDK has no argument for go in extra_body, as callers send them).
REFUSED = [
    ("top_k", {"extra_body": {"top_k": 5}}),
    ("thinking.type", {"thinking": {"type": "adaptive"}}),
    ("service_tier", {"service_tier": "standard_only"}),
    ("output_config.format", {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}),
    ("messages[0].content[0].cache_control.ttl",
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                                                  "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]}),
    ("cache_control", {"extra_body": {"cache_control": {"type": "ephemeral"}}}),
    ("tool_choice.disable_parallel_tool_use",
     {"tools": [TOOL], "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}),
    ("colour", {"extra_body": {"colour": "red"}}),
]

out = {"refused": []}
for param, args in REFUSED:
    args = {"model": "claude", "max_tokens": 64, "messages": HI, **args}
    try:
        client.messages.create(**args)
        out["refused"].append({"expect": param, "error": None})
    except anthropic.BadRequestError as e:
        out["refused"].append({"expect": param, "error": {"status": e.status_code, "body": e.body}})

# The defaults, which change nothing, are accepted; the sampling, reasoning and caching controls
# are carried.
m = client.messages.create(model="claude", max_tokens=2048, messages=CACHED, stop_sequences=["\n\nHuman:"],
                           system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
                           extra_body={"top_p": 0.5},
                           metadata={"user_id": "customer-42"},
                           thinking={"type": "enabled", "budget_tokens": 1024},
                           output_config={"effort": "low"},
                           tools=[{**TOOL, "cache_control": {"type": "ephemeral", "ttl": "5m"}}],
                           tool_choice={"type": "auto", "disable_parallel_tool_use": False})
out["defaults"] = {"content": [b.model_dump(exclude_none=True) for b in m.content]}
print(json.dumps(out))
