"""The chat benchmark's peer: llama.cpp through `llama-cpp-python` (`just bench-peers`
installs it) on the very GGUF file a model was prepared from, at 1 stream and at N
sequences decoded together. `model` is chat.py's Model (name, text, bos)."""
from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "models" / "manifests"
CACHE = ROOT / "models" / "cache"


def llama_cpp_version() -> str | None:
    try:
        import llama_cpp
    except Exception:  # not installed, or its libllama.so does not load
        return None
    return getattr(llama_cpp, "__version__", "?")


def source_gguf(name: str) -> Path:
    """The GGUF file the prepared model was converted from: models/prepare.py keeps it in
    models/cache/sources/<wheel stem>/ (one wheel) or joined-<file>/ (a file split over wheels).
    Found read-only from the manifest and checked against its gguf_sha256."""
    sys.path.insert(0, str(ROOT / "models"))
    from nnprep.manifest import load_manifests

    manifest = next(m for m in load_manifests(MANIFESTS) if m.name == name)
    src, dec = manifest.source, manifest.decoder
    sources = CACHE / "sources"
    if src.local is not None:
        candidates = [(src.local / src.path if src.path else src.local) / dec.gguf]
    elif src.parts:
        candidates = [sources / f"joined-{src.join}" / dec.gguf]
    else:
        pkg, _, version = src.pypi.partition("==")
        stem = pkg.strip().replace("-", "_")
        candidates = sorted(sources.glob(f"{stem}-{version.strip()}-*/{dec.gguf}"))
    for path in candidates:
        if path.is_file():
            if dec.gguf_sha256:
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                if h.hexdigest() != dec.gguf_sha256.lower():
                    raise SystemExit(f"{path}: sha256 does not match the manifest's gguf_sha256")
            return path
    raise SystemExit(f"the GGUF of {name} is not in {sources}; run `just models` first")


class LlamaCpp:
    """llama.cpp on the source GGUF: greedy, `threads` threads, the same prompt tokens as the other paths.
    One stream: Llama.generate (what llama-cpp-python's completion API runs). Four streams: one
    context holding 4 sequences decoded together in one llama_batch per step, as llama-server's
    parallel slots do (llama-cpp-python's own server serves one request at a time)."""

    def __init__(self, model, new_tokens: int, threads: int, streams: int = 4):
        import llama_cpp

        self.lc = llama_cpp
        self.new_tokens = new_tokens
        self.gguf = source_gguf(model.name)
        self.llm = llama_cpp.Llama(model_path=str(self.gguf), n_ctx=1024, n_batch=512, n_threads=threads,
                                   n_threads_batch=threads, seed=0, verbose=False)
        self.ids = self.llm.tokenize(model.text.encode(), add_bos=model.bos, special=True)
        self.streams = streams
        self.multi = None
        try:
            self.multi = MultiSeq(llama_cpp, self.llm, streams, len(self.ids) + new_tokens + 8, threads)
        except Exception as e:  # an API difference between versions: report 1 stream only
            self.multi_error = f"{type(e).__name__}: {e}"

    def run(self) -> dict:
        llm = self.llm
        llm.reset()  # no prefix reuse from the previous round: prefill the whole prompt every time
        count = 0
        started = time.perf_counter()
        first = last = started
        for _ in llm.generate(self.ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
            last = time.perf_counter()
            if count == 0:
                first = last
            count += 1
            if count >= self.new_tokens:
                break
        rate = (count - 1) / (last - first)
        return {"ttft_ms": (first - started) * 1e3, "decode_tok_s": rate, "aggregate_tok_s": rate,
                "tokens": count, "prompt_tokens": len(self.ids)}

    def run_multi(self) -> dict | None:
        return self.multi.run(self.ids, self.new_tokens) if self.multi else None


class MultiSeq:
    """N sequences in one llama.cpp context: the N prompts prefilled in one batch, then one batch of N
    tokens per step; greedy (argmax of each sequence's logits)."""

    def __init__(self, lc, llm, n: int, per_seq: int, threads: int):
        self.lc, self.n, self.vocab = lc, n, llm.n_vocab()
        params = lc.llama_context_default_params()
        params.n_ctx = n * per_seq
        params.n_batch = max(512, n * per_seq)
        params.n_ubatch = 512
        params.n_seq_max = n
        params.n_threads = threads
        params.n_threads_batch = threads
        params.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as Llama(flash_attn=False), the 1-stream path
        self.model = llm.model  # keep a reference: the context must not outlive it
        self.ctx = lc.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise RuntimeError("llama_init_from_model failed")
        self.batch = lc.llama_batch_init(params.n_batch, 0, n)

    def _fill(self, items: list[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        for i, (token, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0], b.logits[i] = token, pos, 1, seq, logits
        b.n_tokens = len(items)

    def _argmax(self, index: int) -> int:
        ptr = self.lc.llama_get_logits_ith(self.ctx, index)
        return int(np.ctypeslib.as_array(ptr, shape=(self.vocab,)).argmax())

    def run(self, ids: list[int], new: int) -> dict:
        lc, n, ctx = self.lc, self.n, self.ctx
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        started = time.perf_counter()
        items = [(t, p, s, p == len(ids) - 1) for s in range(n) for p, t in enumerate(ids)]
        self._fill(items)
        if lc.llama_decode(ctx, self.batch) != 0:
            raise RuntimeError("llama_decode failed (prefill)")
        nxt = [self._argmax(len(ids) * (s + 1) - 1) for s in range(n)]
        first = time.perf_counter()
        pos = len(ids)
        for _ in range(new - 1):
            self._fill([(nxt[s], pos, s, True) for s in range(n)])
            if lc.llama_decode(ctx, self.batch) != 0:
                raise RuntimeError("llama_decode failed (decode)")
            nxt = [self._argmax(s) for s in range(n)]
            pos += 1
        done = time.perf_counter()
        rate = (new - 1) / (done - first)
        return {"ttft_ms": (first - started) * 1e3, "decode_tok_s": rate,
                "aggregate_tok_s": n * new / (done - started), "tokens": new, "prompt_tokens": len(ids)}
