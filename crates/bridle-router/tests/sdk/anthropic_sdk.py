"""Drives the router's Anthropic-compatible front with the official `anthropic` SDK.

Usage: anthropic_sdk.py BASE_URL API_KEY. Prints one JSON object with what the SDK returned
for each scenario; the Rust test (tests/router/gateway.rs) queues the mock replies in the same
order and checks the results.
"""
import json
import sys

import anthropic

base, key = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, timeout=30)
TOOLS = [{"name": "get_weather", "description": "Get the current weather in a given location",
          "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]
out = {}


def blocks(message):
    return [b.model_dump(exclude_none=True) for b in message.content]


# 1. Plain, with prompt-cache usage.
m = client.messages.create(model="claude", max_tokens=256, system="be brief",
                           messages=[{"role": "user", "content": "Hello, Claude"}])
out["plain"] = {"content": blocks(m), "stop_reason": m.stop_reason, "usage": m.usage.model_dump(exclude_none=True),
                "model": m.model, "bridle": (m.model_extra or {}).get("bridle")}

# 2. Streamed text.
with client.messages.stream(model="claude", max_tokens=256,
                            messages=[{"role": "user", "content": "Hello"}]) as s:
    texts = list(s.text_stream)
    final = s.get_final_message()
out["stream"] = {"texts": texts, "content": blocks(final), "stop_reason": final.stop_reason,
                 "usage": final.usage.model_dump(exclude_none=True)}

# 3. Streamed tool use: input_json deltas assembled by the SDK.
msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
partial = []
with client.messages.stream(model="claude", max_tokens=256, messages=msgs, tools=TOOLS) as s:
    for event in s:
        if event.type == "input_json":
            partial.append(event.partial_json)
    final = s.get_final_message()
out["stream_tools"] = {"content": blocks(final), "stop_reason": final.stop_reason, "partial_json": partial}

# 4. The tool result goes back.
tool_use = [b for b in final.content if b.type == "tool_use"][0]
m = client.messages.create(model="claude", max_tokens=256, messages=msgs + [
    {"role": "assistant", "content": final.content},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "15 degrees"}]}])
out["tool_results"] = {"content": blocks(m)}

# 5. An OpenAI route through the Anthropic front: streamed parallel tool calls.
with client.messages.stream(model="gpt", max_tokens=256, messages=msgs, tools=TOOLS) as s:
    final = s.get_final_message()
out["cross"] = {"content": blocks(final), "stop_reason": final.stop_reason,
                "usage": final.usage.model_dump(exclude_none=True)}

# 6. Errors, in Anthropic's shapes.
try:
    client.messages.create(model="nope", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    out["not_found"] = None
except anthropic.NotFoundError as e:
    out["not_found"] = {"status": e.status_code, "body": e.body}
try:
    anthropic.Anthropic(base_url=base, api_key="bk_not_a_key", max_retries=0).messages.create(
        model="claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    out["bad_key"] = None
except anthropic.AuthenticationError as e:
    out["bad_key"] = {"status": e.status_code, "body": e.body}
print(json.dumps(out))
