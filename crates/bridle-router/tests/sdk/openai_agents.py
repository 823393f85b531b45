"""The OpenAI Agents SDK (`openai-agents`) through the gateway's Responses front, its default
model unchanged: an agent with a function tool, run whole and streamed.

Usage: openai_agents.py BASE_URL API_KEY. Prints one JSON object: each run's final output, the
tool calls the agent made, and (streamed) the types of the raw events in order. The Rust test
(tests/router/gateway.rs) queues the mock provider's replies and checks what reached it.
"""
import asyncio
import json
import sys

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

base, key = sys.argv[1], sys.argv[2]
# The SDK would export its traces to OpenAI; this machine has no such address to reach.
set_tracing_disabled(True)
client = AsyncOpenAI(base_url=base, api_key=key, max_retries=0, timeout=30)
calls = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    calls.append(city)
    return f"sunny in {city}"


agent = Agent(
    name="weather",
    instructions="Answer in one sentence.",
    tools=[get_weather],
    model=OpenAIResponsesModel(model="gpt", openai_client=client),
)


async def main():
    out = {}
    r = await Runner.run(agent, "What is the weather in Paris?")
    out["plain"] = {"final": r.final_output, "calls": list(calls)}
    calls.clear()
    s = Runner.run_streamed(agent, "What is the weather in Rome?")
    kinds = []
    async for e in s.stream_events():
        if e.type == "raw_response_event":
            kinds.append(e.data.type)
    out["stream"] = {"final": s.final_output, "calls": list(calls), "events": kinds}
    print(json.dumps(out))


asyncio.run(main())
