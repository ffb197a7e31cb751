"""The official `openai` Python SDK against nnhost: every endpoint the SDK wraps
(embeddings in float, base64 and shortened, models, chat and completions streamed and
not) and each error status mapped to the SDK's exception type."""
from __future__ import annotations

import base64
import math
import struct
import time

import openai
import pytest

from conftest import MINILM, ROUTER_WASM, SMOLLM, Server

EMBED = "all-MiniLM-L6-v2"
CHAT = "smollm2-135m-instruct"
TEXTS = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def sdk(url: str, key: str = "unused") -> openai.OpenAI:
    # max_retries=0: a 429 or 5xx must surface as the exception, not be retried away.
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def client(server):
    return sdk(server.url)


def close(a, b, tol=1e-6):
    assert len(a) == len(b)
    worst = max(abs(x - y) for x, y in zip(a, b))
    assert worst <= tol, worst


# --- embeddings ---

def test_embeddings_float_and_base64(client):
    floats = client.embeddings.create(model=EMBED, input=TEXTS, encoding_format="float")
    assert floats.model == EMBED and floats.object == "list"
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert all(len(d.embedding) == 384 for d in floats.data)
    assert floats.usage.prompt_tokens > 0 and floats.usage.total_tokens == floats.usage.prompt_tokens
    # Without encoding_format the SDK asks for base64 and decodes it into floats itself.
    decoded = client.embeddings.create(model=EMBED, input=TEXTS)
    # With encoding_format="base64" it hands back the string: little-endian float32.
    raw = client.embeddings.create(model=EMBED, input=TEXTS, encoding_format="base64")
    for f, d, r in zip(floats.data, decoded.data, raw.data):
        assert isinstance(d.embedding, list)
        close(f.embedding, d.embedding)
        assert isinstance(r.embedding, str)
        data = base64.b64decode(r.embedding)
        close(f.embedding, struct.unpack(f"<{len(data) // 4}f", data))
        assert math.isclose(math.fsum(x * x for x in f.embedding), 1.0, rel_tol=1e-4)


def test_embeddings_dimensions(client):
    full = client.embeddings.create(model=EMBED, input=TEXTS[0], encoding_format="float").data[0].embedding
    short = client.embeddings.create(model=EMBED, input=TEXTS[0], dimensions=64).data[0].embedding
    assert len(short) == 64
    norm = math.sqrt(math.fsum(x * x for x in full[:64]))
    close(short, [x / norm for x in full[:64]], tol=1e-5)
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=EMBED, input=TEXTS[0], dimensions=385)
    assert e.value.status_code == 400 and e.value.param == "dimensions"


def test_embeddings_token_ids(client):
    by_text = client.embeddings.create(model=EMBED, input="hello world", encoding_format="float")
    # MiniLM's (BERT's) ids for "hello world"; the host adds [CLS] and [SEP] as it does for text.
    by_ids = client.embeddings.create(model=EMBED, input=[[7592, 2088]], encoding_format="float")
    close(by_text.data[0].embedding, by_ids.data[0].embedding, tol=1e-5)


# --- models ---

def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list()]
    assert EMBED in ids and CHAT in ids
    model = client.models.retrieve(CHAT)
    assert model.id == CHAT and model.object == "model" and model.owned_by
    assert model.model_extra["nnhost"]["kind"] == "chat"
    assert client.models.retrieve(EMBED).model_extra["nnhost"]["dimensions"] == 384
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.status_code == 404 and e.value.code == "model_not_found"


# --- chat and completions (greedy: streamed text must equal the buffered text) ---

def test_chat_streamed_and_not(client):
    result = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, max_tokens=8)
    choice = result.choices[0]
    assert result.object == "chat.completion" and result.model == CHAT and result.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 0 < result.usage.completion_tokens <= 8
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens

    stream = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, max_tokens=8,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == choice.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] \
        == [choice.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == result.usage.completion_tokens


def test_openai_hints_are_accepted(client):
    """Fields the SDK offers for OpenAI's side (obfuscation padding, cache retention and
    keys, safety identifiers) are accepted; there is nothing for them to do here."""
    stream = client.chat.completions.create(
        model=CHAT, messages=QUESTION, temperature=0, max_tokens=4, stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False},
        prompt_cache_retention="24h", prompt_cache_key="k", safety_identifier="u1")
    assert list(stream)[-1].usage.completion_tokens > 0
    events = client.responses.create(model=CHAT, input="Hi", max_output_tokens=4, store=False, stream=True,
                                     stream_options={"include_obfuscation": True},
                                     prompt_cache_retention="in_memory")
    assert [e.type for e in events][-1] == "response.incomplete"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=CHAT, messages=QUESTION, max_tokens=4,
                                       prompt_cache_retention="forever")
    assert bad.value.body["param"] == "prompt_cache_retention"


