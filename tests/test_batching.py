"""Continuous batching of generations, end to end.

Rows decoded together must give each generation exactly the text it gets alone; and a
place in the batch goes to the tenant with the fewest generations running, so one
tenant's queue cannot hold another tenant's single request back.

Both cache layouts are checked: the fused graphs (GroupQueryAttention, ragged
rows, KV written in place — per-row exact) and the plain fp32 graph (left-padded rows,
concatenated cache). Not the plain int4 graph: it quantizes activations to int8 per block
(accuracy level 4), so the 1e-7 summation-order difference padding makes can cross a
rounding step and flip a near-tie; that is numerics, not batching."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from conftest import GEMMA, ROUTER_WASM, SMOLLM, Server, assert_same_or_near_tie

CONFIG = """
# The tenants have keys: /metrics is the operator's unless opened for a scraper.
[server]
public_metrics = true

[[models]]
name = "smollm2-fp32"
path = "{smollm}"
onnx = "onnx/model_fp32.onnx"

[[models]]
name = "smollm2-fused"
path = "{smollm}"
onnx = "onnx/model_fused.onnx"

[[models]]
name = "gemma-fused"
path = "{gemma}"
onnx = "onnx/model_fused.onnx"

[[models]]
name = "smollm2-fp32-whole-prefill"
path = "{smollm}"
onnx = "onnx/model_fp32.onnx"
batching = {{ prefill_chunk_tokens = 0 }}

[[models]]
name = "smollm2-one-at-a-time"
path = "{smollm}"
batching = {{ max_batch_sequences = 1 }}

[[tenants]]
name = "flood"
api_keys = ["sk-flood"]
component = "{router}"

[[tenants]]
name = "quiet"
api_keys = ["sk-quiet"]
component = "{router}"

