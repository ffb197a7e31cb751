"""OpenAI's Responses API (`POST /v1/responses`) end to end through the official `openai`
SDK: text, streamed events (also the SDK's `responses.stream` helper), function tools
over two turns, structured output with `responses.parse`, and errors."""
from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel, Field

from test_chat import CHAT
from test_embeddings import assert_openai_error

QUESTION = "What is the capital of France?"
WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_text_answer_matches_chat_completions(client):
    r = client.responses.create(model=CHAT, input=QUESTION, temperature=0)
    chat = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": QUESTION}],
                                          temperature=0)
    assert r.status == "completed" and r.object == "response" and r.id.startswith("resp_")
    assert r.output_text == chat.choices[0].message.content and "Paris" in r.output_text
    assert r.usage.input_tokens == chat.usage.prompt_tokens
    assert r.usage.output_tokens == chat.usage.completion_tokens


def test_max_output_tokens_makes_it_incomplete(client):
    r = client.responses.create(model=CHAT, input=QUESTION, temperature=0, max_output_tokens=3)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 3


def test_streamed_events_build_the_same_text(client):
    whole = client.responses.create(model=CHAT, input=QUESTION, temperature=0).output_text
    kinds, deltas, final = [], "", None
    for event in client.responses.create(model=CHAT, input=QUESTION, temperature=0, stream=True):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas += event.delta
        if event.type == "response.completed":
            final = event.response
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-1] == "response.completed" and kinds.count("response.output_text.delta") > 1
    assert deltas == whole == final.output_text


def test_function_tools_over_two_turns(client):
    first = client.responses.create(model=CHAT, input="What is the weather in Paris?", tools=[WEATHER],
                                    tool_choice="required", temperature=0)
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather", first.output
    assert json.loads(call.arguments)["city"] == "Paris"
    second = client.responses.create(
        model=CHAT, tools=[WEATHER], temperature=0,
        input=[{"role": "user", "content": "What is the weather in Paris?"}, call,
               {"type": "function_call_output", "call_id": call.call_id, "output": "18 C and sunny"}])
    # `auto`: a new call, or an answer in words (possibly cut by the token limit).
    assert second.status in ("completed", "incomplete") and second.output, second
    if second.output[0].type == "message":
        assert second.output_text and not second.output_text.lstrip().startswith("{"), second


def test_the_sdks_stream_helper_accumulates_a_call(client):
    with client.responses.stream(model=CHAT, input="What is the weather in Paris?", tools=[WEATHER],
                                 tool_choice="required", temperature=0) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output[0].type == "function_call" and final.output[0].name == "get_weather"


class City(BaseModel):
    name: str = Field(max_length=40)
    country: str = Field(max_length=40)


def test_structured_output_with_parse(client):
    r = client.responses.parse(model=CHAT, input="Describe Paris.", text_format=City, temperature=0)
    assert isinstance(r.output_parsed, City), r.output_text
    assert r.output_parsed.name == "Paris"


@pytest.mark.parametrize("body,param", [
    ({"input": "Hi", "previous_response_id": "resp_x"}, "previous_response_id"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
    ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "Hi", "text": {"format": {"type": "json_schema", "name": "x",
                                         "schema": {"type": "object", "properties": {"a": {"pattern": "x"}}}}}},
     "text.format"),
    ({}, "input"),
])
def test_bad_requests_are_400(server, body, param):
    err = assert_openai_error(server.post("/v1/responses", {"model": CHAT, **body}), 400)
    assert err["param"] == param, err
