"""Structured outputs through the gateway with the official `openai` SDK's `parse` helper: it
sends a Pydantic model as a strict `json_schema` response format and parses the reply into it.

Usage: openai_structured.py BASE_URL API_KEY. Prints one JSON object: the parsed reply. The Rust
test (tests/router/gateway.rs) queues the mock's JSON reply and checks what reached the mock.
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
r = client.chat.completions.parse(model="gpt", response_format=Answer,
                                  messages=[{"role": "user", "content": "How warm is Paris?"}])
print(json.dumps({"parsed": r.choices[0].message.parsed.model_dump()}))
