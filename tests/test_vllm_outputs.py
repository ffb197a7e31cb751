"""vLLM's output extensions end to end: `prompt_logprobs` (every prompt token's log
probability, its rank in the whole vocabulary and its place's most likely tokens),
`return_token_ids` (the prompt's and the answer's token ids, streamed and not) and
`stream_options.continuous_usage_stats` (every chunk's usage so far), also through the
`openai` SDK's `extra_body`, as RL and evaluation tools read them."""
from __future__ import annotations

import json

import openai
import pytest

from test_embeddings import assert_openai_error

CHAT = "smollm2-135m-instruct"
BASE = "gemma-3-270m"
QUESTION = [{"role": "user", "content": "Name the capital of France."}]


def post(server, path, body):
    r = server.post(path, body)
    assert r.status_code == 200, r.text
    return r.json()


def events(server, path, body):
    r = server.post(path, {**body, "stream": True}, stream=True)
    assert r.status_code == 200, r.text
    lines = [l[len("data: "):] for l in r.iter_lines(decode_unicode=True) if l.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(l) for l in lines[:-1]]


def check_prompt_logprobs(scored: list, prompt_ids: list[int], k: int) -> None:
    """vLLM's shape: null for the first token, then the token's own entry (its
    rank in the vocabulary) and the `k` most likely tokens (ranks 1..k)."""
    assert len(scored) == len(prompt_ids) and scored[0] is None
    for token, entry in zip(prompt_ids[1:], scored[1:]):
        own = entry[str(token)]
        assert own["rank"] >= 1 and own["logprob"] <= 0 and isinstance(own["decoded_token"], str)
        others = sorted((e for t, e in entry.items() if t != str(token)), key=lambda e: e["rank"])
        if own["rank"] <= k:
            assert len(entry) == k
        else:
            assert len(entry) == k + 1
            # Tokens the model found likelier are ranked before it.
            assert all(e["logprob"] >= own["logprob"] for e in others)
        ranks = sorted(e["rank"] for e in entry.values() if e is not own or own["rank"] <= k)
        assert ranks == list(range(1, k + 1))
        likeliest = max(entry.values(), key=lambda e: e["logprob"])
        assert likeliest["rank"] == 1


def test_chat_prompt_logprobs_score_the_rendered_prompt(server):
    body = post(server, "/v1/chat/completions", {
        "model": CHAT, "messages": QUESTION, "temperature": 0, "max_tokens": 4,
        "prompt_logprobs": 3, "return_token_ids": True})
    ids = body["prompt_token_ids"]
    assert len(ids) == body["usage"]["prompt_tokens"]
    check_prompt_logprobs(body["prompt_logprobs"], ids, 3)
    # The same numbers as completions' `echo` scoring of the same ids.
    echo = post(server, "/v1/completions", {
        "model": CHAT, "prompt": ids, "echo": True, "logprobs": 1, "max_tokens": 0})
    legacy = echo["choices"][0]["logprobs"]["token_logprobs"]
    ours = [None] + [e[str(t)]["logprob"] for t, e in zip(ids[1:], body["prompt_logprobs"][1:])]
    assert legacy[0] is None
    assert all(abs(a - b) < 1e-4 for a, b in zip(legacy[1:], ours[1:]))


def test_the_token_greedy_decoding_picks_ranks_first(server):
    prompt = "The capital of France is"
    greedy = post(server, "/v1/completions", {
        "model": BASE, "prompt": prompt, "max_tokens": 1, "temperature": 0,
        "return_token_ids": True})["choices"][0]
    ids = greedy["prompt_token_ids"] + greedy["token_ids"]
    body = post(server, "/v1/completions", {
        "model": BASE, "prompt": ids, "max_tokens": 1, "prompt_logprobs": 0})
    last = body["choices"][0]["prompt_logprobs"][-1]
    assert list(last) == [str(ids[-1])]
    assert last[str(ids[-1])]["rank"] == 1
    assert last[str(ids[-1])]["decoded_token"] == greedy["text"]
    # An unlikely word ranks far down the vocabulary.
    body = post(server, "/v1/completions", {
        "model": BASE, "prompt": prompt + " Tuesday", "max_tokens": 1,
        "prompt_logprobs": 0, "return_token_ids": True})
    choice = body["choices"][0]
    assert choice["prompt_logprobs"][-1][str(choice["prompt_token_ids"][-1])]["rank"] > 20


