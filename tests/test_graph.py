"""Bare ONNX graphs end to end: a model configured as `kind = "graph"` reaches guests
through the WASI-NN style `graph` interface (the `raw-graph` example guest builds
tensors, calls compute and pools in wasm) and clients through /v2; the example
guests run as tenants on the real host."""
from __future__ import annotations

import json
import math
import time

import pytest
import requests

from conftest import MINILM, ROOT, ROUTER_WASM, Server
from test_embeddings import assert_openai_error

GUESTS = ROOT / "guests" / "target" / "wasm32-wasip2" / "release"
RAW_GRAPH = GUESTS / "raw_graph.wasm"
SEMANTIC_SEARCH = GUESTS / "semantic_search.wasm"

CONFIG = """
[[models]]
name = "all-MiniLM-L6-v2"
path = "{minilm}"

# The same network as a bare graph: the folder's tokenizer.json comes along.
[[models]]
name = "minilm-graph"
path = "{minilm}"
kind = "graph"

# One run of this graph may take at most 4 rows and 64 tokens.
[[models]]
name = "minilm-small-runs"
path = "{minilm}"
kind = "graph"
batching = {{ max_batch_inputs = 4, max_batch_tokens = 64 }}

# A path to the .onnx file itself is a graph without a tokenizer.
[[models]]
name = "minilm-file"
path = "{minilm}/onnx/model.onnx"

[[tenants]]
name = "default"
public = true
component = "{router}"

[[tenants]]
name = "graphs"
api_keys = ["sk-graph"]
component = "{raw_graph}"
models = ["minilm-graph", "minilm-file"]

[[tenants]]
name = "embed-only"
api_keys = ["sk-embed-only"]
component = "{raw_graph}"
models = ["all-MiniLM-L6-v2"]

[[tenants]]
name = "search"
api_keys = ["sk-search"]
component = "{search}"
models = ["all-MiniLM-L6-v2"]
"""

TEXT = "WebAssembly components run inference through the host."


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    for wasm in (RAW_GRAPH, SEMANTIC_SEARCH):
        assert wasm.exists(), f"{wasm} is missing: build the guests (just guests)"
    work = tmp_path_factory.mktemp("graph")
    srv = Server(CONFIG.format(minilm=MINILM, router=ROUTER_WASM, raw_graph=RAW_GRAPH,
                               search=SEMANTIC_SEARCH), work)
    yield srv
    srv.stop()


def as_tenant(host, key, method, path, **kw):
    return host.session.request(method, host.url + path, timeout=60,
                                headers={"authorization": f"Bearer {key}"}, **kw)


def test_a_graph_model_is_listed_as_a_raw_graph(host):
    models = {m["id"]: m for m in host.get("/v1/models").json()["data"]}
    graph = models["minilm-graph"]
    assert graph["nnhost"]["kind"] == "raw_graph", graph
    metadata = graph["nnhost"]["metadata"]
    assert metadata["tokenizer"] == "true" and metadata["onnx"] == "model.onnx", metadata
    assert "input_ids:INT64[-1, -1]" in metadata["inputs"], metadata
    assert "last_hidden_state:FP32" in metadata["outputs"], metadata
    assert models["minilm-file"]["nnhost"]["metadata"]["tokenizer"] == "false"
    # It is not an embedding model: OpenAI routes say so instead of guessing a pooling.
    r = host.post("/v1/embeddings", json={"model": "minilm-graph", "input": "hi"})
    assert_openai_error(r, 400, param="model")
    # /status shows its provider router as it does an embedding model's.
    status = {m["id"]: m for m in host.get("/status").json()["models"]}
    assert status["minilm-graph"]["kind"] == "raw_graph"
    assert status["minilm-graph"]["routing"]["providers"][0]["name"].startswith("cpu-"), status


def test_a_guest_pools_the_raw_graph_like_the_embedding_model(host):
    """The guest tokenizes with the host, runs the graph through `compute` and
    mean-pools in wasm; the host's embedding path pools the same graph natively."""
    r = as_tenant(host, "sk-graph", "POST", "/embed", json={"model": "minilm-graph", "input": TEXT})
    assert r.status_code == 200, r.text
    guest = r.json()
    reference = host.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": TEXT}).json()
    native = reference["data"][0]["embedding"]
    assert guest["tokens"] == reference["usage"]["prompt_tokens"]
    assert len(guest["embedding"]) == len(native) == 384
    assert max(abs(a - b) for a, b in zip(guest["embedding"], native)) < 1e-4
    assert abs(math.fsum(x * x for x in guest["embedding"]) - 1) < 1e-4


