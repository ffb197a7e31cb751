"""Tool calling end to end through the official `openai` SDK: the guest describes the
tools to the model and asks the host for a JSON answer shaped by their parameter
schemas; the answer comes back as OpenAI `tool_calls` (buffered and streamed), and a
second turn with the tool's result is answered."""
from __future__ import annotations

import json

import openai
import pytest

from test_chat import CHAT
from test_embeddings import assert_openai_error

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The current time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def check_weather_call(call):
    assert call.type == "function" and call.id.startswith("call_"), call
    assert call.function.name == "get_weather", call
    args = json.loads(call.function.arguments)
    assert list(args) == ["city", "unit"] and isinstance(args["city"], str), args
    assert args["unit"] in ("celsius", "fahrenheit"), args


def test_a_required_call_follows_the_tools_schema(client):
    r = client.chat.completions.create(model=CHAT, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                       temperature=0, max_tokens=200)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None
    check_weather_call(choice.message.tool_calls[0])
    assert json.loads(choice.message.tool_calls[0].function.arguments)["city"] == "Paris"


def test_a_named_function_is_called_once(client):
    r = client.chat.completions.create(
        model=CHAT, messages=ASK, tools=[WEATHER, TIME], temperature=0, max_tokens=200,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert [c.function.name for c in choice.message.tool_calls] == ["get_time"]


def test_streamed_calls_arrive_as_deltas_the_sdk_accumulates(client):
    stream = client.chat.completions.create(model=CHAT, messages=ASK, tools=[WEATHER], tool_choice="required",
                                            temperature=0, max_tokens=200, stream=True)
    calls, finish = {}, None
    for event in stream:
        for choice in event.choices:
            for d in choice.delta.tool_calls or []:
                entry = calls.setdefault(d.index, {"id": d.id, "name": "", "arguments": ""})
                entry["name"] += d.function.name or ""
                entry["arguments"] += d.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["arguments"])["city"] == "Paris"


def test_the_tools_result_is_answered_in_a_second_turn(client):
    first = client.chat.completions.create(model=CHAT, messages=ASK, tools=[WEATHER], tool_choice="required",
                                           temperature=0, max_tokens=200)
    message = first.choices[0].message
    call = message.tool_calls[0]
    history = ASK + [message, {"role": "tool", "tool_call_id": call.id,
                               "content": json.dumps({"temperature": 18, "sky": "sunny"})}]
    second = client.chat.completions.create(model=CHAT, messages=history, tools=[WEATHER], temperature=0,
                                            max_tokens=200)
    choice = second.choices[0]
    # `auto`: the model may call again or answer. An answer is plain text (not the JSON it was
    # generated in), also when max_tokens cuts it short.
    if choice.finish_reason == "tool_calls":
        check_weather_call(choice.message.tool_calls[0])
    else:
        assert choice.finish_reason in ("stop", "length") and choice.message.content, choice
        assert not choice.message.content.lstrip().startswith("{"), choice
        assert "sunny" in choice.message.content.lower() or "18" in choice.message.content, choice


def test_parallel_tool_calls_false_allows_one_call(client):
    r = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Weather and time in Paris, Oslo and Rome?"}],
        tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False, temperature=0, max_tokens=200)
    assert r.choices[0].finish_reason == "tool_calls"
    assert len(r.choices[0].message.tool_calls) == 1


def test_bad_tool_requests_are_400(server):
    r = server.post("/v1/chat/completions", {"model": CHAT, "messages": ASK, "tools": [WEATHER],
                                             "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    assert assert_openai_error(r, 400)["param"] == "tool_choice"
    r = server.post("/v1/chat/completions", {"model": CHAT, "messages": ASK, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
            "n": {"type": "number", "not": {"const": 3}}}}}}]})
    err = assert_openai_error(r, 400)
    assert err["param"] == "tools" and "'not'" in err["message"], err
    # A response format beside tools: its errors name it, at its own paths.
    r = server.post("/v1/chat/completions", {
        "model": CHAT, "messages": ASK, "tools": [WEATHER],
        "response_format": {"type": "json_schema", "json_schema": {"name": "A", "schema": {
            "type": "object", "properties": {"a": {"not": {"const": 1}}}}}}})
    err = assert_openai_error(r, 400, param="response_format")
    assert "schema.properties.a: the keyword 'not'" in err["message"], err


def test_a_model_repeating_its_call_is_stopped_at_the_repeat(client):
    """SmolLM2 writes `get_weather(Oslo)` again and again (as LangChain's `bind_tools` example
    showed): the answer ends at the first repeat, so a small `max_tokens` still gets the call."""
    oslo = {"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    r = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "Weather in Oslo?"}],
                                       tools=[oslo], tool_choice="required", temperature=0, max_tokens=100)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert [json.loads(c.function.arguments) for c in choice.message.tool_calls] == [{"city": "Oslo"}]
    assert r.usage.completion_tokens < 100 and r.usage.prompt_tokens > 0


