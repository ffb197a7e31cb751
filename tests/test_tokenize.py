"""`/tokenize` and `/detokenize` end to end (vLLM's shapes): the counts are the ones the
generation endpoints report in `usage`, for a raw prompt (BOS included, also Gemma's, which its
tokenizer does not add itself) and for a chat conversation rendered by the model's template."""
from __future__ import annotations

import pytest

from test_chat import CHAT, QUESTION

GEMMA = "gemma-3-270m"


def tokenize(server, **body):
    r = server.post("/tokenize", body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("model", [CHAT, GEMMA])
def test_a_prompts_count_is_what_completions_uses(server, model):
    prompt = "The capital of France is"
    counted = tokenize(server, model=model, prompt=prompt)
    usage = server.post("/v1/completions", {"model": model, "prompt": prompt, "max_tokens": 1}).json()["usage"]
    assert counted["count"] == len(counted["tokens"]) == usage["prompt_tokens"]
    assert counted["max_model_len"] > 1000


def test_a_conversations_count_is_what_chat_uses(server):
    counted = tokenize(server, model=CHAT, messages=QUESTION)
    usage = server.post("/v1/chat/completions", {"model": CHAT, "messages": QUESTION, "max_tokens": 1}).json()
    assert counted["count"] == usage["usage"]["prompt_tokens"]


def test_tokens_round_trip(server):
    text = "Héllo, wörld — 你好 😀"
    ids = tokenize(server, model=CHAT, prompt=text, add_special_tokens=False)["tokens"]
    r = server.post("/detokenize", {"model": CHAT, "tokens": ids})
    assert r.status_code == 200 and r.json() == {"prompt": text}
    bad = server.post("/detokenize", {"model": CHAT, "tokens": [-3]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"


def test_the_default_config_serves_them_under_v1_and_at_the_root(default_server):
    """`just run`'s config sends /v1 and the root paths vLLM serves (/tokenize, /detokenize,
    /rerank, /score) and Cohere's /v2/rerank to the router; / stays the console and the
    rest of /v2 the Open Inference Protocol."""
    for path in ("/v1/tokenize", "/tokenize"):
        r = default_server.post(path, {"model": CHAT, "prompt": "Hello"})
        assert r.status_code == 200 and r.json()["count"] >= 1, r.text
    r = default_server.post("/detokenize", {"model": CHAT, "tokens": r.json()["tokens"]})
    assert r.status_code == 200 and r.json()["prompt"].endswith("Hello"), r.text
    rerank = {"model": "all-MiniLM-L6-v2", "query": "capital of France",
              "documents": ["Bananas are yellow.", "Paris is the capital of France."]}
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        r = default_server.post(path, rerank)
        assert r.status_code == 200, (path, r.text)
        assert r.json()["results"][0]["index"] == 1
    r = default_server.post("/score", {"model": "all-MiniLM-L6-v2", "text_1": "a", "text_2": ["a", "b"]})
    assert r.status_code == 200 and r.json()["data"][0]["score"] == 1.0, r.text
    assert default_server.get("/").headers["content-type"].startswith("text/html")
    assert default_server.get("/v2").json()["name"] == "nnhost"
