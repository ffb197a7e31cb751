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
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MODEL = "all-MiniLM-L6-v2"
SHORT = "The weather is lovely today."
TEXTS = [SHORT, "It's so sunny outside!", "He drove to the stadium.",
         "A man is playing a guitar.", "The new movie is awesome."]
CONCURRENCY = [1, 4, 16, 32, 64]
CEILING_BATCHES = [8, 32, 64]
HZ = os.sysconf("SC_CLK_TCK")

# Reference figures (not measured by this script).
SEED_FIGURES = {1: "193", 3: "~510", 5: "833"}  # the seed's own, 8-core ARM64
SEED_LIKE = {1: ("19.3", "32"), 3: ("39.3", ""), 5: ("55.6", "")}  # PEERS.md, this kind of machine
TEI = {1: ("7.7", "17"), 3: ("14.7", ""), 5: ("18.2", "")}
TEI_32 = (433, 74, 93)  # req/s, p50, p99 at 32 connections (wrk), PEERS.md
PEERS_RAW = {  # texts/s, PEERS.md
    "sequential": {1: "~190", 8: "~470", 32: "570-650", 64: "~680"},
    "parallel": {1: "~83", 8: "~200", 32: "240-330", 64: "~315"},
}

OPTION_SETS = [
    ("defaults (sequential, intra = cores, no spinning)", []),
    ("spinning on", ["--spinning", "true"]),
    ("parallel mode, inter-op 2 (the seed's choice)", ["--execution-mode", "parallel", "--inter-threads", "2"]),
    ("intra-op 1", ["--intra-threads", "1"]),
]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(samples: np.ndarray, q: float) -> float:
    return float(np.percentile(samples, q, method="inverted_cdf")) if len(samples) else float("nan")


def stats(samples: np.ndarray) -> dict:
    return {"n": int(len(samples)), "p50": pct(samples, 50), "p90": pct(samples, 90), "p99": pct(samples, 99),
            "mean": float(samples.mean()) if len(samples) else float("nan"),
            "max": float(samples.max()) if len(samples) else float("nan")}