GREETING = {"type": "json_schema", "json_schema": {"name": "Greeting", "strict": True, "schema": {
    "type": "object", "properties": {"greeting": {"type": "string", "maxLength": 80}},
    "required": ["greeting"], "additionalProperties": False}}}


def test_a_response_format_beside_tools_holds_the_answer_in_words(client, server):
    """What openai-agents sends for an Agent with tools and an `output_type`: the format
    applies when the model answers instead of calling (as at OpenAI)."""
    for question in ("Say hello to Ada.", "What is the weather like in Paris today?"):
        r = client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": question}], tools=[WEATHER],
            response_format=GREETING, temperature=0, max_tokens=120)
        choice = r.choices[0]
        if choice.finish_reason == "tool_calls":
            check_weather_call(choice.message.tool_calls[0])
        else:
            assert choice.finish_reason == "stop", choice
            assert list(json.loads(choice.message.content)) == ["greeting"], choice
    # A forced call has no answer in words: the format does not stand in its way.
    r = client.chat.completions.create(model=CHAT, messages=ASK, tools=[WEATHER], tool_choice="required",
                                       response_format=GREETING, temperature=0, max_tokens=200)
    check_weather_call(r.choices[0].message.tool_calls[0])
    # The Responses API's `text.format` with tools, as the Agents SDK's Responses model sends it.
    r = server.post("/v1/responses", {
        "model": CHAT, "input": "Say hello to Ada.", "temperature": 0, "max_output_tokens": 120,
        "tools": [{"type": "function", **WEATHER["function"]}],
        "text": {"format": {"type": "json_schema", **GREETING["json_schema"]}}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"]["format"]["name"] == "Greeting"
    for item in body["output"]:
        if item["type"] == "message":
            assert list(json.loads(item["content"][0]["text"])) == ["greeting"], item


def test_a_streamed_call_starts_without_content(server):
    """As OpenAI streams calls: the role chunk has no content, so the SDK's accumulated
    message has `content` None, as the whole answer has."""
    r = server.post("/v1/chat/completions", {"model": CHAT, "messages": ASK, "tools": [WEATHER],
                                             "tool_choice": "required", "temperature": 0,
                                             "max_tokens": 200, "stream": True}, stream=True)
    chunks = [json.loads(l[6:]) for l in r.iter_lines(decode_unicode=True)
              if l.startswith("data: ") and l != "data: [DONE]"]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_messages_sent_back_as_clients_dump_them_are_accepted(client, server):
    """The SDK's `message.model_dump()` (annotations, refusal, audio...), litellm's
    `provider_specific_fields` and reasoning servers' `reasoning_content` ride along in
    assistant messages a client sends back; they say nothing to the model."""
    first = client.chat.completions.create(model=CHAT, messages=ASK, temperature=0, max_tokens=20)
    dumped = first.choices[0].message.model_dump()
    dumped["provider_specific_fields"] = {"refusal": None}
    dumped["reasoning_content"] = None
    history = ASK + [dumped, {"role": "user", "content": [
        {"type": "text", "text": "And tomorrow?", "cache_control": {"type": "ephemeral"}}]}]
    second = client.chat.completions.create(model=CHAT, messages=history, temperature=0, max_tokens=20)
    assert second.choices[0].message.content
    # The Responses API's output items as the SDK dumps them (`phase`, `caller`...).
    resp = client.responses.create(model=CHAT, input="Hi", temperature=0, max_output_tokens=20, store=False)
    items = [item.model_dump() for item in resp.output]
    for item in items:
        item.setdefault("phase", None)
    r = server.post("/v1/responses", {"model": CHAT, "max_output_tokens": 20, "store": False, "input": [
        {"role": "user", "content": "Hi"}, *items, {"role": "user", "content": "Again", "phase": None}]})
    assert r.status_code == 200, r.text
    # A top-level field the API does not have is still an error.
    assert_openai_error(server.post("/v1/chat/completions", {"model": CHAT, "messages": ASK, "colour": 1}),
                        400, param="colour", code="unknown_parameter")


def test_calls_finished_before_max_tokens_are_the_answer(client):
    """An answer cut short keeps the calls it finished (the one being written would not
    parse), with `finish_reason` "length", as clients read calls, not raw JSON."""
    def tool(name):
        return {"type": "function", "function": {"name": name, "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    cut = 0
    for max_tokens in (30, 45, 60):
        r = client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "Weather and time in Paris, Oslo and Rome?"}],
            tools=[tool("get_weather"), tool("get_time")], tool_choice="required", temperature=0,
            max_tokens=max_tokens)
        choice = r.choices[0]
        assert choice.finish_reason in ("length", "tool_calls"), choice
        if not choice.message.tool_calls:
            # Cut before its first call was finished: the JSON so far.
            assert choice.finish_reason == "length" and choice.message.content.startswith("{"), choice
            continue
        cut += choice.finish_reason == "length"
        assert choice.message.content is None, choice
        for call in choice.message.tool_calls:
            assert call.function.name in ("get_weather", "get_time")
            assert isinstance(json.loads(call.function.arguments)["city"], str)
    assert cut >= 1