def test_a_guest_describes_and_computes_raw_tensors(host):
    r = as_tenant(host, "sk-graph", "GET", "/graphs/minilm-file")
    assert r.status_code == 200, r.text
    graph = r.json()
    assert {i["name"] for i in graph["inputs"]} == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(i["datatype"] == "INT64" and i["shape"] == [-1, -1] for i in graph["inputs"])

    ids = [101, 7592, 2088, 102]  # [CLS] hello world [SEP]
    def tensor(name, data, datatype="INT64", shape=None):
        return {"name": name, "datatype": datatype, "shape": shape or [1, len(data)], "data": data}
    inputs = [tensor("input_ids", ids), tensor("attention_mask", [1] * 4), tensor("token_type_ids", [0] * 4)]
    r = as_tenant(host, "sk-graph", "POST", "/compute", json={"model": "minilm-file", "inputs": inputs})
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    states = out["last_hidden_state"]
    assert states["datatype"] == "FP32" and states["shape"] == [1, 4, 384]
    assert len(states["data"]) == 4 * 384 and all(math.isfinite(x) for x in states["data"])

    # The same inputs through /v2 (served by the host, no guest) give the same states.
    v2 = host.post("/v2/models/minilm-file/infer", json={"inputs": inputs})
    assert v2.status_code == 200, v2.text
    assert v2.headers["x-nnhost-provider"].startswith("cpu-")
    v2_states = next(o for o in v2.json()["outputs"] if o["name"] == "last_hidden_state")
    assert max(abs(a - b) for a, b in zip(v2_states["data"], states["data"])) < 1e-5


@pytest.mark.parametrize("inputs,says", [
    ([{"name": "input_idz", "datatype": "INT64", "shape": [1, 1], "data": [101]}], "no input named"),
    ([{"name": "input_ids", "datatype": "INT64", "shape": [1, 1], "data": [101]}], "missing input"),
    ([{"name": n, "datatype": "INT32", "shape": [1, 1], "data": [1]}
      for n in ("input_ids", "attention_mask", "token_type_ids")], "must be I64"),
    ([{"name": n, "datatype": "INT64", "shape": [2], "data": [1, 1]}
      for n in ("input_ids", "attention_mask", "token_type_ids")], "must have shape"),
    ([{"name": n, "datatype": "INT64", "shape": [1, 1], "data": [1]}
      for n in ("input_ids", "input_ids", "attention_mask", "token_type_ids")], "given twice"),
])
def test_tensors_the_graph_cannot_take_are_the_callers_400(host, inputs, says):
    r = as_tenant(host, "sk-graph", "POST", "/compute", json={"model": "minilm-file", "inputs": inputs})
    assert_openai_error(r, 400, code="invalid_tensor")
    assert says in r.json()["error"]["message"], r.text
    # The host is unharmed: the next compute works.
    ok = as_tenant(host, "sk-graph", "POST", "/embed", json={"model": "minilm-graph", "input": "still here"})
    assert ok.status_code == 200, ok.text


def test_a_token_id_beyond_the_vocabulary_is_a_400_not_a_crash(host):
    inputs = [{"name": n, "datatype": "INT64", "shape": [1, 2], "data": d}
              for n, d in (("input_ids", [101, 10_000_000]), ("attention_mask", [1, 1]), ("token_type_ids", [0, 0]))]
    r = as_tenant(host, "sk-graph", "POST", "/compute", json={"model": "minilm-file", "inputs": inputs})
    assert_openai_error(r, 400, code="invalid_tensor")
    assert host.get("/health").status_code == 200


def test_graph_access_follows_the_tenants_allow_list(host):
    r = as_tenant(host, "sk-embed-only", "GET", "/graphs/minilm-graph")
    assert_openai_error(r, 404, code="model_not_found")
    # A graph without a tokenizer cannot be tokenized through the host.
    r = as_tenant(host, "sk-graph", "POST", "/embed", json={"model": "minilm-file", "input": "hi"})
    assert_openai_error(r, 400, code="unsupported")
    assert "without a tokenizer" in r.json()["error"]["message"]
    # An embedding model's graph is reachable too (same session as its queue).
    r = as_tenant(host, "sk-embed-only", "POST", "/embed", json={"model": "all-MiniLM-L6-v2", "input": TEXT})
    assert r.status_code == 200, r.text


def test_the_semantic_search_example_ranks_the_right_document_first(host):
    r = as_tenant(host, "sk-search", "GET", "/search?q=the+largest+animal+in+the+ocean&k=2")
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 2
    assert "blue whale" in body["results"][0]["text"], body
    assert body["results"][0]["score"] > body["results"][1]["score"]
    r = as_tenant(host, "sk-search", "POST", "/search", json={"query": "", "k": 1})
    assert_openai_error(r, 400, param="q")


def token_inputs(rows: int, length: int) -> list[dict]:
    return [{"name": n, "datatype": "INT64", "shape": [rows, length], "data": [v] * (rows * length)}
            for n, v in (("input_ids", 1000), ("attention_mask", 1), ("token_type_ids", 0))]


