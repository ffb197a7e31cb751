"""Prompt truncation per request: vLLM's `truncate_prompt_tokens` (the last k tokens, the
tokenizer's special tokens kept and counted; -1 = what the model's context holds) on
embeddings, completions and chat, and TEI's `truncate: true` on embeddings (the host
keeps the start). Checked against the model's own tokenization and vectors."""
from __future__ import annotations

import math

import openai
import pytest

from conftest import ROUTER_WASM, SMOLLM, Server
from test_embeddings import assert_openai_error

MINILM = "all-MiniLM-L6-v2"
CHAT = "smollm2-135m-instruct"
BASE = "gemma-3-270m"
# Distinct words at both ends, so that keeping the start and keeping the end differ.
LONG = "alpha beta gamma " + "the river runs past the old mill " * 80 + "omega sigma delta"


def embed(server, **body):
    r = server.post("/v1/embeddings", {"model": MINILM, **body})
    assert r.status_code == 200, r.text
    return r.json()


def tokens(server, model, text, add_special_tokens):
    r = server.post("/v1/tokenize", {"model": model, "prompt": text, "add_special_tokens": add_special_tokens})
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_a_long_input_is_refused_without_truncation(server):
    r = server.post("/v1/embeddings", {"model": MINILM, "input": LONG})
    assert_openai_error(r, 400, param="input", code="context_length_exceeded")


def test_embeddings_keep_the_last_k_tokens_with_their_special_tokens(server):
    body = embed(server, input=[LONG, "short text"], truncate_prompt_tokens=16)
    assert body["usage"]["prompt_tokens"] == 16 + len(tokens(server, MINILM, "short text", True))
    # The same vector as the text's last 14 tokens sent as ids ([CLS] and [SEP] added by the host).
    tail = tokens(server, MINILM, LONG, False)[-14:]
    assert tokens(server, MINILM, "omega sigma delta", False) == tail[-3:]
    expected = embed(server, input=[tail])["data"][0]["embedding"]
    assert cosine(body["data"][0]["embedding"], expected) > 0.9999
    # A text within the limit is embedded as it is.
    alone = embed(server, input="short text")["data"][0]["embedding"]
    assert cosine(body["data"][1]["embedding"], alone) > 0.9999


def test_embeddings_minus_one_keeps_the_end_and_truncate_true_the_start(server):
    context = server.get(f"/v1/models/{MINILM}").json()["nnhost"]["context_length"]
    end = embed(server, input=LONG, truncate_prompt_tokens=-1)
    start = embed(server, input=LONG, truncate=True)
    assert end["usage"]["prompt_tokens"] == context
    assert start["usage"]["prompt_tokens"] == context
    ids = tokens(server, MINILM, LONG, False)
    by_end = embed(server, input=[ids[-(context - 2):]])["data"][0]["embedding"]
    by_start = embed(server, input=[ids[: context - 2]])["data"][0]["embedding"]
    assert cosine(end["data"][0]["embedding"], by_end) > 0.9999
    assert cosine(start["data"][0]["embedding"], by_start) > 0.9999
    assert cosine(by_start, by_end) < 0.999


def test_token_id_inputs_are_cut_too(server):
    ids = tokens(server, MINILM, LONG, False)
    body = embed(server, input=[ids], truncate_prompt_tokens=10)
    assert body["usage"]["prompt_tokens"] == 10
    expected = embed(server, input=[ids[-8:]])["data"][0]["embedding"]
    assert cosine(body["data"][0]["embedding"], expected) > 0.9999