def test_completions_give_every_choice_the_prompt_fields(server):
    body = post(server, "/v1/completions", {
        "model": BASE, "prompt": ["The capital of France is", "One, two,"], "max_tokens": 3,
        "n": 2, "temperature": 1, "seed": 7, "prompt_logprobs": 1, "return_token_ids": True})
    tokenized = [server.post("/v1/tokenize", {"model": BASE, "prompt": p}).json()["tokens"]
                 for p in ("The capital of France is", "One, two,")]
    for choice in body["choices"]:
        ids = tokenized[choice["index"] // 2]
        assert choice["prompt_token_ids"] == ids
        check_prompt_logprobs(choice["prompt_logprobs"], ids, 1)
        text = server.post("/v1/detokenize", {"model": BASE, "tokens": choice["token_ids"]}).json()["prompt"]
        assert text == choice["text"]
    assert body["usage"]["completion_tokens"] == sum(len(c["token_ids"]) for c in body["choices"])


def test_streamed_token_ids_add_up_to_the_whole_answers(server):
    body = {"model": CHAT, "messages": QUESTION, "temperature": 0, "max_tokens": 12,
            "return_token_ids": True}
    whole = post(server, "/v1/chat/completions", body)
    chunks = events(server, "/v1/chat/completions", body)
    assert chunks[0]["prompt_token_ids"] == whole["prompt_token_ids"]
    assert all("prompt_token_ids" not in c for c in chunks[1:])
    ids = [t for c in chunks for ch in c["choices"] for t in ch.get("token_ids") or []]
    assert ids == whole["choices"][0]["token_ids"]
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert text == whole["choices"][0]["message"]["content"]

    body = {"model": BASE, "prompt": "The capital of France is", "temperature": 0,
            "max_tokens": 8, "return_token_ids": True}
    whole = post(server, "/v1/completions", body)["choices"][0]
    chunks = events(server, "/v1/completions", body)
    assert chunks[0]["choices"][0]["prompt_token_ids"] == whole["prompt_token_ids"]
    assert [t for c in chunks for t in c["choices"][0]["token_ids"]] == whole["token_ids"]


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": CHAT, "messages": QUESTION}),
    ("/v1/completions", {"model": BASE, "prompt": "Once upon a time", "n": 2}),
])
def test_continuous_usage_counts_as_the_answer_grows(server, path, body):
    chunks = events(server, path, {**body, "max_tokens": 10, "temperature": 0,
                                   "stream_options": {"include_usage": True,
                                                      "continuous_usage_stats": True}})
    final = chunks[-1]
    assert final["choices"] == []
    so_far = [c["usage"] for c in chunks[:-1]]
    assert all(u["prompt_tokens"] == final["usage"]["prompt_tokens"] for u in so_far)
    counts = [u["completion_tokens"] for u in so_far]
    assert counts == sorted(counts) and counts[-1] == final["usage"]["completion_tokens"]
    assert all(u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] for u in so_far)
    assert len(set(counts)) > 3


def test_prompt_logprobs_with_a_stream_or_out_of_range_is_400(server):
    for extra in ({"prompt_logprobs": 1, "stream": True}, {"prompt_logprobs": 50},
                  {"prompt_logprobs": -1}):
        r = server.post("/v1/chat/completions", {"model": CHAT, "messages": QUESTION, **extra})
        assert_openai_error(r, 400, param="prompt_logprobs")


def test_the_sdk_reads_them_from_extra_body(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    resp = client.chat.completions.create(
        model=CHAT, messages=QUESTION, temperature=0, max_tokens=8,
        extra_body={"prompt_logprobs": 2, "return_token_ids": True})
    extra = resp.model_extra
    check_prompt_logprobs(extra["prompt_logprobs"], extra["prompt_token_ids"], 2)
    assert resp.choices[0].model_extra["token_ids"]
    stream = client.completions.create(
        model=BASE, prompt="One, two,", max_tokens=6, temperature=0, stream=True,
        extra_body={"stream_options": {
            "include_usage": True, "continuous_usage_stats": True}})
    usages = [c.usage.completion_tokens for c in stream if c.usage is not None]
    assert usages[-1] == 6 and len(usages) >= 6


def test_tokens_as_ids_name_logprob_tokens_by_the_ids_returned(server):
    body = post(server, "/v1/chat/completions", {
        "model": CHAT, "messages": QUESTION, "temperature": 0, "max_tokens": 8, "logprobs": True,
        "top_logprobs": 2, "return_tokens_as_token_ids": True, "return_token_ids": True})
    choice = body["choices"][0]
    named = [entry["token"] for entry in choice["logprobs"]["content"]]
    assert named == [f"token_id:{t}" for t in choice["token_ids"]]
    assert all(alt["token"].startswith("token_id:") for e in choice["logprobs"]["content"]
               for alt in e["top_logprobs"])
    assert choice["message"]["content"] == "The capital of France is Paris."
