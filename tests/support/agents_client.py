"""Run the OpenAI Agents SDK (its default model: the Responses API) against a gateway, as a separate
asyncio process: `python -m tests.support.agents_client BASE_URL MODEL [--stream]`.

The agent has one function tool; the run must call it and answer with its result. Prints a JSON
line: the final output, the tool's calls and the response ids the SDK saw."""

from __future__ import annotations

import asyncio
import json
import sys

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

calls: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather of a city."""
    calls.append(city)
    return f"22C in {city}"


async def main(base_url: str, model: str, stream: bool) -> None:
    set_tracing_disabled(True)  # tracing would call api.openai.com
    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    agent = Agent(name="weather", instructions="Use the tool.", tools=[get_weather],
                  model=OpenAIResponsesModel(model=model, openai_client=client))
    if stream:
        result = Runner.run_streamed(agent, "Weather in Paris?")
        kinds = [event.type async for event in result.stream_events()]
        output = result.final_output
    else:
        done = await Runner.run(agent, "Weather in Paris?")
        kinds, output = [], done.final_output
        result = done  # type: ignore[assignment]
    ids = [r.response_id for r in result.raw_responses]
    print(json.dumps({"output": output, "calls": calls, "ids": ids, "events": sorted(set(kinds))}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], "--stream" in sys.argv))
