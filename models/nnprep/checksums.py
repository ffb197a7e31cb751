"""sha256 checksums of a prepared folder, recorded in (and verified against) its nnhost.json."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST_FILE = "nnhost.json"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def hash_tree(folder: Path) -> dict[str, str]:
    """{relative posix path: sha256} for every file below `folder` except nnhost.json, sorted."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST_FILE:
            out[p.relative_to(folder).as_posix()] = sha256_file(p)
    return out


def read_nnhost(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def verify_folder(folder: Path, required: tuple[str, ...] = ("onnx/model.onnx",)) -> list[str]:
    """Problems found (empty list = the folder verifies).

    Every file listed in nnhost.json must exist with its recorded sha256, the `required`
    files must be listed, and no unlisted file may have been added.
    """
    meta = read_nnhost(folder)
    if meta is None:
        return [f"{folder / MANIFEST_FILE} missing or not valid JSON"]
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        return [f"{MANIFEST_FILE} has no 'files' checksums"]
    problems = [f"{r} not recorded in {MANIFEST_FILE}" for r in required if r not in files]
    for rel, want in sorted(files.items()):
        p = folder / rel
        if not p.is_file():
            problems.append(f"{rel} missing")
        elif sha256_file(p) != want:
            problems.append(f"{rel} checksum mismatch")
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and p.name != MANIFEST_FILE and rel not in files:
            problems.append(f"{rel} not listed in {MANIFEST_FILE}")
    return problems
