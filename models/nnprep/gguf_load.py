"""Read a GGUF file: metadata, the architecture hyper-parameters, and dequantized float32 weights.

Only the `gguf` package (llama.cpp's reader and its numpy dequantizers) is used; no torch.
Weights keep their GGUF names (`blk.N.attn_q.weight`, ...) and come out as numpy arrays in
PyTorch orientation: a linear layer is [out_features, in_features].

Architecture knowledge that the GGUF does not store is written down here:
  llama  : Q and K rows are stored permuted (llama.cpp's convert script interleaves the two RoPE
           halves of each head); `unpermute` restores Hugging Face's rotate-half layout.
  gemma3 : RMSNorm weights already include Gemma's "+1"; embeddings are scaled by sqrt(hidden);
           every 6th layer (5, 11, 17 ...) is global attention with RoPE base `rope.freq_base`,
           the others use a sliding window with RoPE base 10000 (unless the GGUF stores
           attention.sliding_window_pattern / rope.freq_base_swa, as newer converters do); attention scale 1/sqrt(head_dim)
           (query_pre_attn_scalar = head_dim for every Gemma 3 size except 27B).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import PrepError

GEMMA3_SLIDING_PATTERN = 6       # layers i with (i + 1) % 6 == 0 are global
GEMMA3_LOCAL_ROPE_BASE = 10000.0


@dataclass(frozen=True)
class DecoderSpec:
    """Hyper-parameters of a decoder-only transformer, as the graph builder needs them."""

    arch: str                       # "llama" | "gemma3"
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_eps: float
    rope_theta: float               # global (full attention) layers
    context_length: int             # as stored in the GGUF
    rope_theta_local: float | None = None
    rope_scaling: float = 1.0       # linear scaling factor of the global layers' RoPE (1 = none)
    sliding_window: int | None = None
    sliding_layers: tuple[int, ...] = ()
    embed_scale: float | None = None  # gemma: sqrt(hidden)
    qk_norm: bool = False
    sandwich_norm: bool = False       # gemma: post-attention and post-FFN norms
    activation: str = "silu"          # "silu" | "gelu_tanh"
    query_scale: float = 1.0          # softmax scale, 1/sqrt(head_dim)
    final_logit_softcap: float | None = None
    tied_embeddings: bool = True

    @property
    def kv_groups(self) -> int:
        return self.num_heads // self.num_kv_heads


class GGUFModel:
    """An opened GGUF file: `.meta` (scalars and short arrays), `.tokens` etc., `.spec`, `.weights()`."""

    def __init__(self, path: Path):
        try:
            import gguf
        except ImportError as e:  # pragma: no cover - requirements.txt has it
            raise PrepError("the 'gguf' package is missing; install models/requirements.txt") from e
        try:
            self.reader = gguf.GGUFReader(str(path), "r")
        except Exception as e:  # noqa: BLE001 - gguf raises bare ValueErrors
            raise PrepError(f"{path.name} is not a readable GGUF file ({e})") from None
        self.path = path
        self.meta: dict = {}
        self._arrays: dict[str, object] = {}
        for key, field in self.reader.fields.items():
            if key.startswith("tokenizer.ggml.") and key.rsplit(".", 1)[1] in ("tokens", "scores", "token_type", "merges"):
                self._arrays[key] = field  # decoded on demand (large)
                continue
            self.meta[key] = field.contents()
        self.arch = self.meta.get("general.architecture")
        self.spec = self._spec()

    # --- metadata -------------------------------------------------------------------------------
    def get(self, key: str, default=None):
        return self.meta.get(key, default)

    def need(self, key: str):
        if key not in self.meta:
            raise PrepError(f"{self.path.name}: GGUF metadata lacks '{key}'")
        return self.meta[key]

    def array(self, name: str) -> list | None:
        """tokenizer.ggml.<name> (tokens, scores, token_type, merges) or None."""
        field = self._arrays.get(f"tokenizer.ggml.{name}")
        return None if field is None else field.contents()

    def _spec(self) -> DecoderSpec:
        a = self.arch
        if a not in ("llama", "gemma3"):
            raise PrepError(f"{self.path.name}: architecture '{a}' is not supported (supported: llama, gemma3)")
        k = lambda name, default=None: self.meta.get(f"{a}.{name}", default)  # noqa: E731
        hidden = int(self.need(f"{a}.embedding_length"))
        heads = int(self.need(f"{a}.attention.head_count"))
        kv_heads = int(k("attention.head_count_kv", heads))
        head_dim = int(k("attention.key_length", hidden // heads))
        if int(k("attention.value_length", head_dim)) != head_dim:
            raise PrepError(f"{self.path.name}: key and value head sizes differ; not supported")
        if int(k("rope.dimension_count", head_dim)) != head_dim:
            raise PrepError(f"{self.path.name}: partial rotary embeddings are not supported")
        if heads % kv_heads:
            raise PrepError(f"{self.path.name}: {heads} heads are not a multiple of {kv_heads} KV heads")
        scaling, factor = k("rope.scaling.type"), float(k("rope.scaling.factor", 1.0) or 1.0)
        if scaling not in (None, "none", "linear") and factor != 1.0:
            raise PrepError(f"{self.path.name}: RoPE scaling '{scaling}' is not supported (only linear)")
        names = {t.name for t in self.reader.tensors}
        vocab = int(k("vocab_size", 0) or len(self._arrays["tokenizer.ggml.tokens"].data))
        layers = int(self.need(f"{a}.block_count"))
        common = dict(
            arch=a, vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
            num_kv_heads=kv_heads, head_dim=head_dim, intermediate_size=int(self.need(f"{a}.feed_forward_length")),
            rms_eps=float(self.need(f"{a}.attention.layer_norm_rms_epsilon")),
            rope_theta=float(k("rope.freq_base", 10000.0)), rope_scaling=factor if scaling == "linear" else 1.0,
            context_length=int(k("context_length", 2048)), query_scale=1.0 / math.sqrt(head_dim),
            tied_embeddings="output.weight" not in names,
            final_logit_softcap=(float(k("final_logit_softcapping")) if k("final_logit_softcapping") else None),
        )
        if k("attn_logit_softcapping"):
            raise PrepError(f"{self.path.name}: attention logit soft-capping is not supported")
        if a == "llama":
            return DecoderSpec(**common)
        window = int(self.need("gemma3.attention.sliding_window"))
        pattern = k("attention.sliding_window_pattern", GEMMA3_SLIDING_PATTERN)   # newer GGUFs store it
        if isinstance(pattern, list):      # one bool per layer: sliding?
            sliding = tuple(i for i, is_swa in enumerate(pattern) if is_swa)
        else:
            sliding = tuple(i for i in range(layers) if (i + 1) % int(pattern) != 0)
        return DecoderSpec(
            **common, rope_theta_local=float(k("rope.freq_base_swa", GEMMA3_LOCAL_ROPE_BASE)), sliding_window=window,
            sliding_layers=sliding,
            embed_scale=math.sqrt(hidden), qk_norm=True, sandwich_norm=True, activation="gelu_tanh",
        )

    # --- tensors --------------------------------------------------------------------------------
    def weights(self, log: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
        """Every tensor dequantized to float32 (PyTorch orientation); llama Q/K un-permuted."""
        from gguf.quants import dequantize

        out: dict[str, np.ndarray] = {}
        kinds: dict[str, int] = {}
        for t in self.reader.tensors:
            try:
                w = dequantize(t.data, t.tensor_type)
            except NotImplementedError:
                raise PrepError(f"{self.path.name}: tensor {t.name} has type {t.tensor_type.name}, "
                                f"which gguf cannot dequantize") from None
            out[t.name] = np.ascontiguousarray(w, dtype=np.float32)
            kinds[t.tensor_type.name] = kinds.get(t.tensor_type.name, 0) + 1
        if log:
            log("dequantized " + ", ".join(f"{n}×{c}" for c, n in sorted(((c, n) for n, c in kinds.items()),
                                                                          reverse=True)) + " tensors to float32")
        s = self.spec
        if s.arch == "llama":
            for i in range(s.num_layers):
                q, kk = f"blk.{i}.attn_q.weight", f"blk.{i}.attn_k.weight"
                out[q] = unpermute(out[q], s.num_heads)
                out[kk] = unpermute(out[kk], s.num_kv_heads)
        return out


def unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation ([h, 2, d/2] -> [h, d/2, 2] per head) of a [out, in] weight."""
    out, inp = w.shape
    return np.ascontiguousarray(w.reshape(n_heads, out // n_heads // 2, 2, inp).swapaxes(1, 2).reshape(out, inp))
