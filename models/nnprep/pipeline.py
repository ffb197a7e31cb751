"""fetch -> convert -> write layout -> verify -> publish, for one manifest; plus the cache check."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable

from . import DECODER_GRAPHS, TOOL_VERSION
from .checksums import read_nnhost, verify_folder
from .errors import PrepError
from .fetch import fetch_source, require_files
from .layout import ONNX_PATH, publish, staging_dir, write_embedding_files, write_nnhost
from .manifest import DECODER_KINDS, Manifest


def _convert_bert(manifest: Manifest, src: Path, dst: Path, log) -> dict:
    from . import bert

    require_files(src, ("model.safetensors", "config.json", "tokenizer.json"))
    return bert.convert(src, dst / ONNX_PATH, log)


def _layout_bert(manifest: Manifest, src: Path, dst: Path, facts: dict, log) -> dict:
    write_embedding_files(src, dst, manifest.embedding, facts["dimensions"])
    return facts


def _verify_bert(manifest: Manifest, dst: Path, facts: dict, log) -> None:
    from .verify import verify_embedding

    verify_embedding(dst, manifest, facts["dimensions"], log=log)


def _convert_gguf(manifest: Manifest, src: Path, dst: Path, log) -> dict:
    from . import gguf_convert

    return gguf_convert.convert(manifest, src, dst, log)


def _layout_gguf(manifest: Manifest, src: Path, dst: Path, facts: dict, log) -> dict:
    from . import gguf_convert

    return {**facts, **gguf_convert.write_decoder_files(manifest, dst, facts)}


def _verify_gguf(manifest: Manifest, dst: Path, facts: dict, log) -> None:
    from .verify_decoder import verify_decoder

    verify_decoder(dst, manifest, facts, log=log)


@dataclasses.dataclass(frozen=True)
class Converter:
    kinds: tuple[str, ...]   # manifest kinds it produces
    convert: Callable        # (manifest, source folder, staging folder, log) -> facts
    layout: Callable         # (manifest, source folder, staging folder, facts, log) -> facts
    verify: Callable         # (manifest, staging folder, facts, log) -> None; raises PrepError


# converter name -> Converter
CONVERTERS: dict[str, Converter] = {
    "bert": Converter(("embedding",), _convert_bert, _layout_bert, _verify_bert),
    "gguf": Converter(DECODER_KINDS, _convert_gguf, _layout_gguf, _verify_gguf),
}


def recipe(manifest: Manifest) -> str:
    """Key of everything that determines the output; a change forces a rebuild."""
    data = {
        "tool": TOOL_VERSION,
        "kind": manifest.kind,
        "converter": manifest.converter,
        "source": manifest.source.as_json(),
        "embedding": dataclasses.asdict(manifest.embedding) if manifest.embedding else None,
    }
    if manifest.decoder is not None:   # (absent for embeddings, so their recipes did not change)
        data["decoder"] = dataclasses.asdict(manifest.decoder)
        if data["decoder"]["weight_bits"] == 4:   # absent at its default, so int4 recipes did not change
            del data["decoder"]["weight_bits"]
        data["generate"] = [dataclasses.asdict(c) for c in manifest.generate_checks]
        data["decoder_graphs"] = DECODER_GRAPHS
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def status(manifest: Manifest, out: Path) -> tuple[bool, str]:
    """(up to date?, reason) for the prepared folder of `manifest` under `out`."""
    folder = out / manifest.name
    if not folder.is_dir():
        return False, "not prepared"
    problems = verify_folder(folder)
    if problems:
        return False, "; ".join(problems[:3]) + (" ..." if len(problems) > 3 else "")
    meta = read_nnhost(folder) or {}
    if meta.get("name") != manifest.name or meta.get("recipe") != recipe(manifest):
        return False, "manifest or converter changed since it was prepared"
    return True, "ok"


def prepare(manifest: Manifest, out: Path, cache: Path, *, force: bool = False,
            log: Callable[[str], None] = print) -> str:
    """Prepare one model; returns 'cached' or 'prepared'."""
    if not force:
        ok, why = status(manifest, out)
        if ok:
            log("ok (cached)")
            return "cached"
        if why != "not prepared":
            log(f"rebuilding: {why}")
    if manifest.converter not in CONVERTERS:
        raise PrepError(f"{manifest.name}: unknown converter '{manifest.converter}' (known: {', '.join(CONVERTERS)})")
    conv = CONVERTERS[manifest.converter]
    if manifest.kind not in conv.kinds:
        raise PrepError(f"{manifest.name}: converter '{manifest.converter}' produces {'/'.join(conv.kinds)}, "
                        f"manifest says '{manifest.kind}'")

    t0 = time.monotonic()
    log(f"[1/4] fetch {manifest.source.describe()}")
    src, source_info = fetch_source(manifest, cache, log=_indent(log))
    out.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(out, manifest.name)
    try:
        log(f"[2/4] convert ({manifest.converter})")
        facts = conv.convert(manifest, src, tmp, _indent(log))
        log("[3/4] write layout")
        facts = conv.layout(manifest, src, tmp, facts, _indent(log))
        log("[4/4] verify")
        conv.verify(manifest, tmp, facts, _indent(log))
        meta = write_nnhost(tmp, manifest, source_info, facts, recipe(manifest))
        publish(tmp, out / manifest.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"prepared {out / manifest.name} ({len(meta['files'])} files) in {time.monotonic() - t0:.1f}s")
    return "prepared"


def _indent(log: Callable[[str], None]) -> Callable[[str], None]:
    return lambda msg: log("  " + msg)
