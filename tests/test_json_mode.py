"""JSON mode and structured outputs (`response_format` `json_object` and `json_schema`)
end to end: the guest passes the format to the host, whose sampler only picks tokens
that keep the output a prefix of one accepted JSON object and ends the generation when
the object is complete."""
from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import Annotated, Literal, Optional
from uuid import UUID

import openai
import pytest
from pydantic import BaseModel, Field, HttpUrl

from test_chat import CHAT, sse_events
from test_embeddings import assert_openai_error

PARIS = [{"role": "user", "content": "Describe the city of Paris in JSON with keys name, country, population."}]
JSON_MODE = {"type": "json_object"}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_json_mode_answers_with_one_object_and_ends_with_it(client):
    # Left alone, the int4 model's greedy answer depends on the CPU: on AVX-512 VNNI machines
    # it wraps its JSON in a Markdown fence and keeps talking, on AVX2-only ones it answers a
    # bare object (docs/PROVIDERS.md). JSON mode gives one object, ended as soon as it closes.
    r = client.chat.completions.create(model=CHAT, messages=PARIS, temperature=0, max_tokens=120,
                                       response_format=JSON_MODE)
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice
    value = json.loads(choice.message.content)
    assert isinstance(value, dict) and value.get("name") == "Paris", value
    # The generation ended with the object: no stop token was needed after it.
    assert r.usage.completion_tokens < 40, r.usage


def test_sampled_choices_are_all_objects(client):
    r = client.chat.completions.create(model=CHAT, messages=PARIS, temperature=1.0, seed=11, n=8,
                                       max_tokens=200, response_format=JSON_MODE)
    assert len(r.choices) == 8
    stopped = [c for c in r.choices if c.finish_reason == "stop"]
    assert len(stopped) >= 4, [c.finish_reason for c in r.choices]
    for c in stopped:
        assert isinstance(json.loads(c.message.content), dict), c.message.content
    for c in r.choices:
        assert c.message.content.lstrip().startswith("{"), c.message.content


def test_streamed_json_mode_is_the_same_object(server):
    body = {"model": CHAT, "messages": PARIS, "temperature": 0, "max_tokens": 120,
            "response_format": JSON_MODE}
    whole = server.post("/v1/chat/completions", body).json()["choices"][0]["message"]["content"]
    r = server.session.post(server.url + "/v1/chat/completions", json={**body, "stream": True},
                            stream=True, timeout=120)
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
    assert text == whole and isinstance(json.loads(text), dict)
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_json_mode_needs_the_word_json_in_the_messages(server):
    r = server.post("/v1/chat/completions", {
        "model": CHAT, "messages": [{"role": "user", "content": "Describe Paris."}],
        "response_format": JSON_MODE})
    err = assert_openai_error(r, 400)
    assert err["param"] == "messages" and "json" in err["message"], err


# String lengths bound the answer (maxLength is enforced), so a rambling model still finishes.
class City(BaseModel):
    name: str = Field(max_length=40)
    country: str = Field(max_length=40)
    population: int
    capital: bool


class Lunch(BaseModel):
    title: str = Field(max_length=60)
    day: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    attendees: list[Annotated[str, Field(max_length=30)]] = Field(max_length=4)
    location: Optional[City]


@pytest.mark.parametrize("model,prompt", [
    (City, "Describe the city of Paris."),
    # Nested model ($defs / $ref), Optional (anyOf with null), Literal (enum), list.
    (Lunch, "Alice and Bob meet for lunch in Paris on Friday."),
])
def test_structured_outputs_through_the_sdks_parse(client, model, prompt):
    r = client.chat.completions.parse(model=CHAT, messages=[{"role": "user", "content": prompt}],
                                      response_format=model, temperature=0, max_tokens=400)
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice
    assert isinstance(choice.message.parsed, model), choice.message.content
    # Every property is written, in the schema's order.
    assert list(json.loads(choice.message.content)) == list(model.model_fields)


def test_schema_constrains_values_the_model_would_not_choose(client):
    schema = {"type": "object", "additionalProperties": False, "required": ["answer", "confidence", "tags"],
              "properties": {"answer": {"enum": ["yes", "no"]},
                             "confidence": {"type": "integer"},
                             "tags": {"type": "array", "items": {"type": "string", "maxLength": 8},
                                      "minItems": 1, "maxItems": 2}}}
    r = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Is Paris in France? Explain at length."}],
        temperature=1.0, seed=5, n=4, max_tokens=120,
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": schema}})
    stopped = [c for c in r.choices if c.finish_reason == "stop"]
    assert len(stopped) >= 2, r.choices
    for c in stopped:
        v = json.loads(c.message.content)
        assert v["answer"] in ("yes", "no") and isinstance(v["confidence"], int), v
        assert 1 <= len(v["tags"]) <= 2 and all(len(t) <= 8 for t in v["tags"]), v


@pytest.mark.parametrize("schema,says", [
    ({"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 5}}}, "'multipleOf'"),
    ({"type": "object", "properties": {"site": {"type": "string", "format": "hostname"}}},
     "the format 'hostname' is not supported"),
    ({"type": "object", "properties": {"zip": {"type": "string", "pattern": "(a)\\1"}}}, "cannot be used"),
    ({"type": "array", "items": {"type": "string"}}, "root must be an object"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}, "names nothing"),
])
def test_schemas_the_host_cannot_enforce_are_400(server, schema, says):
    r = server.post("/v1/chat/completions", {
        "model": CHAT, "messages": PARIS,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    err = assert_openai_error(r, 400)
    assert err["param"] == "response_format" and says in err["message"], err


class Event(BaseModel):
    """What pydantic writes for everyday fields: bounds (`ge`/`le`/`gt`/`lt`), dates,
    URLs and patterns; the host holds the answer to all of them."""
    title: str = Field(max_length=40)
    day: date
    starts: datetime
    attendees: int = Field(ge=1, le=500)
    rating: float = Field(ge=0, le=5)
    discount: float = Field(gt=0, lt=1)
    site: HttpUrl
    code: str = Field(pattern=r"^[A-Z]{3}-[0-9]{4}$")
    ticket: UUID


def test_bounds_formats_and_patterns_are_enforced(client):
    for seed in (1, 2, 3):
        r = client.chat.completions.parse(
            model=CHAT, messages=[{"role": "user", "content": "Invent a tech conference as JSON."}],
            response_format=Event, temperature=1, seed=seed, max_tokens=300)
        choice = r.choices[0]
        assert choice.finish_reason == "stop", choice
        event = choice.message.parsed
        assert isinstance(event, Event), choice.message.content
        assert 1 <= event.attendees <= 500 and 0 < event.discount < 1
        assert re.fullmatch(r"[A-Z]{3}-[0-9]{4}", event.code)
        assert str(event.site).startswith(("http://", "https://"))
