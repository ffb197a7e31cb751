"""OpenAI's Agents SDK (`openai-agents`) against nnhost, as its users run it: an agent calling
a function tool over the Responses API and over Chat Completions, a conversation kept on the
server (`OpenAIConversationsSession`: the Conversations API), and a streamed run."""
from __future__ import annotations

import asyncio

import pytest
from agents import (Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIConversationsSession, Runner,
                    function_tool, set_default_openai_client, set_tracing_disabled)
from agents.items import MessageOutputItem, ToolCallItem, ToolCallOutputItem
from openai import AsyncOpenAI

from test_chat import CHAT

# Room for the small model's answers: the SDK treats a cut-off answer as an error.
SETTINGS = ModelSettings(temperature=0, max_tokens=400)


@pytest.fixture(scope="module", autouse=True)
def no_tracing():
    set_tracing_disabled(True)   # the SDK would upload traces to OpenAI


def run(coro):
    return asyncio.run(coro)


def client(server) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


calls: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    calls.append(city)
    return f"It is sunny and 21 C in {city}."


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
def test_an_agent_calls_a_tool_and_answers_with_its_result(server, api):
    calls.clear()
    model = CHAT if api == "responses" else OpenAIChatCompletionsModel(model=CHAT, openai_client=client(server))
    agent = Agent(name="weather", instructions="Answer with the tool's result.", model=model, tools=[get_weather],
                  model_settings=SETTINGS.resolve(ModelSettings(tool_choice="required")))

    async def go():
        set_default_openai_client(client(server), use_for_tracing=False)
        return await Runner.run(agent, "What's the weather in Paris?")

    result = run(go())
    kinds = [type(item) for item in result.new_items]
    assert kinds[:2] == [ToolCallItem, ToolCallOutputItem] and kinds[-1] == MessageOutputItem, kinds
    assert calls and "paris" in calls[0].lower()
    assert isinstance(result.final_output, str) and result.final_output.strip()


def test_a_conversation_session_keeps_the_turns_on_the_server(server):
    """The session lists the conversation's items as each run's input and adds the new turn."""
    api = client(server)
    agent = Agent(name="plain", instructions="Answer briefly.", model=CHAT, model_settings=SETTINGS)

    async def go():
        set_default_openai_client(api, use_for_tracing=False)
        session = OpenAIConversationsSession(openai_client=api)
        first = await Runner.run(agent, "My name is Ada.", session=session)
        second = await Runner.run(agent, "What is my name?", session=session)
        items = await api.conversations.items.list(session.session_id, order="asc")
        popped = await session.pop_item()
        left = await session.get_items()
        return first, second, [i async for i in items], popped, left

    first, second, items, popped, left = run(go())
    assert [i.role for i in items] == ["user", "assistant", "user", "assistant"]
    assert [i.content[0].text for i in items] == ["My name is Ada.", first.final_output, "What is my name?",
                                                 second.final_output]
    assert popped["role"] == "assistant" and len(left) == 3


def test_a_streamed_run_delivers_its_text_in_deltas(server):
    async def go():
        set_default_openai_client(client(server), use_for_tracing=False)
        agent = Agent(name="plain", instructions="Answer briefly.", model=CHAT, model_settings=SETTINGS)
        streamed = Runner.run_streamed(agent, "Say hello.")
        deltas = [e.data.delta async for e in streamed.stream_events()
                  if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"]
        return deltas, streamed.final_output

    deltas, final = run(go())
    assert len(deltas) > 1 and "".join(deltas) == final
