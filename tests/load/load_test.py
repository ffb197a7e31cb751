#!/usr/bin/env python3
"""Load and soak test for nnhost (a recipe, not part of `just test`).

Sends N mixed requests (default 10,000) over C concurrent keep-alive connections
(default 64): embeddings with 1-5 texts, chat completions non-streaming and streaming
(max_tokens 8), GET /v1/models and GET /health. Counts sent / ok / errors / lost (a lost
request got no complete answer: connection error, timeout, truncated body, an SSE stream
without `data: [DONE]`), the status histogram, latency p50/p99 per kind, and the RSS of
the nnhost process (from /proc) at start and end. Writes JSON to tests/out/load.json.

    just load                                   # 10,000 requests, 64 connections
    .venv/bin/python tests/load/load_test.py -n 2000 -c 64
    .venv/bin/python tests/load/load_test.py --url http://127.0.0.1:8080 --pid 1234
    .venv/bin/python tests/load/load_test.py --soak-minutes 30     # RSS every minute; tests/out/soak.json

Without --url it starts `target/release/nnhost serve` with the embedded default config
(or --config FILE) on a free port and stops it at the end. Chat requests go to the first
served model of kind "chat" (`--chat-model` to choose); when none is served, the chat
kinds are left out of the mix and the report says so. The whole run is bounded by
--max-seconds: requests not started by then are counted as `not_sent`.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

WORDS = ("the a weather lovely sunny outside stadium drove train sea coffee meeting office long day "
         "quick brown fox jumps over lazy dog model server sandbox tensor batch request").split()

# kind -> weight in the mix
MIX = {"embeddings": 50, "chat": 8, "chat_stream": 8, "models": 17, "health": 17}


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 24)))


def rss_kib(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def find_pid(port: int) -> int | None:
    """The nnhost process listening on `port` (by its command line)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"nnhost") and any(a.endswith(f":{port}".encode()) for a in cmd):
            return int(proc.name)
    return None


def default_config_with_chat() -> tuple[str | None, str]:
    """The embedded default config; when it serves no chat model but the prepared
    SmolLM2 folder exists, the default plus that model (so the mix has chat in it)."""
    import subprocess

    from conftest import HOST_BIN, SMOLLM

    text = subprocess.run([str(HOST_BIN), "default-config"], capture_output=True, text=True, check=True).stdout
    if "kind = \"chat\"" in text or SMOLLM.name in text or not (SMOLLM / "onnx").is_dir():
        return None, "embedded default"
    extra = f'\n[[models]]\nname = "{SMOLLM.name}"\npath = "{SMOLLM}"\n'
    return text + extra, f"embedded default + {SMOLLM.name} (the default serves no chat model)"


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


class Target:
    def __init__(self, url: str, chat_model: str | None, embed_model: str):
        u = urlparse(url)
        self.host, self.port = u.hostname, u.port or 80
        self.chat_model = chat_model
        self.embed_model = embed_model

    def request(self, kind: str, rng: random.Random) -> tuple[str, str, bytes | None]:
        if kind == "embeddings":
            texts = [sentence(rng) for _ in range(rng.randint(1, 5))]
            return "POST", "/v1/embeddings", json.dumps({"model": self.embed_model, "input": texts}).encode()
        if kind in ("chat", "chat_stream"):
            body = {"model": self.chat_model, "max_tokens": 8, "temperature": 0.7, "seed": rng.randint(0, 2 ** 31),
                    "messages": [{"role": "user", "content": sentence(rng)}]}
            if kind == "chat_stream":
                body["stream"] = True
            return "POST", "/v1/chat/completions", json.dumps(body).encode()
        if kind == "models":
            return "GET", "/v1/models", None
        return "GET", "/health", None