def test_chat_with_raw_response_names_the_provider(client):
    raw = client.chat.completions.with_raw_response.create(model=CHAT, messages=QUESTION, temperature=0,
                                                           max_tokens=2)
    assert raw.headers["x-nnhost-provider"].startswith("cpu-")
    assert raw.parse().choices[0].message.content


def test_every_answer_has_a_request_id(client, server):
    """As OpenAI's: the SDK reads it (`_request_id`); a proxy's own id is kept; errors and the host's
    endpoints have one too."""
    raw = client.embeddings.with_raw_response.create(model=EMBED, input="hi")
    first = raw.headers["x-request-id"]
    assert first.startswith("req_") and len(first) == 28
    assert raw.parse()._request_id == first
    assert client.embeddings.with_raw_response.create(model=EMBED, input="hi").headers["x-request-id"] != first
    given = server.post("/v1/embeddings", {"model": EMBED, "input": "hi"}, headers={"x-request-id": "lb-7f3a.1"})
    assert given.status_code == 200 and given.headers["x-request-id"] == "lb-7f3a.1"
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="nope", input="hi")
    assert e.value.request_id.startswith("req_")
    assert server.get("/health").headers["x-request-id"].startswith("req_")


def test_completions_streamed_and_not(client):
    result = client.completions.create(model=CHAT, prompt="Once upon a time", temperature=0, max_tokens=8)
    choice = result.choices[0]
    assert result.object == "text_completion" and result.id.startswith("cmpl-")
    assert choice.text and choice.finish_reason in ("stop", "length")
    assert 0 < result.usage.completion_tokens <= 8

    stream = client.completions.create(model=CHAT, prompt="Once upon a time", temperature=0, max_tokens=8,
                                       stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] \
        == [choice.finish_reason]


def test_n_choices_and_several_prompts(client):
    """`n` choices and a list of prompts are generations of their own, decoded together."""
    greedy = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, max_tokens=8, n=3)
    assert [c.index for c in greedy.choices] == [0, 1, 2]
    assert len({c.message.content for c in greedy.choices}) == 1 and greedy.choices[0].message.content
    one = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, max_tokens=8)
    # The prompt counts once; the completions of all choices add up.
    assert greedy.usage.prompt_tokens == one.usage.prompt_tokens
    assert 3 <= greedy.usage.completion_tokens <= 3 * 8
    assert greedy.usage.total_tokens == greedy.usage.prompt_tokens + greedy.usage.completion_tokens

    sampled = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "Tell me a story."}],
                                             temperature=1, seed=11, max_tokens=20, n=3)
    assert len({c.message.content for c in sampled.choices}) > 1, "each choice samples with its own seed"

    texts: dict[int, str] = {}
    finished = []
    for chunk in client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, max_tokens=8, n=2,
                                                stream=True):
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finished.append(c.index)
    assert sorted(finished) == [0, 1]
    assert texts[0] == texts[1] and texts[0]

    several = client.completions.create(model="gemma-3-270m", prompt=["1, 2, 3, 4,", "Monday, Tuesday,"],
                                        temperature=0, max_tokens=4)
    assert [c.index for c in several.choices] == [0, 1]
    assert several.choices[0].text.startswith(" 5") and "Wednesday" not in several.choices[0].text
    assert several.choices[1].text != several.choices[0].text

    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=CHAT, prompt=["a"] * 5, n=4)
    assert e.value.param == "n" and "20 choices" in e.value.message


def test_logprobs_chat_and_completions(client):
    """Log probabilities of the model's own distribution: greedy picks the most likely
    token, the alternatives are sorted and their probabilities sum to at most 1."""
    r = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, max_tokens=8,
                                       logprobs=True, top_logprobs=3)
    choice = r.choices[0]
    content = choice.logprobs.content
    assert len(content) == r.usage.completion_tokens - (choice.finish_reason == "stop")
    assert "".join(t.token for t in content) == choice.message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert t.token == t.top_logprobs[0].token and abs(t.logprob - t.top_logprobs[0].logprob) < 1e-5
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
        assert sum(math.exp(a.logprob) for a in t.top_logprobs) <= 1 + 1e-4
        assert bytes(t.bytes) == t.token.encode()

    streamed = []
    for chunk in client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, max_tokens=8,
                                                logprobs=True, stream=True):
        if chunk.choices and chunk.choices[0].logprobs:
            streamed += chunk.choices[0].logprobs.content
    assert [t.token for t in streamed] == [t.token for t in content]
    assert all(t.top_logprobs == [] for t in streamed)

    plain = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, max_tokens=2)
    assert plain.choices[0].logprobs is None

    done = client.completions.create(model=CHAT, prompt="1, 2, 3, 4,", temperature=0, max_tokens=4, logprobs=2)
    lp = done.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 4
    assert "".join(lp.tokens) == done.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(4)]
    assert all(len(top) <= 2 and max(top.values()) == pytest.approx(p, abs=1e-5)
               for top, p in zip(lp.top_logprobs, lp.token_logprobs))

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT, messages=QUESTION, top_logprobs=2)
    assert e.value.param == "top_logprobs"


