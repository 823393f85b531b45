"""Drives the router's OpenAI-compatible front with the official `openai` SDK.

Usage: openai_sdk.py BASE_URL API_KEY. Prints one JSON object with what the SDK returned for
each scenario; the Rust test (tests/router/gateway.rs) queues the mock replies in the same
order and checks the results.
"""
import json
import sys

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=30)
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
]
out = {}


def collect(stream):
    text, calls, finish, usage, chunks = "", {}, None, None, 0
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            d = choice.delta
            if d.content:
                text += d.content
            for tc in d.tool_calls or []:
                c = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                if tc.id:
                    c["id"] = tc.id
                if tc.function and tc.function.name:
                    c["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    c["arguments"] += tc.function.arguments
            if choice.finish_reason:
                finish = choice.finish_reason
    return {"text": text, "tool_calls": [calls[i] for i in sorted(calls)], "finish_reason": finish,
            "usage": usage, "chunks": chunks}


# 1. Plain.
r = client.chat.completions.create(model="gpt", messages=[
    {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}])
out["plain"] = {"text": r.choices[0].message.content, "finish_reason": r.choices[0].finish_reason,
                "usage": r.usage.model_dump(), "model": r.model, "bridle": (r.model_extra or {}).get("bridle")}

# 2. Streamed text, with the usage chunk.
out["stream"] = collect(client.chat.completions.create(
    model="gpt", messages=[{"role": "user", "content": "stream please"}], stream=True,
    stream_options={"include_usage": True}))

# 3. Streamed parallel tool calls, read by hand and by the SDK's stream helper.
msgs = [{"role": "user", "content": "weather and time in Paris?"}]
out["stream_tools"] = collect(client.chat.completions.create(model="gpt", messages=msgs, tools=TOOLS, stream=True))
with client.chat.completions.stream(model="gpt", messages=msgs, tools=TOOLS) as s:
    final = s.get_final_completion()
m = final.choices[0].message
out["stream_helper"] = {"finish_reason": final.choices[0].finish_reason,
                        "tool_calls": [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                                       for c in m.tool_calls or []]}

# 4. The tool results go back.
calls = out["stream_tools"]["tool_calls"]
msgs2 = msgs + [{"role": "assistant", "content": None, "tool_calls": [
    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]}]
msgs2 += [{"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
          {"role": "tool", "tool_call_id": calls[1]["id"], "content": "noon"}]
r = client.chat.completions.create(model="gpt", messages=msgs2, tools=TOOLS)
out["tool_results"] = {"text": r.choices[0].message.content}

# 5. An Anthropic route through the OpenAI front, streamed tool calls.
out["cross"] = collect(client.chat.completions.create(model="claude", messages=msgs, tools=TOOLS, stream=True,
                                                      max_tokens=300))

# 6. Errors, in OpenAI's shapes.
try:
    client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    out["not_found"] = None
except openai.NotFoundError as e:
    out["not_found"] = {"status": e.status_code, "body": e.body, "code": e.code, "param": e.param}
try:
    openai.OpenAI(base_url=base, api_key="bk_not_a_key", max_retries=0).models.list()
    out["bad_key"] = None
except openai.AuthenticationError as e:
    out["bad_key"] = {"status": e.status_code, "message": e.message}
try:
    client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}])
    out["bad_request"] = None
except openai.BadRequestError as e:
    out["bad_request"] = {"status": e.status_code, "message": e.message}

# 7. The model list.
out["models"] = sorted(m.id for m in client.models.list())
print(json.dumps(out))