def f(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"


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


def ort_version(library: str) -> str:
    m = re.search(r"libonnxruntime\.so\.(\d+\.\d+\.\d+)", library)
    if m:
        return m.group(1)
    try:
        import importlib.metadata as md
        return md.version("onnxruntime")
    except Exception:  # noqa: BLE001
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


def undisturbed(runs: list[dict], limit: float = 0.3) -> list[dict]:
    """The repeated runs of one row that other processes did not disturb (all of them if none)."""
    quiet = [x for x in runs if x["cpu"]["other"] <= limit]
    return quiet or runs


def merged(runs: list[dict]) -> np.ndarray:
    return np.concatenate([x["samples"] for x in runs]) if runs else np.array([])


def other_cell(runs: list[dict]) -> str:
    vals = [x["cpu"]["other"] for x in runs if x]
    return f"{max(vals):.2f}" if vals else "n/a"


def plot(r: dict, path: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not importable, so no plot was drawn (`pip install matplotlib` and rerun)."
    conns = sorted(r["conc"])
    rps = [r["conc"][c]["req_per_s"] for c in conns]
    p50 = [r["conc"][c]["p50_ms"] for c in conns]
    p99 = [r["conc"][c]["p99_ms"] for c in conns]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(conns, rps, "o-", label="nnhost (HTTP, 1 text per request)")
    colors = ["#999999", "#666666", "#333333"]
    for (batch, run), color in zip(sorted(r["ceiling"].items()), colors):
        ax1.axhline(run["texts_per_s"], ls="--", color=color, lw=1, label=f"raw ORT batch {batch}")
    ax1.plot([32], [TEI_32[0]], "s", color="tab:red", label="TEI 1.9.3 (PEERS.md)")
    ax1.set_xscale("log", base=2)
    ax1.set_xticks(conns, [str(c) for c in conns])
    ax1.set_xlabel("concurrent connections")
    ax1.set_ylabel("requests (texts) per second")
    ax1.set_ylim(bottom=0)
    ax1.set_title("Throughput")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.plot(conns, p99, "o-", label="nnhost p99")
    ax2.plot(conns, p50, "o:", label="nnhost p50")
    ax2.plot([32], [TEI_32[2]], "s", color="tab:red", label="TEI p99 (PEERS.md)")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xticks(conns, [str(c) for c in conns])
    ax2.set_xlabel("concurrent connections")
    ax2.set_ylabel("latency, ms")
    ax2.set_title("Latency")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3, which="both")
    fig.suptitle("all-MiniLM-L6-v2, one short text per request, closed loop (nnhost bench http)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return ""


def write_report(r: dict, m: dict, b: Bench, out: Path, elapsed: float, plot_note: str, png: Path) -> None:
    lines: list[str] = []
    w = lines.append
    first_ort = r["single"][0][0]
    options = first_ort["options"]
    ortv = ort_version(first_ort["ort_library"])
    loads = b.loads
    w("# Benchmarks")
    w("")
    w("Written by `just bench` (`tests/bench/run.py`); rerun it to refresh this page. Every number below was")
    w("measured in one run of that script on the machine described here. The machine is shared and small, so")
    w("ratios taken within this run mean more than absolute values; each table has an **other load** column:")
    w("the CPU (in cores) that processes other than nnhost and the bench tools used while that row ran.")
    w("")
    busy = float(np.median(b.others))
    if busy > 0.25:
        w(f"> **This run was disturbed**: other processes used {busy:.2f} cores (median) of {m['usable']} while it ran.")
        w("> Rows with a high other load are not comparable with quiet ones; rerun on a quiet machine")
        w("> (or with `--wait-quiet 10`) before drawing conclusions.")
        w("")
    w("## Machine")
    w("")
    w("| | |")
    w("|---|---|")
    w(f"| CPU | {m['cpu']} ({m['simd']}) |")
    w(f"| cores | {m['cores']} ({m['usable']} usable by this process) |")
    w(f"| memory | {m['mem_gib']:.1f} GiB |")
    w(f"| OS | {m['os']} |")
    w(f"| ONNX Runtime | {ortv} (`{Path(first_ort['ort_library']).name}`, loaded by the host) |")
    w(f"| nnhost | commit {m['commit']}, release build, {m['rustc']} |")
    w(f"| model | {MODEL} fp32 (`{first_ort['onnx']}`) |")
    w(f"| date | {m['date']}, the whole run took {elapsed / 60:.1f} min |")
    w(f"| load average (1 min) | {min(loads):.2f} – {max(loads):.2f} during the run (median {np.median(loads):.2f}) |")
    if b.wait_quiet:
        w(f"| waiting for quiet | up to {b.wait_quiet:g} s before each row, and rows disturbed by more than 0.3 cores "
          f"measured again up to twice (`--wait-quiet`); {b.waited:.0f} s of waiting in all |")
    w(f"| other load | {min(b.others):.2f} – {max(b.others):.2f} cores (median {np.median(b.others):.2f}) across the rows below |")
    w("")
    w("Server: `target/release/nnhost serve --listen 127.0.0.1:<free port>` with the embedded default config")
    w(f"(CPU provider options: {options['execution_mode']} execution, intra-op threads {options['intra_op_threads']}, "
      f"spinning {'on' if options['spinning'] else 'off'}, optimization {options['optimization_level']}, "
      f"arena {'on' if options['memory_arena'] else 'off'}, memory pattern {'on' if options['memory_pattern'] else 'off'}).")
    w("HTTP load: `nnhost bench http` (closed loop: each of C keep-alive HTTP/1.1 connections sends its next")
    w("request when the previous answer has arrived; hyper client on one thread; non-200 answers count as errors).")
    w("Raw ONNX Runtime: `nnhost bench ort` (the same model file, the host's own `CpuProvider` with the same options")
    w("and inputs padded as the embedding queue pads them; only `provider.run` is timed, tokenizing is not).")
    w(f"The short text is \"{SHORT}\" ({first_ort['tokens_per_row']} tokens with [CLS]/[SEP]).")
    w("")

    # --- 1. single
    raw_all = merged([x[0] for x in r["single"]])
    web_all = merged([x[1] for x in r["single"]])
    rs, ws = stats(raw_all), stats(web_all)
    ratio = ws["p50"] / rs["p50"]
    w("## 1. One short text: HTTP vs raw ONNX Runtime")
    w("")
    w("Three interleaved rounds of raw ORT at batch 1 (3 s each) and HTTP at one connection (10 s in all after a")
    w("2 s warm-up). p50/p99 over all samples of each kind; the ratio is HTTP p50 / raw p50 (target ≤ 1.05).")
    w("")
    w("| round | raw ORT p50 / p99 ms | HTTP p50 / p99 ms | HTTP − raw p50 ms | ratio p50 | other load |")
    w("|---|---|---|---|---|---|")
    for i, (raw, web) in enumerate(r["single"], 1):
        a, c = stats(raw["samples"]), stats(web["samples"])
        w(f"| {i} | {f(a['p50'])} / {f(a['p99'])} | {f(c['p50'])} / {f(c['p99'])} | {f(c['p50'] - a['p50'])} | "
          f"{f(c['p50'] / a['p50'], 3)} | {other_cell([raw, web])} |")
    w(f"| **all** | **{f(rs['p50'])} / {f(rs['p99'])}** | **{f(ws['p50'])} / {f(ws['p99'])}** | "
      f"**{f(ws['p50'] - rs['p50'])}** | **{f(ratio, 3)}** | |")
    w("")
    w(f"Raw mean {f(rs['mean'])} ms ({1e3 / rs['mean']:.0f} texts/s), HTTP mean {f(ws['mean'])} ms "
      f"({ws['n'] / sum(x[1]['duration_s'] for x in r['single']):.0f} req/s); {rs['n']} and {ws['n']} samples.")
    nm = r["no_model"]
    w(f"Without inference (the same request naming a model that does not exist, answered 404 by the guest after")
    w(f"the host's lookup: HTTP, a fresh guest instance, JSON in and out): p50 {f(nm['p50_ms'], 3)} ms, "
      f"p99 {f(nm['p99_ms'], 3)} ms ({nm['req_per_s']:.0f} req/s, other load {nm['cpu']['other']:.2f}).")
    if r.get("wrk1"):
        k = r["wrk1"]
        w(f"Cross-check with `wrk -t1 -c1` (same body, 3 s): p50 {f(k['p50_ms'])} ms, p99 {f(k['p99_ms'])} ms, "
          f"{k['req_per_s']:.0f} req/s (other load {k['cpu']['other']:.2f}).")
    w("")

    # --- 2. seed scenarios
    w("## 2. The seed's scenarios: 1, 3 and 5 texts in one request")
    w("")
    w("One connection, 5 s after a 1 s warm-up per row; raw ORT at the same batch (the same texts, padded together)")
    w("for reference. The seed's and the peers' figures were not measured here: the seed's are from another")
    w("machine (8 cores, ARM64), the peers' from PEERS.md (this kind of machine, another day).")
    w("")
    w("| texts | nnhost HTTP p50 / p99 ms | raw ORT p50 ms | seed, another machine (p50 ms) | seed-like server here, PEERS.md (p50 / p99 ms) | TEI 1.9.3, PEERS.md (p50 / p99 ms) | other load |")
    w("|---|---|---|---|---|---|---|")
    for n, (raw, web) in r["seed"].items():
        sl, tei = SEED_LIKE[n], TEI[n]
        w(f"| {n} | {f(web['p50_ms'])} / {f(web['p99_ms'])} | {f(raw['p50_ms'])} | {SEED_FIGURES[n]} | "
          f"{sl[0]}{' / ' + sl[1] if sl[1] else ''} | {tei[0]}{' / ' + tei[1] if tei[1] else ''} | {other_cell([raw, web])} |")
    w("")

    # --- 3. concurrency
    best = max(r["ceiling"].items(), key=lambda kv: kv[1]["texts_per_s"])
    w("## 3. Concurrency: one short text per request")
    w("")
    w("C connections in a closed loop, 6 s after a 1–1.5 s warm-up per row, interleaved with the raw ORT runs of")
    w(f"the second table (batches of the same text, 4 s each). \"of ceiling\" = req/s ÷ the best raw texts/s "
      f"(batch {best[0]}: {best[1]['texts_per_s']:.0f}).")
    w("")
    w("| connections | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | of ceiling | nnhost / client CPU (cores) | other load |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for c in sorted(r["conc"]):
        x = r["conc"][c]
        w(f"| {c} | {x['req_per_s']:.0f} | {f(x['p50_ms'])} | {f(x['p90_ms'])} | {f(x['p99_ms'])} | {f(x['max_ms'])} | "
          f"{x['errors']} | {100 * x['req_per_s'] / best[1]['texts_per_s']:.0f}% | "
          f"{x['cpu']['server']:.2f} / {x['cpu']['client']:.2f} | {x['cpu']['other']:.2f} |")
    w(f"| TEI 1.9.3 at 32 (PEERS.md, wrk) | {TEI_32[0]} | {TEI_32[1]} | | {TEI_32[2]} | | | | | |")
    if r.get("wrk32"):
        k = r["wrk32"]
        w(f"| 32, `wrk -t1 -c32` cross-check | {k['req_per_s']:.0f} | {f(k['p50_ms'])} | {f(k['p90_ms'])} | "
          f"{f(k['p99_ms'])} | | {k['errors']} | {100 * k['req_per_s'] / best[1]['texts_per_s']:.0f}% | "
          f"{k['cpu']['server']:.2f} / {k['cpu']['client']:.2f} | {k['cpu']['other']:.2f} |")
    w("")
    w("Raw ONNX Runtime ceiling (same text repeated, default options):")
    w("")
    w("| batch | p50 ms per batch | texts/s | PEERS.md, sequential (texts/s) | other load |")
    w("|---|---|---|---|---|")
    for batch, x in sorted(r["ceiling"].items()):
        w(f"| {batch} | {f(x['p50_ms'])} | {x['texts_per_s']:.0f} | {PEERS_RAW['sequential'].get(batch, '')} | {x['cpu']['other']:.2f} |")
    w("")
    if plot_note:
        w(f"_{plot_note}_")
    else:
        w(f"![throughput and latency vs concurrency]({png.name})")
    w("")

    # --- 4. options
    w("## 4. CPU provider options (raw ONNX Runtime)")
    w("")
    w("`nnhost bench ort` with one option changed from the defaults, at batch 1 and batch 32 of the short text.")
    w("Three passes (forward, backward, forward), 1.5 s per run; the samples of the passes that other processes")
    w("left alone (≤ 0.3 cores; all passes when none did) are merged. texts/s = batch ÷ mean time per run.")
    w("")
    w("| options | batch 1: p50 ms | batch 1: texts/s | batch 32: p50 ms | batch 32: texts/s | texts/s vs defaults (b1 / b32) | PEERS.md (b1 / b32 texts/s) | other load |")
    w("|---|---|---|---|---|---|---|---|")
    tps, used = {}, {}
    for name, _ in OPTION_SETS:
        for batch in (1, 32):
            used[(name, batch)] = undisturbed(r["opts"][(name, batch)])
            tps[(name, batch)] = batch / (stats(merged(used[(name, batch)]))["mean"] / 1e3)
    default_name = OPTION_SETS[0][0]
    for name, extra in OPTION_SETS:
        cells = []
        runs_all = []
        for batch in (1, 32):
            runs = used[(name, batch)]
            runs_all += runs
            st = stats(merged(runs))
            cells += [f(st["p50"]), f"{tps[(name, batch)]:.0f}"]
        cells.append(" / ".join(f"{tps[(name, b_)] / tps[(default_name, b_)]:.2f}×" for b_ in (1, 32)))
        peers = ""
        if name.startswith("defaults"):
            peers = f"{PEERS_RAW['sequential'][1]} / {PEERS_RAW['sequential'][32]}"
        elif "parallel" in name:
            peers = f"{PEERS_RAW['parallel'][1]} / {PEERS_RAW['parallel'][32]}"
        flags = " ".join(extra) if extra else "(none)"
        w(f"| {name} `{flags}` | {' | '.join(cells)} | {peers} | {other_cell(runs_all)} |")
    w("")
    w("PEERS.md's raw figures were taken with Python's ONNX Runtime on another day and do not state the input")
    w(f"length (rows here are {first_ort['tokens_per_row']} tokens); compare rows within one table, not across sources.")
    w("")

    # --- summary computed from the tables above
    nm = r["no_model"]
    c32 = r["conc"].get(32)
    par = OPTION_SETS[2][0]
    w("## Reading the numbers")
    w("")
    w(f"- One short text: HTTP p50 is {f(ws['p50'])} ms against {f(rs['p50'])} ms for the bare `run` "
      f"(ratio {ratio:.2f}, a difference of {1e3 * (ws['p50'] - rs['p50']):+.0f} µs). HTTP, a fresh guest instance "
      f"and JSON without inference take {1e3 * nm['p50_ms']:.0f} µs at p50; the rest of the difference is on the "
      f"model path in the server (tokenizing, the queue's hand-offs between threads, pooling, and ONNX Runtime "
      f"running between requests rather than back to back).")
    if c32:
        w(f"- 32 connections: {c32['req_per_s']:.0f} req/s, {100 * c32['req_per_s'] / best[1]['texts_per_s']:.0f}% of the "
          f"raw batched ceiling ({best[1]['texts_per_s']:.0f} texts/s at batch {best[0]}), p99 {f(c32['p99_ms'])} ms; "
          f"PEERS.md's TEI figure is {TEI_32[0]} req/s, p99 {TEI_32[2]} ms (another day).")
    w(f"- The seed's execution options (parallel mode, 2 inter-op threads) run at "
      f"{tps[(par, 1)] / tps[(default_name, 1)]:.2f}× (batch 1) and {tps[(par, 32)] / tps[(default_name, 32)]:.2f}× "
      f"(batch 32) the defaults' throughput here.")
    w("")
    w("## Reproducing")
    w("")
    w("```")
    w("just bench                                   # everything above, ~4 minutes")
    w("target/release/nnhost bench ort --batch 32 --execution-mode parallel --inter-threads 2")
    w("target/release/nnhost bench http --url http://127.0.0.1:8080/v1/embeddings \\")
    w(f"    --body '{{\"model\":\"{MODEL}\",\"input\":\"{SHORT}\"}}' -c 32 --warmup 1 --duration 10")
    w("```")
    w("")
    w("Both tools print one JSON object (`--help` lists every flag; `--latencies-out FILE` writes each sample).")
    out.write_text("\n".join(lines) + "\n")


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
