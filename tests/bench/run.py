#!/usr/bin/env python3
"""`just bench`: measured, reproducible benchmarks of nnhost, written to docs/BENCHMARKS.md.

Starts `target/release/nnhost serve` with the embedded default config (cwd = the
repository root) on a free loopback port and drives it with the host's own tools:

- `nnhost bench http`: closed-loop keep-alive HTTP/1.1 load client (hyper, one thread);
- `nnhost bench ort`:  raw ONNX Runtime on the host's CpuProvider, timing only the run.

Raw and HTTP measurements are interleaved in rounds, and every row records how much
CPU *other* processes used while it ran (the machine is shared), so a noisy row can be
told from a slow one. Standard library + numpy (+ matplotlib for the plot, if present).

    .venv/bin/python tests/bench/run.py --out docs/BENCHMARKS.md [--scale 0.3] [--bin PATH]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from common import MODEL, OPTION_SETS, ROOT, SHORT, log
from report import plot, write_report

TEXTS = [SHORT, "It's so sunny outside!", "He drove to the stadium.",
         "A man is playing a guitar.", "The new movie is awesome."]
CONCURRENCY = [1, 4, 16, 32, 64]
CEILING_BATCHES = [8, 32, 64]
HZ = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- CPU accounting

class CpuMeter:
    """Busy CPU of the whole machine, of the server process and of this script's
    children over an interval; 'other' is what the rest of the machine used."""

    def __init__(self, server_pid: int | None):
        self.server_pid = server_pid

    def _server_s(self) -> float:
        if self.server_pid is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.server_pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / HZ  # utime, stime
        except OSError:
            return 0.0

    def snapshot(self):
        cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        busy = (sum(cpu) - cpu[3] - cpu[4]) / HZ
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return time.monotonic(), busy, self._server_s(), ch.ru_utime + ch.ru_stime, me.ru_utime + me.ru_stime

    @staticmethod
    def delta(a, b) -> dict:
        wall = max(b[0] - a[0], 1e-9)
        busy, server, client, me = (b[i] - a[i] for i in range(1, 5))
        return {"wall": wall, "busy": busy / wall, "server": server / wall, "client": client / wall,
                "other": max(0.0, (busy - server - client - me) / wall)}


# ---------------------------------------------------------------------------- runner

class Bench:
    def __init__(self, binary: Path, scale: float, work: Path, wait_quiet: float = 0.0):
        self.bin = binary
        self.scale = scale
        self.wait_quiet = wait_quiet
        self.waited = 0.0
        self.work = work
        self.server: subprocess.Popen | None = None
        self.meter = CpuMeter(None)
        self.loads: list[float] = []
        self.others: list[float] = []
        self.counter = 0

    def s(self, seconds: float) -> float:
        return max(0.3, seconds * self.scale)

    # --- server
    def start_server(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server_log = self.work / "nnhost.log"
        self.server = subprocess.Popen([str(self.bin), "serve", "--listen", f"127.0.0.1:{self.port}"], cwd=ROOT,
                                       stdout=open(self.server_log, "wb"), stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.server.poll() is not None:
                raise SystemExit(f"nnhost exited with {self.server.returncode}:\n{self.server_log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"nnhost did not become healthy:\n{self.server_log.read_text()[-3000:]}")
        self.meter = CpuMeter(self.server.pid)
        # One request to be sure the whole path works before measuring anything.
        body = json.dumps({"model": MODEL, "input": SHORT}).encode()
        req = urllib.request.Request(self.url + "/v1/embeddings", body, {"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert len(json.load(r)["data"][0]["embedding"]) > 0

    def stop_server(self) -> None:
        if self.server and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()

    def quiet(self) -> None:
        """With --wait-quiet S: wait (at most S seconds) until the rest of the machine
        uses less than 0.25 cores over half a second, so rows are less disturbed."""
        deadline = time.monotonic() + self.wait_quiet
        while time.monotonic() < deadline:
            a = self.meter.snapshot()
            time.sleep(0.5)
            if CpuMeter.delta(a, self.meter.snapshot())["other"] < 0.25:
                break
            self.waited += 0.5

    # --- tools
    def _tool(self, args: list[str]) -> dict:
        """Runs one measurement; with --wait-quiet, a row that other processes disturbed
        (more than 0.3 cores) is measured again, up to twice, keeping the quietest."""
        best = self._tool_once(args)
        for _ in range(2 if self.wait_quiet else 0):
            if best["cpu"]["other"] <= 0.3:
                break
            log(f"row disturbed (other load {best['cpu']['other']:.2f} cores), measuring it again")
            again = self._tool_once(args)
            if again["cpu"]["other"] < best["cpu"]["other"]:
                best = again
        self.others.append(best["cpu"]["other"])
        return best

    def _tool_once(self, args: list[str]) -> dict:
        self.counter += 1
        samples_path = self.work / f"samples-{self.counter}.txt"
        cmd = [str(self.bin), "bench", *args, "--latencies-out", str(samples_path)]
        self.quiet()
        self.loads.append(os.getloadavg()[0])
        before = self.meter.snapshot()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        after = self.meter.snapshot()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
        out = json.loads(proc.stdout)
        out["samples"] = np.loadtxt(samples_path, ndmin=1) if samples_path.stat().st_size else np.array([])
        out["cpu"] = CpuMeter.delta(before, after)
        out["command"] = "nnhost bench " + " ".join(a if " " not in a and "{" not in a else "'…'" for a in args)
        return out

    def ort(self, batch: int, seconds: float, texts: list[str] | None = None, extra: list[str] | None = None) -> dict:
        args = ["ort", "--batch", str(batch), "--seconds", str(self.s(seconds)),
                "--warmup", str(20 if batch <= 8 else 5)]
        for t in texts or [SHORT]:
            args += ["--text", t]
        out = self._tool(args + (extra or []))
        log(f"ort batch {batch} {' '.join(extra or [])}: p50 {out['p50_ms']} ms, {out['texts_per_s']} texts/s "
            f"(other load {out['cpu']['other']:.2f} cores)")
        return out

    def http(self, inputs: str | list[str], connections: int, seconds: float, warmup: float,
             model: str = MODEL, expect: int = 200) -> dict:
        body = json.dumps({"model": model, "input": inputs})
        out = self._tool(["http", "--url", self.url + "/v1/embeddings", "--body", body, "-c", str(connections),
                          "--duration", str(self.s(seconds)), "--warmup", str(self.s(warmup)),
                          "--expect", str(expect)])
        if self.server.poll() is not None:
            raise SystemExit(f"nnhost died during the run:\n{self.server_log.read_text()[-3000:]}")
        log(f"http {model} c={connections} inputs={1 if isinstance(inputs, str) else len(inputs)}: p50 {out['p50_ms']} ms, "
            f"p99 {out['p99_ms']} ms, {out['req_per_s']} req/s, errors {out['errors']} "
            f"(other load {out['cpu']['other']:.2f} cores)")
        return out

    def wrk(self, connections: int, seconds: float) -> dict | None:
        """Cross-check of the client with wrk, when it is installed (not a dependency)."""
        if not shutil.which("wrk"):
            return None
        script = self.work / "post.lua"
        body = json.dumps({"model": MODEL, "input": SHORT})
        self.quiet()
        script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                          'wrk.headers["Content-Type"] = "application/json"\n')
        before = self.meter.snapshot()
        proc = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(self.s(seconds)))}s", "--latency",
                               "-s", str(script), self.url + "/v1/embeddings"], capture_output=True, text=True)
        cpu = CpuMeter.delta(before, self.meter.snapshot())
        if proc.returncode != 0:
            return None
        text = proc.stdout

        def ms(label: str) -> float:
            m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
            if not m:
                return float("nan")
            return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

        rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
        non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
        out = {"p50_ms": ms("50%"), "p90_ms": ms("90%"), "p99_ms": ms("99%"),
               "req_per_s": float(rps.group(1)) if rps else float("nan"),
               "errors": int(non2xx.group(1)) if non2xx else 0, "cpu": cpu}
        self.others.append(cpu["other"])
        log(f"wrk c={connections}: p50 {out['p50_ms']:.2f} ms, p99 {out['p99_ms']:.2f} ms, {out['req_per_s']:.1f} req/s")
        return out


# ---------------------------------------------------------------------------- machine

def machine_info() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M) or re.search(r"^(?:Hardware|CPU part)\s*:\s*(.+)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    flagset = set(flags.group(1).split()) if flags else set()
    simd = [x for x in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if x in flagset]
    mem = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    osrel = {}
    if Path("/etc/os-release").exists():
        for line in Path("/etc/os-release").read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                osrel[k] = v.strip('"')

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "?"

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpu": model.group(1).strip() if model else platform.processor() or "?",
        "simd": ", ".join(simd) or "none of avx2/avx512/vnni/amx",
        "cores": os.cpu_count(),
        "usable": len(os.sched_getaffinity(0)),
        "mem_gib": int(mem.group(1)) / 1024 / 1024 if mem else float("nan"),
        "os": f"{osrel.get('PRETTY_NAME', platform.system())}, Linux {platform.release()}",
        "commit": git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty not in ("", "?") else ""),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "rustc": git_free(["rustc", "--version"]),
    }


def git_free(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


# ---------------------------------------------------------------------------- the run

def run_all(b: Bench) -> dict:
    r: dict = {}
    # 1. Single short text: raw ORT batch 1 vs HTTP at one connection, interleaved.
    log("== single short text: raw ORT vs HTTP, 3 interleaved rounds")
    rounds = []
    for i in range(3):
        raw = b.ort(1, 3.0)
        web = b.http(SHORT, 1, 10.0 / 3, 2.0 if i == 0 else 0.5)
        rounds.append((raw, web))
    r["single"] = rounds
    # The same request for a model that does not exist: HTTP, a fresh guest instance, JSON
    # parsing and the host call, answered 404 before any tokenizing or inference.
    r["no_model"] = b.http(SHORT, 1, 2.0, 0.5, model="no-such-model", expect=404)
    r["wrk1"] = b.wrk(1, 3.0)

    # 2. The seed's scenarios: 1, 3, 5 texts in one request.
    log("== seed scenarios: 1, 3, 5 texts per request")
    seed = {}
    for n in (1, 3, 5):
        raw = b.ort(n, 2.5, TEXTS[:n])
        web = b.http(TEXTS[:n] if n > 1 else TEXTS[0], 1, 5.0, 1.0)
        seed[n] = (raw, web)
    r["seed"] = seed

    # 3. Concurrency vs the raw batched ceiling, interleaved.
    log("== concurrency")
    conc, ceiling = {}, {}
    order = [("ort", 8), ("http", 1), ("http", 4), ("ort", 32), ("http", 16), ("http", 32), ("ort", 64), ("http", 64)]
    for kind, n in order:
        if kind == "ort":
            ceiling[n] = b.ort(n, 4.0)
        else:
            conc[n] = b.http(SHORT, n, 6.0, 1.0 if n < 32 else 1.5)
    # The target row, 32 connections, in two more rounds beside a raw batch-32 run each: one 6 s window
    # on a shared machine can land on a neighbour's burst. The table shows the median round; the
    # ceiling stays the best raw run.
    rounds32 = [(ceiling[32], conc[32])]
    for _ in range(2):
        rounds32.append((b.ort(32, 4.0), b.http(SHORT, 32, 6.0, 1.5)))
    r["rounds32"] = rounds32
    conc[32] = sorted((web for _, web in rounds32), key=lambda x: x["req_per_s"])[1]
    ceiling[32] = max((raw for raw, _ in rounds32), key=lambda x: x["texts_per_s"])
    r["conc"], r["ceiling"] = conc, ceiling
    r["wrk32"] = b.wrk(32, 4.0)

    # 4. CPU provider options: two passes in opposite orders, samples merged.
    log("== CPU provider options")
    opts: dict = {}
    plan = [(name, extra, batch) for batch in (1, 32) for name, extra in OPTION_SETS]
    for pass_plan in (plan, list(reversed(plan)), plan):
        for name, extra, batch in pass_plan:
            opts.setdefault((name, batch), []).append(b.ort(batch, 1.5, None, extra))
    r["opts"] = opts
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/BENCHMARKS.md", help="Markdown report (relative to the repository root)")
    ap.add_argument("--bin", default="target/release/nnhost", help="the nnhost binary")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every duration (0.3 = a quick smoke run)")
    ap.add_argument("--json", help="also dump the raw results here")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each row wait up to S seconds for other processes to go quiet (shared machines)")
    args = ap.parse_args()
    binary = (ROOT / args.bin).resolve()
    out = (ROOT / args.out).resolve()
    if not binary.exists():
        raise SystemExit(f"{binary} is missing: run `just build` (or `cargo build --release`) first")
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    m = machine_info()
    log(f"{m['cpu']}, {m['cores']} cores, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="nnhost-bench-") as tmp:
        b = Bench(binary, args.scale, Path(tmp), args.wait_quiet)
        b.start_server()
        try:
            r = run_all(b)
        finally:
            b.stop_server()
        png = out.parent / "bench-concurrency.png"
        note = plot(r, png)
        write_report(r, m, b, out, time.monotonic() - started, note, png)
        if args.json:
            def clean(x):
                if isinstance(x, dict):
                    return {str(k): clean(v) for k, v in x.items() if k != "samples"}
                if isinstance(x, (list, tuple)):
                    return [clean(v) for v in x]
                return x
            Path(args.json).write_text(json.dumps(clean(r), indent=1))
    log(f"wrote {out}" + ("" if note else f" and {png}") + f" in {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
