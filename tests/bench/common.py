"""What the embedding benchmark's measuring (run.py) and reporting (report.py) halves share."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MODEL = "all-MiniLM-L6-v2"
SHORT = "The weather is lovely today."

OPTION_SETS = [
    ("defaults (sequential, intra = cores, spinning when idle)", []),
    ("spinning off", ["--spinning", "off"]),
    ("spinning always (ORT's default)", ["--spinning", "always"]),
    ("parallel mode, inter-op 2 (the seed's choice)", ["--execution-mode", "parallel", "--inter-threads", "2"]),
    ("intra-op 1", ["--intra-threads", "1"]),
    ("2 lanes: two 1-thread sessions, batches side by side", ["--lanes", "2"]),
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