def test_the_sdk_sends_it_as_extra_body(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    out = client.embeddings.create(model=MINILM, input=LONG, extra_body={"truncate_prompt_tokens": 32})
    assert out.usage.prompt_tokens == 32 and len(out.data[0].embedding) == 384


def test_completions_keep_the_prompts_end_and_its_bos(server):
    prompt = "Once upon a time " + "there was a long road. " * 60 + "At the end of the road stood"
    whole = tokens(server, BASE, prompt, True)
    r = server.post("/v1/completions", {"model": BASE, "prompt": prompt, "max_tokens": 3, "temperature": 0,
                                        "truncate_prompt_tokens": 12})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 12
    # The same answer as the cut prompt sent as ids: BOS, then the text's last 11 tokens.
    cut = [whole[0]] + whole[-11:]
    same = server.post("/v1/completions", {"model": BASE, "prompt": cut, "max_tokens": 3, "temperature": 0})
    assert same.status_code == 200, same.text
    assert r.json()["choices"][0]["text"] == same.json()["choices"][0]["text"]
    # A prompt within the limit is unchanged; echo shows the cut prompt as the model saw it.
    r = server.post("/v1/completions", {"model": BASE, "prompt": "Hello there", "max_tokens": 1,
                                        "truncate_prompt_tokens": 100, "echo": True})
    assert r.json()["choices"][0]["text"].startswith("Hello there")
    r = server.post("/v1/completions", {"model": BASE, "prompt": prompt, "max_tokens": 1,
                                        "truncate_prompt_tokens": 12, "echo": True})
    echoed = r.json()["choices"][0]["text"]
    assert " a long road. At the end of the road stood" in echoed and "Once upon" not in echoed


def test_chat_keeps_the_conversations_end(server):
    messages = [{"role": "system", "content": "Background: " + "nothing of note happened. " * 100},
                {"role": "user", "content": "Name the capital of France."}]
    full = server.post("/v1/tokenize", {"model": CHAT, "messages": messages}).json()["count"]
    r = server.post("/v1/chat/completions", {"model": CHAT, "messages": messages, "max_tokens": 8,
                                             "temperature": 0, "truncate_prompt_tokens": 40})
    assert r.status_code == 200, r.text
    assert full > 200 and r.json()["usage"]["prompt_tokens"] == 40
    stream = server.post("/v1/chat/completions", {"model": CHAT, "messages": messages, "max_tokens": 8,
                                                  "temperature": 0, "truncate_prompt_tokens": 40, "stream": True,
                                                  "stream_options": {"include_usage": True}})
    assert stream.status_code == 200 and '"prompt_tokens":40' in stream.text and "data: [DONE]" in stream.text


@pytest.mark.parametrize("route,body,param", [
    ("/v1/embeddings", {"model": MINILM, "input": "x", "truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
    ("/v1/embeddings", {"model": MINILM, "input": "x", "truncate_prompt_tokens": -2}, "truncate_prompt_tokens"),
    ("/v1/embeddings", {"model": MINILM, "input": "x", "truncate_prompt_tokens": "8"}, "truncate_prompt_tokens"),
    ("/v1/embeddings", {"model": MINILM, "input": "x", "truncate_prompt_tokens": 1.5}, "truncate_prompt_tokens"),
    # [CLS] and [SEP] take two: one token leaves no room for text.
    ("/v1/embeddings", {"model": MINILM, "input": "hello world", "truncate_prompt_tokens": 2},
     "truncate_prompt_tokens"),
    ("/v1/embeddings", {"model": MINILM, "input": "x", "truncate": "yes"}, "truncate"),
    ("/v1/completions", {"model": BASE, "prompt": "Once upon a time", "truncate_prompt_tokens": 1},
     "truncate_prompt_tokens"),
    ("/v1/chat/completions", {"model": CHAT, "messages": [{"role": "user", "content": "hi"}],
                              "truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
])
def test_bad_values_are_400_naming_the_field(server, route, body, param):
    assert_openai_error(server.post(route, body), 400, param=param)


# A model with a short context (256 tokens), so that conversations overflow it quickly.
SHORT_CONFIG = """
[[models]]
name = "smol-short"
path = "{smollm}"
max_tokens = 256

[[tenants]]
name = "default"
public = true
component = "{router}"
"""


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    srv = Server(SHORT_CONFIG.format(smollm=SMOLLM, router=ROUTER_WASM), tmp_path_factory.mktemp("nnhost-short"))
    yield srv
    srv.stop()


def long_conversation(turns: int = 6) -> list[dict]:
    out = []
    for i in range(turns):
        out.append({"role": "user", "content": f"Tell me fact {i} about rivers. " + "Rivers carry water to the sea. " * 5})
        out.append({"role": "assistant", "content": "Rivers are long bodies of flowing water. " * 4})
    return out + [{"role": "user", "content": "Name the capital of France."}]


def test_minus_one_fits_a_chat_prompt_into_the_context_beside_max_tokens(short):
    messages = long_conversation()
    r = short.post("/v1/chat/completions", {"model": "smol-short", "messages": messages, "max_tokens": 16})
    # Without a cut the prompt alone overflows: the error names the prompt, not max_tokens.
    assert_openai_error(r, 400, param="messages", code="context_length_exceeded")
    r = short.post("/v1/chat/completions", {"model": "smol-short", "messages": messages, "max_tokens": 16,
                                            "temperature": 0, "truncate_prompt_tokens": -1})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 256 - 16
    # Without max_tokens a quarter of the context is left for the answer.
    r = short.post("/v1/chat/completions", {"model": "smol-short", "messages": messages, "temperature": 0,
                                            "truncate_prompt_tokens": -1})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 256 - 64


def test_responses_truncation_auto_drops_the_oldest_turns(short):
    body = {"model": "smol-short", "instructions": "Be brief.", "input": long_conversation(), "max_output_tokens": 16,
            "temperature": 0, "store": False}
    r = short.post("/v1/responses", body)
    assert_openai_error(r, 400, param="input", code="context_length_exceeded")
    r = short.post("/v1/responses", {**body, "truncation": "auto"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["truncation"] == "auto" and out["status"] == "completed"
    assert "Paris" in out["output"][0]["content"][0]["text"]
    # Whole turns went: the instructions, and as many of the latest turns as fit, stay.
    conversation = long_conversation()
    counts = [short.post("/v1/tokenize", {"model": "smol-short", "messages": [
        {"role": "system", "content": "Be brief."}, *conversation[start:]]}).json()["count"]
        for start in range(0, len(conversation), 2)]
    assert out["usage"]["input_tokens"] == next(c for c in counts if c <= 256 - 16)
    assert counts[0] > 256 and counts[-1] < out["usage"]["input_tokens"]
    # A conversation that fits is not cut.
    small = {**body, "input": "Name the capital of France.", "truncation": "auto"}
    plain = short.post("/v1/responses", {**small, "truncation": "disabled"}).json()
    assert short.post("/v1/responses", small).json()["usage"]["input_tokens"] == plain["usage"]["input_tokens"]
    assert plain["truncation"] == "disabled"


def test_responses_truncation_auto_continues_a_stored_conversation(short):
    client = openai.OpenAI(base_url=short.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    first = client.responses.create(model="smol-short", input=long_conversation(2)[:-1] + [
        {"role": "user", "content": "Say OK."}], max_output_tokens=8, temperature=0)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="smol-short", previous_response_id=first.id, max_output_tokens=16,
                                input=long_conversation(2)[:-1] + [{"role": "user", "content": "Name the capital of France."}])
    answer = client.responses.create(model="smol-short", previous_response_id=first.id, max_output_tokens=16,
                                     temperature=0, truncation="auto",
                                     input=long_conversation(2)[:-1] + [{"role": "user", "content": "Name the capital of France."}])
    assert answer.truncation == "auto" and "Paris" in answer.output_text