class Worker:
    """One keep-alive connection; reconnects after a lost request."""

    def __init__(self, target: Target, timeout: float):
        self.target = target
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.target.host, self.target.port, timeout=self.timeout)
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self, kind: str, rng: random.Random) -> dict:
        method, path, body = self.target.request(kind, rng)
        headers = {"content-type": "application/json"} if body is not None else {}
        started = time.perf_counter()
        try:
            conn = self._connection()
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            error = None
            if kind == "chat_stream" and resp.status == 200:
                done = False
                events = 0
                while True:
                    line = resp.readline()
                    if not line:
                        break
                    if line.startswith(b"data: "):
                        events += 1
                        if line.strip() == b"data: [DONE]":
                            done = True
                resp.read()
                if not done:
                    raise ConnectionError(f"SSE stream ended without [DONE] after {events} events")
            else:
                data = resp.read()
                if resp.status == 200:
                    json.loads(data)
                else:
                    error = f"{resp.status} {data[:200].decode(errors='replace')}"
            if resp.getheader("connection", "").lower() == "close":
                self.close()
            return {"kind": kind, "status": resp.status, "seconds": time.perf_counter() - started, "error": error}
        except Exception as e:  # noqa: BLE001 - every failure is counted as lost
            self.close()
            return {"kind": kind, "status": "lost", "seconds": time.perf_counter() - started,
                    "error": f"{type(e).__name__}: {e}"[:200]}


def run_batch(target: Target, kinds: list[str], concurrency: int, deadline: float, timeout: float,
              seed: int) -> tuple[list[dict], int]:
    """Runs `kinds` (one request each) over `concurrency` connections until done or the deadline."""
    lock = threading.Lock()
    position = [0]
    results: list[dict] = []

    def loop(index: int):
        rng = random.Random(seed * 1_000_003 + index)
        worker = Worker(target, timeout)
        local = []
        try:
            while time.time() < deadline:
                with lock:
                    if position[0] >= len(kinds):
                        break
                    kind = kinds[position[0]]
                    position[0] += 1
                local.append(worker.run(kind, rng))
        finally:
            worker.close()
            with lock:
                results.extend(local)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.time()) + timeout + 5)
    with lock:
        return list(results), len(kinds) - position[0]


def summarise(results: list[dict], not_sent: int, wall: float) -> dict:
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_kind[r["kind"]].append(r)
    kinds = {}
    for kind, rs in sorted(by_kind.items()):
        lat = sorted(r["seconds"] for r in rs if r["status"] != "lost")
        kinds[kind] = {
            "sent": len(rs),
            "ok": sum(1 for r in rs if isinstance(r["status"], int) and r["status"] < 400),
            "errors": sum(1 for r in rs if isinstance(r["status"], int) and r["status"] >= 400),
            "lost": sum(1 for r in rs if r["status"] == "lost"),
            "statuses": dict(sorted(Counter(str(r["status"]) for r in rs).items())),
            "p50_ms": round(1000 * percentile(lat, 50), 1) if lat else None,
            "p99_ms": round(1000 * percentile(lat, 99), 1) if lat else None,
            "max_ms": round(1000 * lat[-1], 1) if lat else None,
        }
    errors = Counter(r["error"] for r in results if r["error"])
    return {
        "sent": len(results),
        "not_sent": not_sent,
        "ok": sum(k["ok"] for k in kinds.values()),
        "errors": sum(k["errors"] for k in kinds.values()),
        "lost": sum(k["lost"] for k in kinds.values()),
        "statuses": dict(sorted(Counter(str(r["status"]) for r in results).items())),
        "wall_seconds": round(wall, 1),
        "requests_per_second": round(len(results) / wall, 1) if wall else None,
        "kinds": kinds,
        "first_errors": [{"error": e, "count": n} for e, n in errors.most_common(10)],
    }


