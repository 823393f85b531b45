"""The Responses front with the official `openai` SDK itself: a plain call, the stream helper
(which rebuilds the response from the events and fails on any out of order), structured output
with `parse`, a model looked up by id, and what the front refuses.

Usage: openai_responses.py BASE_URL API_KEY. Prints one JSON object. The Rust test
(tests/router/gateway.rs) queues the mock provider's replies and checks what reached it.
"""
import json
import sys

import openai
import pydantic


class Answer(pydantic.BaseModel):
    city: str
    degrees: int


base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=30)
out = {}

r = client.responses.create(model="gpt", instructions="Be brief.", input="Hello?", max_output_tokens=50,
                            reasoning={"effort": "low"})
out["plain"] = {"text": r.output_text, "status": r.status, "usage": r.usage.model_dump(exclude_none=True),
                "id": r.id, "model": r.model}

TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": False}}
with client.responses.stream(model="gpt", input="Weather in Paris?", tools=[TOOL]) as s:
    deltas = sum(1 for e in s if e.type == "response.output_text.delta")
    final = s.get_final_response()
out["stream_tools"] = {"deltas": deltas, "status": final.status,
                       "output": [o.model_dump() for o in final.output]}

with client.responses.stream(model="gpt", input="Tell me a story.") as s:
    deltas = sum(1 for e in s if e.type == "response.output_text.delta")
    final = s.get_final_response()
out["stream_text"] = {"deltas": deltas, "text": final.output_text,
                      "usage": final.usage.model_dump(exclude_none=True)}

p = client.responses.parse(model="gpt", input="How warm is Paris?", text_format=Answer)
out["parsed"] = p.output_parsed.model_dump()

out["model"] = client.models.retrieve("gpt").id
try:
    client.models.retrieve("no-such-route")
    out["missing_model"] = None
except openai.NotFoundError as e:
    out["missing_model"] = {"status": e.status_code, "code": e.code}

out["refused"] = []
for param, args in [
    ("previous_response_id", {"previous_response_id": "resp_123"}),
    ("reasoning.summary", {"reasoning": {"effort": "low", "summary": "auto"}}),
    ("store", {"store": True}),
    ("tools[0].type", {"tools": [{"type": "web_search"}]}),
]:
    try:
        client.responses.create(model="gpt", input="hi", **args)
        out["refused"].append({"expect": param, "error": None})
    except openai.BadRequestError as e:
        out["refused"].append({"expect": param, "error": {"status": e.status_code, "param": e.param,
                                                          "code": e.code}})
print(json.dumps(out))
