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


def test_a_base_url_without_v1_is_told_so(default_server):
    """The most common client slip, `base_url="http://host:8080"`: the SDK posts to
    /chat/completions, which the default config's console answers with an OpenAI error
    that names the right path, not a page or plain text."""
    import openai

    client = openai.OpenAI(base_url=default_server.url, api_key="unused", max_retries=0, timeout=30)
    try:
        client.chat.completions.create(model="smollm2-135m-instruct",
                                       messages=[{"role": "user", "content": "Hi"}])
        raise AssertionError("expected a 404")
    except openai.NotFoundError as e:
        assert "/v1/chat/completions" in e.message and e.code == "unknown_url", e.body
    err = assert_openai_error(default_server.get("/models"), 404, code="unknown_url")
    assert "GET /v1/models" in err["message"], err
    assert_openai_error(default_server.post("/", {}), 405, code="method_not_allowed")
    assert default_server.get("/").headers["content-type"].startswith("text/html")
