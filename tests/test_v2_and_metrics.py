"""nnhost's own Open Inference Protocol (/v2) endpoints, /metrics and /status."""
from __future__ import annotations

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tokenizers import Tokenizer

from conftest import MINILM
from test_embeddings import MODEL, SENTENCES, embed, vectors


def tokenized(text: str):
    tok = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    ids = np.array([tok.encode(text).ids], dtype=np.int64)
    return ids, np.ones_like(ids), np.zeros_like(ids)


def mean_pool(hidden: np.ndarray) -> np.ndarray:
    v = hidden[0].mean(axis=0)
    return v / np.linalg.norm(v)


def test_v2_health_and_metadata(server):
    assert server.get("/v2/health/live").status_code == 200
    assert server.get("/v2/health/ready").status_code == 200
    assert server.get(f"/v2/models/{MODEL}/ready").status_code == 200
    meta = server.get(f"/v2/models/{MODEL}").json()
    assert meta["name"] == MODEL
    assert {i["name"] for i in meta["inputs"]} == {"input_ids", "attention_mask", "token_type_ids"}
    assert meta["inputs"][0]["datatype"] == "INT64"
    assert meta["outputs"][0]["name"] == "last_hidden_state"
    r = server.get("/v2/models/nope")
    assert r.status_code == 404 and isinstance(r.json()["error"], str)


def test_v2_json_infer_matches_the_openai_endpoint(server):
    ids, mask, types = tokenized(SENTENCES[0])
    body = {"inputs": [
        {"name": "input_ids", "shape": list(ids.shape), "datatype": "INT64", "data": ids.flatten().tolist()},
        {"name": "attention_mask", "shape": list(ids.shape), "datatype": "INT64", "data": mask.flatten().tolist()},
        {"name": "token_type_ids", "shape": list(ids.shape), "datatype": "INT64", "data": types.flatten().tolist()},
    ]}
    r = server.post(f"/v2/models/{MODEL}/infer", body)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    hidden = np.array(out["data"], dtype=np.float32).reshape(out["shape"])
    assert out["datatype"] == "FP32" and out["shape"][2] == 384
    openai = vectors(embed(server, SENTENCES[0]))[0]
    assert np.max(np.abs(mean_pool(hidden) - openai)) <= 1e-5
    assert r.headers["x-nnhost-provider"].startswith("cpu-")


@pytest.mark.parametrize("body,fragment", [
    ({"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1]}]}, "needs 2 values"),
    ({"inputs": [{"name": "input_ids", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}, "must be"),
    ({"inputs": [{"name": "bogus", "shape": [1], "datatype": "INT64", "data": [1]}]}, "bogus"),
    ({"inputs": "nope"}, "malformed"),
])
def test_v2_bad_requests_are_400(server, body, fragment):
    r = server.post(f"/v2/models/{MODEL}/infer", body)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]


def test_tritonclient_against_nnhost(server):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL)
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL
    ids, mask, types = tokenized(SENTENCES[1])
    for binary in (False, True):
        inputs = []
        for name, arr in [("input_ids", ids), ("attention_mask", mask), ("token_type_ids", types)]:
            inp = triton.InferInput(name, list(arr.shape), "INT64")
            inp.set_data_from_numpy(arr, binary_data=binary)
            inputs.append(inp)
        outputs = [triton.InferRequestedOutput("last_hidden_state", binary_data=binary)]
        result = client.infer(MODEL, inputs, outputs=outputs)
        hidden = result.as_numpy("last_hidden_state")
        assert hidden.shape == (1, ids.shape[1], 384)
        openai = vectors(embed(server, SENTENCES[1]))[0]
        assert np.max(np.abs(mean_pool(hidden) - openai)) <= 1e-5, f"binary={binary}"


def test_metrics_parse_and_carry_provider_labels(server):
    embed(server, SENTENCES)
    r = server.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    runs = families["nnhost_provider_runs"]
    providers = {s.labels["provider"] for s in runs.samples}
    assert any(p.startswith("cpu-") for p in providers)
    assert "nnhost_http_requests" in families
    routes = {s.labels["route"] for s in families["nnhost_http_requests"].samples}
    assert "/v1/embeddings" in routes
    tokens = [s for s in families["nnhost_tokens"].samples if s.labels.get("kind") == "prompt"]
    assert tokens and tokens[0].labels["tenant"] == "default" and tokens[0].value > 0
    assert "nnhost_batch_size" in families and "nnhost_queue_depth" in families


def test_status_lists_providers(server):
    embed(server, SENTENCES[0])
    status = server.get("/status").json()
    model = next(m for m in status["models"] if m["id"] == MODEL)
    cpu = model["routing"]["providers"][0]
    assert cpu["kind"] == "cpu" and cpu["name"].startswith("cpu-")
    assert cpu["requests"] >= 1 and cpu["latency_ms"]["p50"] is not None
