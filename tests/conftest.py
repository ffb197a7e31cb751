"""End-to-end fixtures: start the real `nnhost` release binary on a free port and talk
HTTP to it. `just test` builds the host, the guests and the models first."""
from __future__ import annotations

import json as json_module
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
HOST_BIN = ROOT / "target" / "release" / "nnhost"
MINILM = ROOT / "models" / "prepared" / "all-MiniLM-L6-v2"
SMOLLM = ROOT / "models" / "prepared" / "smollm2-135m-instruct"
GEMMA = ROOT / "models" / "prepared" / "gemma-3-270m"
ROUTER_WASM = ROOT / "guests" / "target" / "wasm32-wasip2" / "release" / "openai_router.wasm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running nnhost process."""

    def __init__(self, config_text: str | None, workdir: Path, extra_args: list[str] | None = None,
                 port: int | None = None, env: dict[str, str] | None = None):
        for path, what in [(HOST_BIN, "the host (just build)"), (ROUTER_WASM, "the guests (just guests)"),
                           (MINILM / "onnx" / "model.onnx", "the models (just models)")]:
            if not path.exists():
                pytest.fail(f"{path} is missing: build {what} first, or run `just test`")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [str(HOST_BIN), "serve", "--listen", f"127.0.0.1:{self.port}"]
        if config_text is not None:
            config = workdir / "nnhost.toml"
            config.write_text(config_text)
            args += ["--config", str(config)]
        args += extra_args or []
        self.log_path = workdir / "nnhost.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        self.session = requests.Session()
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nnhost exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if self.session.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"nnhost did not become healthy:\n{self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def log_once(self, seen, timeout: float = 5.0) -> str:
        """The whole log as soon as `seen(log)` holds (or after `timeout`): the host logs
        some events (a batch, a generation's end) just after the answer has gone out."""
        deadline = time.time() + timeout
        while True:
            log = self.log_path.read_text(errors="replace")
            if seen(log) or time.time() >= deadline:
                return log
            time.sleep(0.02)

    def get(self, path: str, **kw) -> requests.Response:
        return self.session.get(self.url + path, timeout=60, **kw)

    def post(self, path: str, json=None, **kw) -> requests.Response:
        return self.session.post(self.url + path, json=json, timeout=120, **kw)

    def post_then_hang_up(self, path: str, body: dict, after: float) -> None:
        """POSTs `body` on a raw socket and closes the connection `after` seconds later,
        without reading anything: a client that goes away mid-request."""
        data = json_module.dumps(body).encode()
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            s.sendall(b"POST %s HTTP/1.1\r\nHost: nnhost\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % (path.encode(), len(data)) + data)
            time.sleep(after)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def hf_folder_from_minilm(dest: Path, pooling: str) -> Path:
    """A Hugging Face style sentence-transformers folder, as a user would download it
    (e.g. bge-small-en-v1.5: onnx/model.onnx, CLS pooling in 1_Pooling/config.json),
    assembled from the prepared MiniLM files. No nnhost.json: nothing of ours."""
    dest.mkdir(parents=True)
    (dest / "onnx").mkdir()
    for graph_file in (MINILM / "onnx").iterdir():   # the graph and its weights (model.onnx.data)
        os.link(graph_file, dest / "onnx" / graph_file.name) if _same_fs(MINILM, dest) else \
            shutil.copy(graph_file, dest / "onnx" / graph_file.name)
    for name in ["tokenizer.json", "config.json", "tokenizer_config.json", "special_tokens_map.json"]:
        if (MINILM / name).exists():
            shutil.copy(MINILM / name, dest / name)
    (dest / "1_Pooling").mkdir()
    (dest / "1_Pooling" / "config.json").write_text(
        '{"word_embedding_dimension": 384, "pooling_mode_cls_token": %s, "pooling_mode_mean_tokens": %s}'
        % (str(pooling == "cls").lower(), str(pooling == "mean").lower()))
    (dest / "modules.json").write_text(
        '[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},'
        '{"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},'
        '{"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]')
    (dest / "sentence_bert_config.json").write_text('{"max_seq_length": 512, "do_lower_case": false}')
    return dest


def _same_fs(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b.parent if not b.exists() else b).st_dev


TEST_CONFIG = """
[server]
max_body_bytes = 1_048_576

[[models]]
name = "all-MiniLM-L6-v2"
path = "{minilm}"

[[models]]
name = "hf-cls"
path = "{hf}"
max_inputs = 8

[[models]]
name = "smollm2-135m-instruct"
path = "{smollm}"

[[models]]
name = "gemma-3-270m"
path = "{gemma}"

[[tenants]]
name = "default"
public = true
component = "{router}"
"""


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("nnhost")
    hf = hf_folder_from_minilm(work / "hf-cls", pooling="cls")
    srv = Server(TEST_CONFIG.format(minilm=MINILM, hf=hf, router=ROUTER_WASM, smollm=SMOLLM, gemma=GEMMA), work)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def default_server(tmp_path_factory):
    """The host exactly as `just run` starts it: the embedded default config."""
    srv = Server(None, tmp_path_factory.mktemp("nnhost-default"))
    yield srv
    srv.stop()


def model_counts(server: "Server", metric: str, model: str, outcomes: tuple[str, ...]) -> dict[str, float]:
    """A `{model, outcome}` counter's values for one model, read from /metrics (0 where unset)."""
    found = dict.fromkeys(outcomes, 0.0)
    for line in server.get("/metrics").text.splitlines():
        m = re.match(rf'nnhost_{metric}\{{model="([^"]+)",outcome="(\w+)"\}} (\S+)', line)
        if m and m.group(1) == model:
            found[m.group(2)] = float(m.group(3))
    return found


# Greedy outputs of a quantized graph computed in different shapes (a row alone or in a batch,
# a prompt in one piece or after a cached prefix) may part where the two best tokens are this close:
# MatMulNBits' int8 activations round differently per kernel path. On AVX-512 VNNI machines the
# paths agree exactly; on AVX2-only CPUs a batch of rows and one row take different kernels.
NEAR_TIE_NATS = 0.5


def assert_same_or_near_tie(alone: dict, other: dict, what: str) -> None:
    """`alone` and `other`: /v1/completions choices of one prompt, greedy, with `logprobs: 5`.
    Their tokens must be the same, or part first where `alone` had a near-tie between its
    token and `other`'s (a cache or batching bug gives confident wrong tokens instead)."""
    a, b = alone["logprobs"]["tokens"], other["logprobs"]["tokens"]
    if a == b:
        return
    i = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), None)
    assert i is not None, f"{what}: one output stops early: {alone['text']!r} vs {other['text']!r}"
    top = alone["logprobs"]["top_logprobs"][i]
    gap = top[a[i]] - top[b[i]] if b[i] in top else float("inf")
    assert gap <= NEAR_TIE_NATS, (f"{what}: token {i} is {b[i]!r} instead of {a[i]!r}, which led by {gap:.2f} "
                                  f"nats ({top}): {alone['text']!r} vs {other['text']!r}")