@pytest.mark.parametrize("rows,length,says", [(5, 4, "max_batch_inputs"), (4, 17, "max_batch_tokens")])
def test_a_v2_run_larger_than_one_batch_is_a_400(host, rows, length, says):
    """A graph run takes what one batch of the model's queue may hold
    (`batching.max_batch_inputs` rows, `max_batch_tokens` tokens): a run's memory
    grows with its rows and with the square of its length."""
    r = host.post("/v2/models/minilm-small-runs/infer", json={"inputs": token_inputs(rows, length)})
    assert r.status_code == 400, r.text
    assert says in r.json()["error"], r.text
    ok = host.post("/v2/models/minilm-small-runs/infer", json={"inputs": token_inputs(4, 16)})
    assert ok.status_code == 200, ok.text
    models = {m["id"]: m for m in host.get("/v1/models").json()["data"]}
    assert models["minilm-small-runs"]["nnhost"]["max_batch_size"] == 4


def test_an_embedding_models_graph_takes_one_queue_batch_at_most_through_v2(host):
    """At most 64 rows and 16,384 tokens by default: before this limit, a 1.5 MB binary
    request of 128 × 512 tokens ran for 20 s and left ONNX Runtime's arena 5.7 GB
    larger. 64 × 512 tokens fit the rows but not the tokens."""
    started = time.time()
    r = binary_infer(host, "all-MiniLM-L6-v2", 64, 512, timeout=60)
    assert r.status_code == 400 and "max_batch_tokens" in r.json()["error"], r.text
    assert time.time() - started < 5


def binary_infer(host, model: str, rows: int, length: int, timeout: float = 300, key: str | None = None):
    import numpy as np
    ids = np.full((rows, length), 1000, np.int64).tobytes()
    ones, zeros = np.ones((rows, length), np.int64).tobytes(), np.zeros((rows, length), np.int64).tobytes()
    parts = [("input_ids", ids), ("attention_mask", ones), ("token_type_ids", zeros)]
    header = {"inputs": [{"name": n, "datatype": "INT64", "shape": [rows, length],
                          "parameters": {"binary_data_size": len(b)}} for n, b in parts],
              "outputs": [{"name": "last_hidden_state", "parameters": {"binary_data": True}}]}
    head = json.dumps(header).encode()
    headers = {"inference-header-content-length": str(len(head))}
    if key:
        headers["authorization"] = f"Bearer {key}"
    return requests.post(host.url + f"/v2/models/{model}/infer", data=head + b"".join(b for _, b in parts),
                         headers=headers, timeout=timeout)


def test_v2_runs_whose_clients_went_away_while_waiting_never_run(host):
    """Runs asked of a graph directly take turns, one at a time: a caller that gives
    up while in line leaves it, so the graph is not run for nobody. Five clients ask
    for the largest run at once and give up after 0.3 s: the first run is under way
    by then; the four waiting ones never start (the model's router counts runs)."""
    from concurrent.futures import ThreadPoolExecutor

    def runs_done():
        status = {m["id"]: m for m in host.get("/status").json()["models"]}
        return sum(p["requests"] for p in status["minilm-graph"]["routing"]["providers"])

    started = time.time()
    warm = binary_infer(host, "minilm-graph", 64, 256)
    one_run = time.time() - started
    assert warm.status_code == 200, warm.text[:300]
    before = runs_done()

    def impatient(_):
        try:
            binary_infer(host, "minilm-graph", 64, 256, timeout=0.3)
        except requests.exceptions.RequestException:
            pass
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(impatient, range(5)))
    deadline = time.time() + 60
    while runs_done() - before < 1 and time.time() < deadline:
        time.sleep(0.1)
    assert runs_done() - before == 1
    # Had the others stayed in line, the next would end within about one run.
    time.sleep(max(3.0, 2 * one_run))
    assert runs_done() - before == 1


def test_v2_runs_of_two_tenants_take_turns(host):
    """One tenant's burst of direct runs does not hold another tenant's run behind
    all of it: tenants take turns at the graph, and none runs twice in a row while
    another waits. The public tenant sends four large runs at once; while the first
    runs, the "graphs" tenant sends one, which runs next (in order of arrival it
    would run last)."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.time()
    assert binary_infer(host, "minilm-graph", 32, 256).status_code == 200
    one_run = time.time() - started
    finished = []

    def run(who):
        if who == "graphs":
            time.sleep(min(0.3, one_run / 3))
        r = binary_infer(host, "minilm-graph", 32, 256, key="sk-graph" if who == "graphs" else None)
        assert r.status_code == 200, r.text[:300]
        finished.append(who)
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(run, ["public"] * 4 + ["graphs"]))
    assert finished.index("graphs") == 1, (finished, one_run)
