"""OpenAI's Responses API (`POST /v1/responses`) end to end through the official `openai`
SDK: text, streamed events (also the SDK's `responses.stream` helper), function tools
over two turns, structured output with `responses.parse`, stored responses
(`previous_response_id`, `retrieve`, `delete`, `input_items`), and errors."""
from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel, Field

from test_chat import CHAT
from test_embeddings import assert_openai_error

QUESTION = "Name the capital of France."  # a clear margin on every CPU (see test_chat.py)
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


def test_logprobs_are_chats_and_follow_the_stream(client):
    include = ["message.output_text.logprobs"]
    r = client.responses.create(model=CHAT, input=QUESTION, temperature=0, include=include, top_logprobs=3)
    chat = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": QUESTION}],
                                          temperature=0, logprobs=True, top_logprobs=3)
    part = r.output[0].content[0]
    assert r.top_logprobs == 3
    assert "".join(t.token for t in part.logprobs) == part.text == r.output_text
    expected = chat.choices[0].logprobs.content
    assert [t.token for t in part.logprobs] == [t.token for t in expected]
    for got, want in zip(part.logprobs, expected):
        assert abs(got.logprob - want.logprob) < 0.05 and len(got.top_logprobs) == 3
        assert bytes(got.bytes).decode() == got.token and got.top_logprobs[0].logprob >= got.logprob - 1e-4
    streamed, final = [], None
    for event in client.responses.create(model=CHAT, input=QUESTION, temperature=0, include=include, stream=True):
        if event.type == "response.output_text.delta":
            assert event.logprobs, event  # each delta carries the tokens that made it
            streamed += event.logprobs
        if event.type == "response.completed":
            final = event.response
    assert [t.token for t in streamed] == [t.token for t in final.output[0].content[0].logprobs]
    assert "".join(t.token for t in streamed) == final.output_text
    plain = client.responses.create(model=CHAT, input=QUESTION, temperature=0, max_output_tokens=4)
    assert plain.output[0].content[0].logprobs == []


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
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
    ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "Hi", "text": {"format": {"type": "json_schema", "name": "x",
                                         "schema": {"type": "object", "properties": {"a": {"pattern": "x"}}}}}},
     "text.format"),
    ({}, "input"),
    ({"input": "Hi", "include": ["file_search_call.results"]}, "include[0]"),
    ({"input": "Hi", "top_logprobs": 21}, "top_logprobs"),
])
def test_bad_requests_are_400(server, body, param):
    err = assert_openai_error(server.post("/v1/responses", {"model": CHAT, **body}), 400)
    assert err["param"] == param, err


def test_previous_response_id_continues_a_stored_conversation(client):
    """The second turn sends only its new message: the host's store holds the first."""
    first = client.responses.create(model=CHAT, input="My name is Ada. Say hello to me.", temperature=0,
                                    max_output_tokens=30)
    assert first.store is True
    second = client.responses.create(model=CHAT, input="What is my name?", previous_response_id=first.id,
                                     temperature=0, max_output_tokens=30)
    assert second.previous_response_id == first.id
    # The same as sending the whole conversation: the same prompt, so the same greedy answer.
    whole = client.responses.create(model=CHAT, temperature=0, max_output_tokens=30, input=[
        {"role": "user", "content": "My name is Ada. Say hello to me."}, *first.output,
        {"role": "user", "content": "What is my name?"}])
    assert second.usage.input_tokens == whole.usage.input_tokens
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.output_text == whole.output_text
    # Streamed turns are stored too, and continue the same way.
    events = list(client.responses.create(model=CHAT, input="Spell my name backwards.", stream=True,
                                          previous_response_id=second.id, temperature=0, max_output_tokens=20))
    assert events[-1].type in ("response.completed", "response.incomplete")
    third = events[-1].response
    assert client.responses.retrieve(third.id).output_text == third.output_text
    assert third.usage.input_tokens > second.usage.input_tokens


def test_stored_responses_are_read_listed_and_deleted(client, server):
    r = client.responses.create(model=CHAT, input=QUESTION, temperature=0, max_output_tokens=12,
                                metadata={"case": "store"})
    back = client.responses.retrieve(r.id)
    assert back.id == r.id and back.output_text == r.output_text and back.metadata == {"case": "store"}
    items = client.responses.input_items.list(r.id)
    assert [i.role for i in items.data] == ["user"] and items.data[0].content[0].text == QUESTION
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model=CHAT, input="Hi", previous_response_id=r.id)
    assert e.value.param == "previous_response_id"
    unstored = client.responses.create(model=CHAT, input=QUESTION, store=False, max_output_tokens=4)
    assert unstored.store is False
    assert server.get(f"/v1/responses/{unstored.id}").status_code == 404


def test_a_stored_function_call_is_answered_by_id(client):
    """The tool flow over stored state: the second request sends only the call's output."""
    first = client.responses.create(model=CHAT, input="What is the weather in Paris?", tools=[WEATHER],
                                    tool_choice="required", temperature=0)
    call = first.output[0]
    assert call.type == "function_call", first.output
    second = client.responses.create(
        model=CHAT, tools=[WEATHER], temperature=0, previous_response_id=first.id, max_output_tokens=40,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 C and sunny"}])
    assert second.status in ("completed", "incomplete") and second.output, second