[[tenants]]
name = "frugal"
api_keys = ["sk-frugal"]
component = "{router}"
limits = {{ cpu_time_ms = 100, request_timeout_ms = 120000 }}
"""

PROMPTS = [
    "The capital of France is",
    "Here is a long list of the planets of the solar system, in order from the sun: Mercury,",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village,",
]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    srv = Server(CONFIG.format(smollm=SMOLLM, gemma=GEMMA, router=ROUTER_WASM),
                 tmp_path_factory.mktemp("nnhost-batching"))
    yield srv
    srv.stop()


def complete(host, model, prompt, key="sk-quiet", max_tokens=32):
    return complete_choice(host, model, prompt, key, max_tokens)["text"]


def complete_choice(host, model, prompt, key="sk-quiet", max_tokens=32):
    """The greedy choice with its tokens' log probabilities (top 2)."""
    r = requests.post(host.url + "/v1/completions", timeout=300, headers={"authorization": f"Bearer {key}"},
                      json={"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                            "logprobs": 5})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def assert_decoded_alike(model, alone, together, what):
    """fp32 graphs decode a row the same in any batch; quantized ones may part at a near-tie."""
    if model.endswith("fp32"):
        assert [c["text"] for c in together] == [c["text"] for c in alone], what
    for a, t in zip(alone, together):
        assert_same_or_near_tie(a, t, f"{model}, {what}")


@pytest.mark.parametrize("model", ["smollm2-fp32", "smollm2-fused", "gemma-fused"])
def test_rows_joining_a_running_batch_decode_as_they_do_alone(host, model):
    alone = [complete_choice(host, model, p) for p in PROMPTS]
    for stagger in (0.2, 0.0):
        # 0.2 s apart: later prompts join a batch that is already decoding; all at once:
        # the prompts are prefilled together (padded to the longest), then decoded together.
        together = [None] * len(PROMPTS)

        def run(i):
            time.sleep(stagger * i)
            together[i] = complete_choice(host, model, PROMPTS[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert_decoded_alike(model, alone, together, f"stagger {stagger} s")
    steps = [line for line in host.get("/metrics").text.splitlines()
             if line.startswith("nnhost_batch_size_sum") and f'model="{model}"' in line]
    counts = [line for line in host.get("/metrics").text.splitlines()
              if line.startswith("nnhost_batch_size_count") and f'model="{model}"' in line]
    rows, runs = float(steps[0].rsplit(" ", 1)[1]), float(counts[0].rsplit(" ", 1)[1])
    assert rows / runs > 1.2, f"decode steps averaged {rows / runs:.2f} rows: the generations were not batched"


def test_a_free_place_goes_to_the_tenant_with_fewest_running(host):
    """One place in the batch: the flood's 3 queued generations wait behind the running
    one; the quiet tenant's single request arriving last is served next, not last."""
    model = "smollm2-one-at-a-time"
    finished: list[str] = []
    lock = threading.Lock()

    def run(name, key):
        complete(host, model, "Once upon a time, in a small village,", key=key, max_tokens=120)
        with lock:
            finished.append(name)

    threads = [threading.Thread(target=run, args=(f"flood-{i}", "sk-flood")) for i in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    time.sleep(0.1)   # flood-0 runs (~1 s), flood-1..3 wait
    quiet = threading.Thread(target=run, args=("quiet", "sk-quiet"))
    quiet.start()
    for t in threads + [quiet]:
        t.join()
    assert finished.index("quiet") <= 1, finished


def test_in_place_cache_grows_past_its_first_capacity(host):
    """The fused graph writes the KV cache into buffers with room for 256 positions at
    first; a 300-token generation outgrows them (and a row joins meanwhile)."""
    model = "smollm2-fused"
    long_prompt, short_prompt = "Once upon a time, in a small village,", "The capital of France is"
    alone = complete_choice(host, model, long_prompt, max_tokens=300)
    short_alone = complete_choice(host, model, short_prompt)
    result = {}
    t = threading.Thread(target=lambda: result.update(
        long=complete_choice(host, model, long_prompt, max_tokens=300)))
    t.start()
    time.sleep(1.0)
    result["short"] = complete_choice(host, model, short_prompt)
    t.join()
    assert len(result["long"]["logprobs"]["tokens"]) == 300
    assert_decoded_alike(model, [alone, short_alone], [result["long"], result["short"]], "a row joining")


STORY = ("In the year 1852, the town of Millbrook was a quiet place where farmers brought their "
         "grain to the mill by the river. ")


def test_a_long_prompt_prefilled_in_chunks_reads_as_in_one_piece(host):
    """Prompts over 128 tokens are prefilled 128 at a time, each chunk attending to the
    cache of the ones before: the same text as one prefill (fp32), and a model that
    saw the whole prompt continues its repetition (both cache layouts)."""
    prompt = STORY * 30   # ~900 tokens: 8 chunks
    chunked = complete(host, "smollm2-fp32", prompt, max_tokens=24)
    whole = complete(host, "smollm2-fp32-whole-prefill", prompt, max_tokens=24)
    assert chunked == whole
    for model in ("smollm2-fused", "gemma-fused", "smollm2-fp32"):
        text = complete(host, model, prompt, max_tokens=16).strip()
        assert len(text) >= 20 and text[:40] in STORY * 2, (model, text)


def test_a_long_prompt_joining_does_not_stall_running_streams(host):
    """While a ~1400-token prompt is prefilled, a running stream keeps getting tokens:
    its longest gap is a chunk's worth, not the whole prefill (which held it ~2 s)."""
    model = "smollm2-fused"
    gaps: list[float] = []
    long_took: list[float] = []

    def stream():
        r = requests.post(host.url + "/v1/completions", stream=True, timeout=300,
                          headers={"authorization": "Bearer sk-quiet"},
                          json={"model": model, "prompt": "Once upon a time, in a small village,",
                                "max_tokens": 400, "temperature": 0, "stream": True})
        assert r.status_code == 200, r.text
        last = None
        for line in r.iter_lines():
            if line.startswith(b"data:"):
                now = time.monotonic()
                if last is not None:
                    gaps.append(now - last)
                last = now

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.5)
    started = time.monotonic()
    complete(host, model, STORY * 45, max_tokens=1)
    long_took.append(time.monotonic() - started)
    t.join()
    assert len(gaps) > 100
    assert max(gaps) < 0.4 * long_took[0], (max(gaps), long_took[0])


def test_waiting_for_tokens_is_not_guest_cpu_time(host):
    """A guest streaming a long generation spends its time waiting in the host, not
    computing: 300 tokens must not use up a 100 ms CPU budget (20 epoch ticks)."""
    r = requests.post(host.url + "/v1/chat/completions", timeout=300, stream=True,
                      headers={"authorization": "Bearer sk-frugal"},
                      json={"model": "smollm2-one-at-a-time", "stream": True, "max_tokens": 300,
                            "temperature": 0.8, "seed": 1,
                            "messages": [{"role": "user", "content": "Write a very long story about a dragon."}]})
    assert r.status_code == 200, r.text
    events = [line for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]", events[-3:]
    assert not any('"error"' in e for e in events), [e for e in events if '"error"' in e][:1]
