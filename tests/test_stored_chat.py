"""Stored chat completions (`store: true`) end to end through the official `openai` SDK:
`chat.completions.create(store=True, metadata=...)`, streamed or not, then `retrieve`,
`update`, `list` (filters and cursor pages), `messages.list` and `delete`."""
from __future__ import annotations

import uuid

import openai
import pytest

from test_chat import CHAT

QUESTION = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def tag() -> dict:
    """Metadata no other test's completions carry: the server is shared."""
    return {"run": uuid.uuid4().hex}


def test_a_stored_completion_is_retrieved_updated_and_deleted(client):
    meta = tag()
    made = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, max_tokens=12,
                                          store=True, metadata=meta)
    got = client.chat.completions.retrieve(made.id)
    assert got.id == made.id and got.model == made.model and got.created == made.created
    assert got.choices[0].message.content == made.choices[0].message.content
    assert got.usage == made.usage and got.metadata == meta

    messages = client.chat.completions.messages.list(made.id)
    assert [m.id for m in messages.data] == [f"{made.id}-0", f"{made.id}-1"]
    assert [m.content for m in messages.data] == [m["content"] for m in QUESTION]

    updated = client.chat.completions.update(made.id, metadata={**meta, "reviewed": "yes"})
    assert updated.metadata == {**meta, "reviewed": "yes"}
    listed = client.chat.completions.list(metadata={"reviewed": "yes", **meta})
    assert [c.id for c in listed.data] == [made.id]

    deleted = client.chat.completions.delete(made.id)
    assert deleted.deleted and deleted.id == made.id
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(made.id)
    assert client.chat.completions.list(metadata=meta).data == []


def test_a_streamed_completion_is_stored_whole(client):
    meta = tag()
    text, chunk_ids, usages = "", set(), []
    for chunk in client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, max_tokens=12,
                                                stream=True, store=True, metadata=meta):
        chunk_ids.add(chunk.id)
        usages.append(chunk.usage)
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    # The client did not ask for usage: none came, though the stored completion has it.
    assert len(chunk_ids) == 1 and usages and all(u is None for u in usages)
    got = client.chat.completions.retrieve(chunk_ids.pop())
    assert got.choices[0].message.content == text and text
    assert got.choices[0].finish_reason in ("stop", "length")
    assert got.usage.completion_tokens > 0 and got.usage.prompt_tokens > 0
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens


def test_lists_page_by_cursor_in_either_order(client):
    meta = tag()
    ids = [client.chat.completions.create(model=CHAT, messages=QUESTION, max_tokens=2, store=True,
                                          metadata=meta).id for _ in range(3)]
    first = client.chat.completions.list(metadata=meta, limit=2)
    assert [c.id for c in first.data] == ids[:2] and first.has_more
    # The SDK follows `after` to the end.
    assert [c.id for c in client.chat.completions.list(metadata=meta, limit=2)] == ids
    newest = client.chat.completions.list(metadata=meta, order="desc", limit=1)
    assert [c.id for c in newest.data] == [ids[2]]
    assert client.chat.completions.list(metadata=meta, model="no-such-model").data == []


def test_without_store_nothing_is_kept(client):
    made = client.chat.completions.create(model=CHAT, messages=QUESTION, max_tokens=2)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.retrieve(made.id)
    assert e.value.status_code == 404


@pytest.mark.parametrize("call, param", [
    (lambda c: c.chat.completions.list(limit=0), "limit"),
    (lambda c: c.chat.completions.list(order="sideways"), "order"),
    (lambda c: c.chat.completions.list(after="chatcmpl-gone"), "after"),
    (lambda c: c.chat.completions.create(model=CHAT, messages=QUESTION, max_tokens=2,
                                         metadata={"k": "v" * 513}), "metadata.k"),
])
def test_bad_requests_are_400(client, call, param):
    with pytest.raises(openai.BadRequestError) as e:
        call(client)
    assert e.value.status_code == 400 and e.value.body["param"] == param, e.value.body
