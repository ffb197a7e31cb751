"""Speculative decoding by n-gram lookup (`batching.speculative_tokens`): where a
generation's last tokens occurred before in its prompt or its own output, the tokens
that followed are checked in the same step. Each position is sampled as usual and a
draft counts only while the samples equal it, so the output is the one a token per
step gives: greedy, seeded sampling, stop sequences and token limits alike."""
from __future__ import annotations

import json
import threading

import pytest
import requests

from conftest import GEMMA, ROUTER_WASM, SMOLLM, Server, assert_same_or_near_tie, model_counts

CONFIG = """
[server]
public_metrics = true

[[models]]
name = "smollm2-fp32"
path = "{smollm}"
onnx = "onnx/model_fp32.onnx"
batching = {{ prefix_cache_mib = 0 }}

[[models]]
name = "smollm2-fp32-plain"
path = "{smollm}"
onnx = "onnx/model_fp32.onnx"
batching = {{ prefix_cache_mib = 0, speculative_tokens = 0 }}

[[models]]
name = "smollm2-fp32-short"
path = "{smollm}"
onnx = "onnx/model_fp32.onnx"
max_tokens = 64
batching = {{ prefix_cache_mib = 0 }}

[[models]]
name = "gemma-fused"
path = "{gemma}"
onnx = "onnx/model_fused.onnx"

[[tenants]]
name = "default"
public = true
component = "{router}"
"""

# A prompt whose continuation quotes it: the list is repeated, so drafts are found.
LIST = ("Copy the list exactly.\nList: red apple, green pear, yellow banana, purple plum, orange peach, "
        "blue berry, black cherry.\nCopy: red apple, green pear,")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    srv = Server(CONFIG.format(smollm=SMOLLM, gemma=GEMMA, router=ROUTER_WASM),
                 tmp_path_factory.mktemp("nnhost-speculative"))
    yield srv
    srv.stop()


def drafts(host, model: str) -> dict[str, float]:
    """The model's drafted and accepted (confirmed) token counts so far."""
    return model_counts(host, "speculative_tokens_total", model, ("drafted", "accepted"))


