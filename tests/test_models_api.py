"""/v1/models, routing errors and the host's own endpoints."""
from __future__ import annotations

from test_embeddings import MODEL, assert_openai_error


def test_health_answers_without_a_guest(server):
    r = server.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_models_list(server):
    body = server.get("/v1/models").json()
    assert body["object"] == "list"
    ids = {m["id"] for m in body["data"]}
    assert {MODEL, "hf-cls"} <= ids
    for m in body["data"]:
        assert m["object"] == "model"
        assert isinstance(m["created"], int) and isinstance(m["owned_by"], str)


def test_model_by_id(server):
    body = server.get(f"/v1/models/{MODEL}").json()
    assert body["id"] == MODEL and body["object"] == "model"
    assert body["nnhost"]["dimensions"] == 384


def test_unknown_model_by_id(server):
    assert_openai_error(server.get("/v1/models/nope"), 404, code="model_not_found")


def test_unknown_route_is_404(server):
    assert_openai_error(server.get("/v1/nothing-here"), 404)
    assert_openai_error(server.post("/v1/embeddings/extra", {}), 404)


def test_wrong_method_is_405(server):
    r = server.get("/v1/embeddings")
    assert_openai_error(r, 405)


def test_default_config_serves_minilm(default_server):
    """`just run` serves the embedded default config: the model is all-MiniLM-L6-v2."""
    ids = [m["id"] for m in default_server.get("/v1/models").json()["data"]]
    assert "all-MiniLM-L6-v2" in ids
    r = default_server.post("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "hello"})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384