def make_kinds(n: int, rng: random.Random, mix: dict[str, int]) -> list[str]:
    names = list(mix)
    return rng.choices(names, weights=[mix[k] for k in names], k=n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--requests", type=int, default=10_000, help="requests in total (default 10,000)")
    ap.add_argument("-c", "--concurrency", type=int, default=64, help="concurrent connections (default 64)")
    ap.add_argument("--url", help="an nnhost already running (default: start one)")
    ap.add_argument("--pid", type=int, help="its process id, for RSS (default: found by port)")
    ap.add_argument("--config", type=Path, help="config file for the server started here (default: embedded)")
    ap.add_argument("--chat-model", help="chat model (default: the first served model of kind chat)")
    ap.add_argument("--embed-model", default="all-MiniLM-L6-v2")
    ap.add_argument("--max-seconds", type=float, default=1800, help="bound on the whole run (default 1800)")
    ap.add_argument("--timeout", type=float, default=300, help="per-request timeout in seconds (default 300)")
    ap.add_argument("--soak-minutes", type=float, help="soak: run the mix for M minutes, RSS every minute")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, help="JSON output (default tests/out/load.json or soak.json)")
    args = ap.parse_args()

    server = None
    config_note = "external server"
    if args.url:
        url = args.url.rstrip("/")
        pid = args.pid or find_pid(urlparse(url).port or 80)
    else:
        from conftest import Server  # the test suite's launcher: free port, waits for /health

        work = Path(tempfile.mkdtemp(prefix="nnhost-load-"))
        config_text, config_note = default_config_with_chat() if args.config is None else \
            (args.config.read_text(), str(args.config))
        server = Server(config_text, work)
        url, pid = server.url, server.proc.pid
        print(f"config: {config_note}", flush=True)
        print(f"started nnhost pid {pid} at {url} (log {server.log_path})", flush=True)

    try:
        conn = http.client.HTTPConnection(urlparse(url).hostname, urlparse(url).port, timeout=30)
        conn.request("GET", "/v1/models")
        served = json.loads(conn.getresponse().read())["data"]
        conn.close()
        chat_model = args.chat_model or next((m["id"] for m in served if m.get("nnhost", {}).get("kind") == "chat"),
                                             None)
        mix = dict(MIX)
        notes = []
        if chat_model is None:
            mix.pop("chat")
            mix.pop("chat_stream")
            notes.append("no chat model is served: the chat kinds were left out of the mix")
        target = Target(url, chat_model, args.embed_model)
        rng = random.Random(args.seed)
        rss_start = rss_kib(pid)
        report = {
            "url": url, "config": config_note, "pid": pid, "concurrency": args.concurrency, "mix": mix,
            "models": {"embeddings": args.embed_model, "chat": chat_model}, "notes": notes,
            "cpu_count": os.cpu_count(), "rss_kib_start": rss_start,
        }
        print(f"mix {mix}; RSS at start {rss_start} KiB", flush=True)
        started = time.time()
        if args.soak_minutes:
            end = started + args.soak_minutes * 60
            minutes = []
            all_results: list[dict] = []
            minute = 0
            while time.time() < end:
                minute += 1
                deadline = min(end, started + minute * 60)
                # More than a minute's worth; the deadline ends the batch.
                kinds = make_kinds(1_000_000, rng, mix)
                results, _ = run_batch(target, kinds, args.concurrency, deadline, args.timeout, args.seed + minute)
                all_results.extend(results)
                s = summarise(results, 0, max(1e-9, time.time() - max(started + (minute - 1) * 60, started)))
                row = {"minute": minute, "rss_kib": rss_kib(pid), "sent": s["sent"], "ok": s["ok"],
                       "errors": s["errors"], "lost": s["lost"], "requests_per_second": s["requests_per_second"]}
                minutes.append(row)
                print(json.dumps(row), flush=True)
            report.update(summarise(all_results, 0, time.time() - started))
            report["soak_minutes"] = args.soak_minutes
            report["per_minute"] = minutes
        else:
            kinds = make_kinds(args.requests, rng, mix)
            deadline = started + args.max_seconds
            results, not_sent = run_batch(target, kinds, args.concurrency, deadline, args.timeout, args.seed)
            report["requested"] = args.requests
            report.update(summarise(results, not_sent, time.time() - started))
        report["rss_kib_end"] = rss_kib(pid)
        if server is not None:
            report["server_alive_at_end"] = server.proc.poll() is None
        out = args.out or ROOT / "tests" / "out" / ("soak.json" if args.soak_minutes else "load.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        brief = {k: report[k] for k in ("sent", "not_sent", "ok", "errors", "lost", "statuses", "wall_seconds",
                                        "requests_per_second", "rss_kib_start", "rss_kib_end")}
        print(json.dumps(brief))
        for kind, k in report["kinds"].items():
            print(f"  {kind:12} sent {k['sent']:6} ok {k['ok']:6} errors {k['errors']:4} lost {k['lost']:4} "
                  f"p50 {k['p50_ms']} ms p99 {k['p99_ms']} ms")
        print(f"wrote {out}")
        return 0 if report["errors"] == 0 and report["lost"] == 0 else 1
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
