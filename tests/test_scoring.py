"""Prompt scoring end to end: `/v1/completions` with `echo` (and `logprobs`), through HTTP → guest →
host (a chunked prefill whose graph runs keep every position's logits) → ONNX Runtime. What
evaluation harnesses (lm-evaluation-harness's `local-completions`) send for log-likelihoods.
Also `best_of`, which ranks sampled candidates by their log probability per token."""
from __future__ import annotations

import math
import threading

import openai
import pytest

from test_chat import sse_events

SMOL = "smollm2-135m-instruct"
GEMMA = "gemma-3-270m"
TEXT = "The capital of France is Paris. The capital of Italy is Rome."


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def score(server, prompt, model=SMOL, **extra) -> dict:
    r = server.post("/v1/completions", {"model": model, "prompt": prompt, "echo": True, "logprobs": 1,
                                        "max_tokens": 0, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def assert_offsets_match(text: str, lp: dict) -> None:
    """Each token's text is where its offset says (special tokens and bytes of a split character aside)."""
    checked = 0
    for token, offset in zip(lp["tokens"], lp["text_offset"]):
        if token.startswith("<") or "\ufffd" in token:
            continue
        assert text[offset:offset + len(token)] == token, (token, offset, text)
        checked += 1
    assert checked >= len(lp["tokens"]) - 2


def test_sdk_scores_a_prompt_alone(client):
    r = client.completions.create(model=SMOL, prompt=TEXT, echo=True, logprobs=1, max_tokens=0)
    choice = r.choices[0]
    assert choice.text == TEXT and choice.finish_reason == "length"
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.prompt_tokens
    assert r.usage.completion_tokens == 0
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x <= 0 for x in lp.token_logprobs[1:])
    # Each alternative list holds the most likely token: never below the scored token.
    for chosen, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:]):
        assert len(top) == 1 and max(top.values()) >= chosen - 1e-6
    assert_offsets_match(TEXT, lp.model_dump())
    # The model knows its capitals: " Rome" after "The capital of Italy is" is likely.
    rome = lp.tokens.index(" Rome")
    assert lp.token_logprobs[rome] > math.log(0.2), lp.token_logprobs[rome]


def test_a_greedy_continuation_scores_as_it_was_generated(server):
    """Scoring prompt + its greedy continuation gives the continuation's tokens the log probabilities
    they were generated with (prefill vs cached decode: kernel rounding only), each one the top token:
    what lm-evaluation-harness's `is_greedy` checks."""
    prompt = server.post("/v1/completions", {"model": SMOL, "prompt": "Water boils at", "max_tokens": 0,
                                             "echo": True, "logprobs": 0}).json()
    ids_r = server.post("/v1/completions", {"model": SMOL, "prompt": "Water boils at", "max_tokens": 6,
                                            "temperature": 0, "logprobs": 0})
    assert ids_r.status_code == 200, ids_r.text
    generated = ids_r.json()["choices"][0]["logprobs"]
    n = len(prompt["choices"][0]["logprobs"]["tokens"])
    whole = "Water boils at" + ids_r.json()["choices"][0]["text"]
    scored = score(server, whole)["choices"][0]["logprobs"]
    # Retokenizing the whole text gives the same tokens here (plain ASCII words).
    assert scored["tokens"][n:] == generated["tokens"], (scored["tokens"], generated["tokens"])
    for got, want, top in zip(scored["token_logprobs"][n:], generated["token_logprobs"], scored["top_logprobs"][n:]):
        # Within float noise where MatMulNBits runs one row (a decode step) and several (a prefill)
        # on one kernel (AVX-512 VNNI); AVX2-only CPUs take another for one row: up to ~0.06 seen.
        assert abs(got - want) < 0.15, (got, want)
        assert got >= max(top.values()) - 0.01, (got, top)


def test_token_prompts_and_lm_eval_requests(server):
    """lm-evaluation-harness's request: token-id prompts, echo, logprobs 1, max_tokens 1, greedy; each
    choice echoes its prompt's decoded text and scores its tokens, then one generated token."""
    prompts = [[504, 3575, 282, 4649], [1000, 2000, 3000]]
    r = server.post("/v1/completions", {"model": SMOL, "prompt": prompts, "echo": True, "logprobs": 1,
                                        "max_tokens": 1, "temperature": 0})
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [len(c["logprobs"]["token_logprobs"]) for c in choices] == [5, 4]
    for c, ids in zip(choices, prompts):
        lp = c["logprobs"]
        assert lp["token_logprobs"][0] is None and all(x <= 0 for x in lp["token_logprobs"][1:])
        assert c["text"].startswith("".join(lp["tokens"][:len(ids)]))
        assert lp["text_offset"][len(ids)] == len("".join(lp["tokens"][:len(ids)]))
    assert r.json()["usage"]["prompt_tokens"] == 7