def complete(host, model: str, **extra) -> dict:
    body = {"model": model, "prompt": LIST, "max_tokens": 40, "temperature": 0, **extra}
    r = requests.post(host.url + "/v1/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def stream(host, model: str, **extra) -> tuple[str, dict]:
    """The streamed text and the final usage."""
    body = {"model": model, "prompt": LIST, "max_tokens": 40, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, **extra}
    text, usage = "", None
    with requests.post(host.url + "/v1/completions", json=body, stream=True, timeout=300) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                text += choice.get("text", "")
    return text, usage


def test_a_quoting_answer_is_drafted_and_reads_as_without_drafts(host):
    before = drafts(host, "smollm2-fp32")
    drafted = complete(host, "smollm2-fp32", logprobs=5)
    after = drafts(host, "smollm2-fp32")
    plain = complete(host, "smollm2-fp32-plain", logprobs=5)
    assert after["drafted"] > before["drafted"], "the copied list gave no drafts"
    confirmed = after["accepted"] - before["accepted"]
    assert confirmed >= 10, f"only {confirmed} drafted tokens confirmed: {drafted['choices'][0]['text']!r}"
    assert "yellow banana, purple plum" in drafted["choices"][0]["text"]
    d, p = drafted["choices"][0], plain["choices"][0]
    assert d["text"] == p["text"]
    assert d["logprobs"]["tokens"] == p["logprobs"]["tokens"]
    assert drafted["usage"] == plain["usage"]
    # A drafted position's logits come from a step of several positions: the same
    # model's, up to float rounding.
    for a, b in zip(d["logprobs"]["token_logprobs"], p["logprobs"]["token_logprobs"]):
        assert abs(a - b) < 1e-3, (d["logprobs"]["token_logprobs"], p["logprobs"]["token_logprobs"])
    assert drafts(host, "smollm2-fp32-plain") == {"drafted": 0.0, "accepted": 0.0}


@pytest.mark.parametrize("extra", [{"stop": ["purple"]}, {"max_tokens": 7}, {"max_tokens": 1}],
                         ids=["stop-sequence", "max-tokens", "one-token"])
def test_a_stream_ends_where_asked_inside_a_confirmed_draft(host, extra):
    """A stop sequence or the token limit falling inside a run of confirmed drafts ends
    the answer there, as it does a token at a time."""
    text, usage = stream(host, "smollm2-fp32", **extra)
    plain_text, plain_usage = stream(host, "smollm2-fp32-plain", **extra)
    assert text == plain_text
    assert usage == plain_usage
    if "max_tokens" in extra:
        assert usage["completion_tokens"] == extra["max_tokens"]
    else:
        assert text.endswith("yellow banana, "), text


def test_seeded_sampling_draws_what_a_token_per_step_draws(host):
    """Sampling at temperature 0.8: each emitted token takes one draw of the seeded
    generator whether or not a draft was checked, so a seed gives the same text."""
    extra = {"temperature": 0.8, "seed": 11, "max_tokens": 48}
    first = complete(host, "smollm2-fp32", **extra)["choices"][0]["text"]
    again = complete(host, "smollm2-fp32", **extra)["choices"][0]["text"]
    plain = complete(host, "smollm2-fp32-plain", **extra)["choices"][0]["text"]
    assert first == again == plain


def test_generations_drafting_together_keep_their_own_caches(host):
    """Rows of one batch confirm different numbers of drafted tokens; each row's cache
    must lose exactly its own unconfirmed positions. Prompts of different lengths, sent
    at once, answer as each does alone."""
    prompts = [LIST, "Numbers: one, two, three, four, five, six, seven, eight. Again: one, two,",
               "The cat sat on the mat. The dog sat on the log. The cat sat on the"]
    alone = []
    for prompt in prompts:
        r = requests.post(host.url + "/v1/completions", timeout=300,
                          json={"model": "smollm2-fp32-plain", "prompt": prompt, "max_tokens": 24,
                                "temperature": 0, "logprobs": 5})
        alone.append(r.json()["choices"][0])
    before = drafts(host, "smollm2-fp32")
    together: list[dict | None] = [None] * len(prompts)

    def run(i):
        r = requests.post(host.url + "/v1/completions", timeout=300,
                          json={"model": "smollm2-fp32", "prompt": prompts[i], "max_tokens": 24,
                                "temperature": 0, "logprobs": 5})
        together[i] = r.json()["choices"][0]

    for _ in range(2):
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
        [t.start() for t in threads]
        [t.join() for t in threads]
        for i, (a, t) in enumerate(zip(alone, together)):
            assert t is not None
            assert_same_or_near_tie(a, t, f"prompt {i}")
    assert drafts(host, "smollm2-fp32")["accepted"] > before["accepted"]


def test_a_generation_filling_the_context_drafts_up_to_its_end(host):
    """Drafts stop short of the context (64 tokens here): the answer fills it exactly and
    is the one a model with room to spare gives."""
    prompt_tokens = complete(host, "smollm2-fp32-short", max_tokens=1)["usage"]["prompt_tokens"]
    before = drafts(host, "smollm2-fp32-short")
    full = complete(host, "smollm2-fp32-short", max_tokens=64 - prompt_tokens)
    assert drafts(host, "smollm2-fp32-short")["accepted"] > before["accepted"]
    assert full["usage"]["prompt_tokens"] + full["usage"]["completion_tokens"] == 64
    assert full["choices"][0]["finish_reason"] == "length"
    plain = complete(host, "smollm2-fp32-plain", max_tokens=64 - prompt_tokens)
    assert full["choices"][0]["text"] == plain["choices"][0]["text"]
    r = requests.post(host.url + "/v1/completions", timeout=60,
                      json={"model": "smollm2-fp32-short", "prompt": LIST, "max_tokens": 65 - prompt_tokens})
    assert r.status_code == 400, r.text


def test_graphs_writing_their_cache_in_place_do_not_draft(host):
    """GroupQueryAttention graphs (the fused ones) keep one token per step."""
    r = requests.post(host.url + "/v1/completions", timeout=300,
                      json={"model": "gemma-fused", "prompt": LIST, "max_tokens": 16, "temperature": 0})
    assert r.status_code == 200, r.text
    assert drafts(host, "gemma-fused") == {"drafted": 0.0, "accepted": 0.0}