def test_logit_bias_bans_and_forces_tokens(client):
    first = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, max_tokens=1,
                                           logprobs=True)
    banned = first.choices[0].logprobs.content[0]
    tokens = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, max_tokens=1,
                                            logprobs=True, top_logprobs=1,
                                            logit_bias={str(top_id(banned.token)): -100})
    assert tokens.choices[0].logprobs.content[0].token != banned.token
    # The reported log probabilities stay the model's own: the banned token is still the most likely.
    assert tokens.choices[0].logprobs.content[0].top_logprobs[0].token == banned.token

    forced = client.completions.create(model=CHAT, prompt="The sky is", temperature=0, max_tokens=3,
                                       logit_bias={str(top_id(" green")): 100})
    assert forced.choices[0].text == " green" * 3


def top_id(text: str) -> int:
    """The id of a one-token text, through the tokenizer of the served model."""
    from tokenizers import Tokenizer
    ids = Tokenizer.from_file(str(SMOLLM / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    assert len(ids) == 1, ids
    return ids[0]


# --- errors → exception types ---

def test_400_is_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=5)
    assert e.value.status_code == 400 and e.value.param == "temperature"
    assert e.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=EMBED, input="")
    assert e.value.param == "input"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=CHAT, prompt="x", suffix="y")
    assert e.value.param == "suffix" and e.value.code == "unsupported_parameter"


def test_404_is_not_found_error(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert e.value.status_code == 404 and e.value.code == "model_not_found" and e.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")


def test_413_is_api_status_error(client):
    # The fixture's server takes bodies up to 1 MiB; the host answers before any guest runs.
    with pytest.raises(openai.APIStatusError) as e:
        client.embeddings.create(model=EMBED, input="word " * 300_000)
    assert type(e.value) is openai.APIStatusError  # no subclass for 413
    assert e.value.status_code == 413 and e.value.code == "request_too_large"


# A server without a public tenant: one keyed tenant allowed one request at a time.
KEYED_CONFIG = """
[[models]]
name = "{embed}"
path = "{minilm}"

[[models]]
name = "{chat}"
path = "{smollm}"

[[tenants]]
name = "solo"
api_keys = ["sk-solo"]
component = "{router}"

[tenants.limits]
max_concurrent_requests = 1
"""


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    work = tmp_path_factory.mktemp("openai-sdk-keyed")
    srv = Server(KEYED_CONFIG.format(embed=EMBED, chat=CHAT, minilm=MINILM, smollm=SMOLLM, router=ROUTER_WASM), work)
    yield srv
    srv.stop()


def test_401_is_authentication_error(keyed):
    for key in ["unused", "sk-wrong"]:
        with pytest.raises(openai.AuthenticationError) as e:
            sdk(keyed.url, key).models.list()
        assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    assert EMBED in [m.id for m in sdk(keyed.url, "sk-solo").models.list()]


def test_429_is_rate_limit_error(keyed):
    client = sdk(keyed.url, "sk-solo")
    # A long streamed generation holds the tenant's only slot while it runs.
    stream = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Tell me a long story about a dragon."}],
        temperature=0, max_tokens=400, stream=True)
    try:
        next(iter(stream))  # the request is in flight once the first chunk is here
        with pytest.raises(openai.RateLimitError) as e:
            client.embeddings.create(model=EMBED, input="hello")
        assert e.value.status_code == 429 and e.value.code == "rate_limit_exceeded"
        assert e.value.response.headers["retry-after"] == "1"
    finally:
        stream.close()
    # Closing the stream ends the request (the generation is cancelled): the slot frees up.
    deadline = time.time() + 30
    while True:
        try:
            assert client.embeddings.create(model=EMBED, input="hello").data
            break
        except openai.RateLimitError:
            assert time.time() < deadline, "the slot was not released after the stream closed"
            time.sleep(0.2)