def test_long_prompts_are_scored_across_chunks(server):
    """A prompt of several scoring chunks (64 tokens each) scores its beginning as that beginning alone."""
    text = " ".join(f"Item {i} is on shelf {i % 7}." for i in range(40))
    r = score(server, text)
    whole = r["choices"][0]["logprobs"]
    assert len(whole["tokens"]) == r["usage"]["prompt_tokens"] > 200
    assert all(x is not None for x in whole["token_logprobs"][1:])
    prefix_text = text[:whole["text_offset"][100]]
    prefix = score(server, prefix_text)["choices"][0]["logprobs"]
    k = min(len(prefix["tokens"]), 100) - 1
    assert prefix["tokens"][:k] == whole["tokens"][:k]
    worst = max(abs(a - b) for a, b in zip(prefix["token_logprobs"][1:k], whole["token_logprobs"][1:k]))
    assert worst < 0.02, worst
    # Later items repeat a pattern: the model grows confident (mean log probability of the last 50
    # tokens well above the first 50's).
    lps = whole["token_logprobs"]
    assert sum(lps[-50:]) / 50 > sum(lps[1:51]) / 50 + 0.5


def test_gemma_scores_after_its_bos(server):
    r = score(server, "Café au lait, s’il vous plaît!", model=GEMMA)
    choice = r["choices"][0]
    lp = choice["logprobs"]
    assert choice["text"] == "Café au lait, s’il vous plaît!"
    assert lp["tokens"][0] == "<bos>" and lp["token_logprobs"][0] is None and lp["text_offset"][:2] == [0, 0]
    assert_offsets_match(choice["text"], lp)


def test_echo_without_logprobs_and_with_generation(server):
    r = server.post("/v1/completions", {"model": SMOL, "prompt": "Once upon a time", "echo": True,
                                        "max_tokens": 5, "temperature": 0})
    assert r.status_code == 200, r.text
    text = r.json()["choices"][0]["text"]
    alone = server.post("/v1/completions", {"model": SMOL, "prompt": "Once upon a time", "max_tokens": 5,
                                            "temperature": 0}).json()["choices"][0]["text"]
    assert text == "Once upon a time" + alone
    assert r.json()["choices"][0]["logprobs"] is None


def test_streamed_echo_sends_the_prompt_first(server):
    r = server.session.post(server.url + "/v1/completions", timeout=120, stream=True, json={
        "model": SMOL, "prompt": TEXT, "echo": True, "logprobs": 1, "max_tokens": 3, "temperature": 0,
        "stream": True})
    assert r.status_code == 200
    events = [e for e in sse_events(r) if e != "[DONE]"]
    first = events[0]["choices"][0]
    assert first["text"] == TEXT and first["logprobs"]["token_logprobs"][0] is None
    generated = [e["choices"][0] for e in events[1:] if e["choices"][0]["text"]]
    assert generated and generated[0]["logprobs"]["text_offset"][0] == len(TEXT)


def test_scoring_beside_a_running_generation(server):
    """A scored prompt joins while a stream decodes: both finish, the stream unharmed."""
    result = {}

    def stream():
        r = server.post("/v1/completions", {"model": SMOL, "prompt": "List the planets:", "max_tokens": 60,
                                            "temperature": 0})
        result["stream"] = r

    t = threading.Thread(target=stream)
    t.start()
    scored = score(server, " ".join(["The quick brown fox jumps over the lazy dog."] * 20))
    t.join(120)
    assert len(scored["choices"][0]["logprobs"]["tokens"]) > 150
    assert result["stream"].status_code == 200
    assert result["stream"].json()["usage"]["completion_tokens"] > 0


def test_best_of_returns_the_candidates_most_likely_per_token(client):
    """`best_of: 4, n: 2` samples four candidates and returns two, best first by log probability per
    token; usage counts all four. (Which four is not compared with an `n: 4` run: the decode batch's
    composition may differ between runs, and with it the float noise a sampled token can hinge on.)"""
    args = dict(model=SMOL, prompt="My favourite animal is", max_tokens=12, temperature=1.0, seed=11)
    two = client.completions.create(best_of=4, n=2, logprobs=1, **args)
    assert [c.index for c in two.choices] == [0, 1]
    means = [sum(c.logprobs.token_logprobs) / len(c.logprobs.token_logprobs) for c in two.choices]
    assert means[0] >= means[1], means
    returned = sum(len(c.logprobs.tokens) for c in two.choices)
    assert two.usage.completion_tokens >= returned + 2, (two.usage, returned)
    one = client.completions.create(best_of=3, **args)
    assert len(one.choices) == 1 and one.choices[0].logprobs is None and one.choices[0].text
