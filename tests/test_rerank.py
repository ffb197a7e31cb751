"""`/v1/rerank` and `/v1/score` end to end on MiniLM: relevance as the cosine similarity of the
embeddings `/v1/embeddings` returns, long documents refused or truncated, errors."""
from __future__ import annotations

import math

from test_embeddings import MODEL, assert_openai_error

QUERY = "What is the capital of France?"
DOCS = ["Bananas are rich in potassium.", "Paris is the capital and largest city of France.",
        "The stock market fell on Tuesday."]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def embeddings(server, texts):
    r = server.post("/v1/embeddings", {"model": MODEL, "input": texts})
    assert r.status_code == 200, r.text
    return [d["embedding"] for d in r.json()["data"]]


def test_rerank_orders_by_the_embeddings_cosine(server):
    r = server.post("/v1/rerank", {"model": MODEL, "query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["index"] for x in body["results"]][0] == 1
    vectors = embeddings(server, [QUERY] + DOCS)
    for x in body["results"]:
        assert abs(x["relevance_score"] - cosine(vectors[0], vectors[1 + x["index"]])) < 1e-4
        assert x["document"]["text"] == DOCS[x["index"]]
    scores = [x["relevance_score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert body["usage"]["total_tokens"] > 0
    top = server.post("/v1/rerank", {"model": MODEL, "query": QUERY, "documents": [{"text": d} for d in DOCS],
                                     "top_n": 1, "return_documents": False}).json()
    assert [x["index"] for x in top["results"]] == [1] and "document" not in top["results"][0]


def test_score_one_against_many_and_pairwise(server):
    many = server.post("/v1/score", {"model": MODEL, "text_1": QUERY, "text_2": DOCS}).json()
    vectors = embeddings(server, [QUERY] + DOCS)
    assert [round(d["score"], 4) for d in many["data"]] == [round(cosine(vectors[0], v), 4) for v in vectors[1:]]
    pairs = server.post("/v1/score", {"model": MODEL, "text_1": DOCS[:2], "text_2": DOCS[:2]}).json()
    assert all(abs(d["score"] - 1) < 1e-4 for d in pairs["data"])


def test_long_documents_are_refused_or_truncated(server):
    long_doc = "Paris is lovely in the spring. " * 200
    r = server.post("/v1/rerank", {"model": MODEL, "query": QUERY, "documents": [long_doc]})
    assert_openai_error(r, 400)
    r = server.post("/v1/rerank", {"model": MODEL, "query": QUERY, "documents": [long_doc], "truncate": True})
    assert r.status_code == 200, r.text
    assert 0 < r.json()["results"][0]["relevance_score"] <= 1


def test_bad_requests_name_their_field(server):
    for body, param in [({"query": QUERY}, "documents"), ({"query": QUERY, "documents": []}, "documents"),
                        ({"documents": DOCS}, "query"), ({"query": QUERY, "documents": DOCS, "top_n": 0}, "top_n")]:
        err = assert_openai_error(server.post("/v1/rerank", {"model": MODEL, **body}), 400)
        assert err["param"] == param, err
    err = assert_openai_error(server.post("/v1/rerank", {"model": "smollm2-135m-instruct", "query": "q",
                                                         "documents": ["d"]}), 400)
    assert err["param"] == "model"
