"""Embedding lanes (`[models.cpu] lanes`): with two lanes, a queue holding enough inputs
splits them into batches that run side by side, one per one-thread session. Each input
must get the vector it gets from the one-batch-at-a-time model."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import MINILM, ROUTER_WASM, Server

CONFIG = """
[[models]]
name = "minilm-lanes"
path = "{minilm}"
cpu = {{ lanes = 2 }}

[[models]]
name = "minilm"
path = "{minilm}"

[[tenants]]
name = "default"
public = true
component = "{router}"
"""

TEXTS = [f"Sentence number {i} is about {topic}." for i, topic in
         enumerate(["the sea", "a red car", "quantum physics", "baking bread", "jazz music", "the moon",
                    "tax law", "football", "a sleepy cat", "mountain hiking", "old maps", "green tea"] * 4)]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    srv = Server(CONFIG.format(minilm=MINILM, router=ROUTER_WASM), tmp_path_factory.mktemp("lanes"),
                 env={"RUST_LOG": "info,nnhost::scheduler::embed_queue=debug"})
    yield srv
    srv.stop()


def vectors(host, model: str, inputs) -> np.ndarray:
    r = host.post("/v1/embeddings", {"model": model, "input": inputs})
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def lane_batches(host, more_than: dict[str, int] | None = None) -> dict[str, int]:
    """Batches logged per lane; with `more_than`, waits for more on each lane (a batch is
    logged just after its answer)."""
    def count(log):
        return {lane: log.count(f"placement=Lane({lane})") for lane in "01"}
    if more_than is None:
        return count(host.log_path.read_text(errors="replace"))
    return count(host.log_once(lambda log: all(n > more_than[lane] for lane, n in count(log).items())))


def test_many_inputs_split_across_lanes_with_the_same_vectors(host):
    reference = vectors(host, "minilm", TEXTS)
    before = lane_batches(host)
    # 48 inputs queued at once on an idle model: two batches of 24, side by side.
    split = vectors(host, "minilm-lanes", TEXTS)
    after = lane_batches(host, more_than=before)
    assert after["0"] > before["0"] and after["1"] > before["1"], (before, after)
    assert split.shape == reference.shape
    assert np.abs(split - reference).max() < 1e-4


def test_concurrent_requests_on_lanes_each_get_their_own_vectors(host):
    reference = vectors(host, "minilm", TEXTS)
    results: dict[int, np.ndarray] = {}
    errors: list[str] = []

    def client(i: int) -> None:
        try:
            results[i] = vectors(host, "minilm-lanes", TEXTS[i])[0]
        except AssertionError as e:  # collected: a thread's assert would be lost
            errors.append(str(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(TEXTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert sorted(results) == list(range(len(TEXTS)))
    got = np.stack([results[i] for i in range(len(TEXTS))])
    assert np.abs(got - reference).max() < 1e-4


def test_a_lone_text_runs_on_all_cores(host):
    log_before = host.log_path.read_text(errors="replace").count("placement=Whole")
    vectors(host, "minilm-lanes", "one text alone")
    log = host.log_once(lambda log: log.count("placement=Whole") > log_before)
    assert log.count("placement=Whole") > log_before
