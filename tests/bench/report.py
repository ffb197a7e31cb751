"""docs/BENCHMARKS.md sections 1-4 and the concurrency plot, from run.py's measurements."""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common import MODEL, OPTION_SETS, SHORT, f, stats

if TYPE_CHECKING:
    from run import Bench

# Reference figures (not measured by this script).
SEED_FIGURES = {1: "193", 3: "~510", 5: "833"}  # the seed's own, 8-core ARM64
SEED_LIKE = {1: ("19.3", "32"), 3: ("39.3", ""), 5: ("55.6", "")}  # PEERS.md, this kind of machine
TEI = {1: ("7.7", "17"), 3: ("14.7", ""), 5: ("18.2", "")}
TEI_32 = (433, 74, 93)  # req/s, p50, p99 at 32 connections (wrk), PEERS.md
PEERS_RAW = {  # texts/s, PEERS.md
    "sequential": {1: "~190", 8: "~470", 32: "570-650", 64: "~680"},
    "parallel": {1: "~83", 8: "~200", 32: "240-330", 64: "~315"},
}


def ort_version(library: str) -> str:
    m = re.search(r"libonnxruntime\.so\.(\d+\.\d+\.\d+)", library)
    if m:
        return m.group(1)
    try:
        import importlib.metadata as md
        return md.version("onnxruntime")
    except Exception:  # noqa: BLE001
        return "?"


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
      f"spinning {options['spinning']}, optimization {options['optimization_level']}, "
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
    w("C connections in a closed loop, 6 s after a 1–1.5 s warm-up per row (32: the median of three rounds), interleaved with the raw ORT runs of")
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
    if r.get("rounds32"):
        w("32 connections in three rounds, each beside a raw batch-32 run (the table above shows the median round):")
        w("")
        w("| round | req/s | p99 ms | raw batch 32 texts/s | req/s ÷ that run | other load |")
        w("|---|---|---|---|---|---|")
        for i, (raw, web) in enumerate(r["rounds32"], 1):
            w(f"| {i} | {web['req_per_s']:.0f} | {f(web['p99_ms'])} | {raw['texts_per_s']:.0f} | "
              f"{web['req_per_s'] / raw['texts_per_s']:.2f} | {other_cell([raw, web])} |")
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
    w("left alone (≤ 0.3 cores; all passes when none did) are merged. texts/s = batch ÷ mean time per run")
    w("(× lanes for `--lanes`, whose lanes run at once; the server's `lanes` option, off by default: PROVIDERS.md).")
    w("")
    w("| options | batch 1: p50 ms | batch 1: texts/s | batch 32: p50 ms | batch 32: texts/s | texts/s vs defaults (b1 / b32) | PEERS.md (b1 / b32 texts/s) | other load |")
    w("|---|---|---|---|---|---|---|---|")
    tps, used = {}, {}
    for name, _ in OPTION_SETS:
        for batch in (1, 32):
            used[(name, batch)] = undisturbed(r["opts"][(name, batch)])
            lanes = used[(name, batch)][0]["options"].get("lanes", 1)  # lanes run at once
            tps[(name, batch)] = batch * lanes / (stats(merged(used[(name, batch)]))["mean"] / 1e3)
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
    par = next(name for name, _ in OPTION_SETS if name.startswith("parallel mode"))
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
    out.write_text("\n".join(lines) + "\n" + other_sections(out))


def other_sections(out: Path) -> str:
    """The sections the other bench scripts (chat.py, tenants.py) wrote between their markers:
    kept when this script alone reruns, so the page never loses them."""
    if not out.exists():
        return ""
    blocks = re.finditer(r"<!-- ([a-z]+)-bench:begin -->.*?<!-- \1-bench:end -->", out.read_text(), flags=re.S)
    return "".join("\n" + b.group(0) + "\n" for b in blocks)
