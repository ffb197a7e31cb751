"""OpenAI's Conversations API end to end through the official `openai` SDK: a conversation
made with items, `responses.create(conversation=...)` reading it and adding each turn, and
`conversations.items` listed, added, read and deleted."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from test_chat import CHAT


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_turns_in_a_conversation_are_the_whole_conversation(client):
    system = {"role": "system", "content": "Answer briefly."}
    conv = client.conversations.create(items=[system], metadata={"topic": "capitals"})
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "capitals"}
    first = client.responses.create(model=CHAT, input="What is the capital of France?", conversation=conv.id,
                                    temperature=0, max_output_tokens=16)
    second = client.responses.create(model=CHAT, input="And of Germany?", conversation=conv.id, temperature=0,
                                     max_output_tokens=16)
    # The same turns sent whole: the same prompt, the same greedy answer.
    whole = client.responses.create(model=CHAT, temperature=0, max_output_tokens=16, store=False, input=[
        system, {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": first.output_text}, {"role": "user", "content": "And of Germany?"}])
    assert second.usage.input_tokens == whole.usage.input_tokens
    assert second.output_text == whole.output_text

    items = client.conversations.items.list(conv.id, order="asc")
    assert [i.role for i in items.data] == ["system", "user", "assistant", "user", "assistant"]
    assert items.data[2].content[0].text == first.output_text
    assert [i.id for i in client.conversations.items.list(conv.id, limit=2)] == [i.id for i in reversed(items.data)]


def test_items_and_metadata_are_managed(client):
    conv = client.conversations.create()
    added = client.conversations.items.create(conv.id, items=[
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Remember: blue."}]}])
    item = client.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    assert item.content[0].text == "Remember: blue."
    assert client.conversations.update(conv.id, metadata={"k": "v"}).metadata == {"k": "v"}
    assert client.conversations.retrieve(conv.id).metadata == {"k": "v"}
    client.conversations.items.delete(item.id, conversation_id=conv.id)
    assert client.conversations.items.list(conv.id).data == []
    assert client.conversations.delete(conv.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model=CHAT, input="Hi", conversation=conv.id)
    assert e.value.body["param"] == "conversation"


def test_bad_conversation_requests_are_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.conversations.create(items=[{"type": "reasoning", "summary": []}])
    assert e.value.body["param"] == "items[0].type"
    conv = client.conversations.create()
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=CHAT, input="Hi", conversation=conv.id, previous_response_id="resp_x")
    assert e.value.body["param"] == "conversation"


def test_turns_added_at_once_all_stay(client):
    """Each turn's write is checked against what it read (the store's set-if): none is lost."""
    conv = client.conversations.create()
    words = [f"Say the word {w}." for w in ("apple", "river", "stone", "cloud")]
    with ThreadPoolExecutor(len(words)) as pool:
        done = list(pool.map(lambda w: client.responses.create(model=CHAT, input=w, conversation=conv.id,
                                                               max_output_tokens=4), words))
    assert all(r.status in ("completed", "incomplete") for r in done)
    items = client.conversations.items.list(conv.id, order="asc", limit=100).data
    assert len(items) == 2 * len(words)
    assert sorted(i.content[0].text for i in items if i.role == "user") == sorted(words)
