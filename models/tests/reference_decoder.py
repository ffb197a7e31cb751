"""An independent float64 numpy forward pass of llama / gemma3 decoders, straight from a GGUF file.

Written from the model definitions, not from the graph builder: it reads the GGUF tensors itself
(gguf.quants.dequantize), keeps llama's Q/K in the GGUF's permuted layout and applies RoPE the way
llama.cpp does for that layout (adjacent pairs, "normal" mode) -- so a wrong un-permutation in the
converter shows up as a mismatch. Gemma 3 uses rotate-half ("neox") RoPE on unpermuted weights.
No KV cache, no padding: one sequence, logits for every position.
"""
from __future__ import annotations

import math

import numpy as np


def load_gguf(path):
    """(metadata dict, {name: float32 array in [out, in] orientation}) read with the gguf package."""
    import gguf
    from gguf.quants import dequantize

    r = gguf.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.ggml.")}
    W = {t.name: np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32) for t in r.tensors}
    return meta, W


def _rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _rope_pairs(x, pos, theta):
    """llama.cpp 'normal' RoPE: rotate (x[2j], x[2j+1]) by pos * theta^(-2j/d). x [S, h, d]."""
    d = x.shape[-1]
    ang = pos[:, None] * theta ** (-np.arange(0, d, 2) / d)[None, :]          # [S, d/2]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def _rope_halves(x, pos, theta):
    """'neox' RoPE: rotate (x[j], x[j+d/2])."""
    d = x.shape[-1]
    ang = pos[:, None] * theta ** (-np.arange(0, d, 2) / d)[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)


def forward(meta: dict, W: dict, ids) -> np.ndarray:
    """Logits [S, vocab] (float64) for token ids `ids` at positions 0..S-1."""
    arch = meta["general.architecture"]
    m = lambda k, default=None: meta.get(f"{arch}.{k}", default)  # noqa: E731
    H, L = m("embedding_length"), m("block_count")
    nh = m("attention.head_count")
    nkv = m("attention.head_count_kv", nh)
    d = m("attention.key_length", H // nh)
    eps = m("attention.layer_norm_rms_epsilon")
    f = lambda k: W[k].astype(np.float64)  # noqa: E731
    ids = np.asarray(ids)
    S = len(ids)
    pos = np.arange(S, dtype=np.float64)
    x = f("token_embd.weight")[ids]
    gemma = arch == "gemma3"
    if gemma:
        x = x * math.sqrt(H)
    window = m("attention.sliding_window")
    causal = np.tril(np.ones((S, S), dtype=bool))
    for i in range(L):
        p = f"blk.{i}."
        global_layer = (not gemma) or (i + 1) % 6 == 0
        theta = m("rope.freq_base", 10000.0) if global_layer else 10000.0
        h = _rms(x, f(p + "attn_norm.weight"), eps)
        q = (h @ f(p + "attn_q.weight").T).reshape(S, nh, d)
        k = (h @ f(p + "attn_k.weight").T).reshape(S, nkv, d)
        v = (h @ f(p + "attn_v.weight").T).reshape(S, nkv, d)
        if gemma:
            q = _rms(q, f(p + "attn_q_norm.weight"), eps)   # GGUF weights already include the +1
            k = _rms(k, f(p + "attn_k_norm.weight"), eps)
            q, k = _rope_halves(q, pos, theta), _rope_halves(k, pos, theta)
        else:
            q, k = _rope_pairs(q, pos, theta), _rope_pairs(k, pos, theta)
        allowed = causal.copy()
        if gemma and not global_layer:
            allowed &= (np.arange(S)[:, None] - np.arange(S)[None, :]) < window
        out = np.empty((S, nh, d))
        for head in range(nh):
            kv = head // (nh // nkv)
            sc = q[:, head] @ k[:, kv].T / math.sqrt(d)
            sc = np.where(allowed, sc, -np.inf)
            a = np.exp(sc - sc.max(-1, keepdims=True))
            out[:, head] = (a / a.sum(-1, keepdims=True)) @ v[:, kv]
        o = out.reshape(S, nh * d) @ f(p + "attn_output.weight").T
        if gemma:
            o = _rms(o, f(p + "post_attention_norm.weight"), eps)
        x = x + o
        h = _rms(x, f(p + "ffn_norm.weight"), eps)
        gate, up = h @ f(p + "ffn_gate.weight").T, h @ f(p + "ffn_up.weight").T
        if gemma:
            act = 0.5 * gate * (1 + np.tanh(math.sqrt(2 / math.pi) * (gate + 0.044715 * gate ** 3)))
        else:
            act = gate / (1 + np.exp(-gate))
        y = (act * up) @ f(p + "ffn_down.weight").T
        if gemma:
            y = _rms(y, f(p + "post_ffw_norm.weight"), eps)
        x = x + y
    x = _rms(x, f("output_norm.weight"), eps)
    head = f("output.weight") if "output.weight" in W else f("token_embd.weight")
    return x @ head.T


def write_tiny_gguf(path, arch: str, seed: int = 0, layers: int = 2, window: int = 4,
                    head_dim: int | None = None) -> dict:
    """A tiny random llama / gemma3 GGUF (F32 tensors, a byte-level or SentencePiece-style vocab)
    for fast tests of the converter without real weights. Returns the float32 weights written.
    `head_dim` overrides the head size (GroupQueryAttention's rotary needs a multiple of 16)."""
    import gguf

    rng = np.random.default_rng(seed)
    H, nh, nkv, d, inter = 32, 4, 2, 8, 64
    if arch == "gemma3":
        d = 32   # head_dim != hidden / heads, as in Gemma
    d = head_dim or d
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(H)
    w.add_feed_forward_length(inter)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0 if arch == "llama" else 1e6)
    if arch == "gemma3" or head_dim:
        w.add_key_length(d)
        w.add_value_length(d)
    if arch == "gemma3":
        w.add_sliding_window(window)
    # tokenizer: 256 byte tokens + a few merges (gpt2) or pieces (llama)
    if arch == "llama":
        from tokenizers.pre_tokenizers import ByteLevel

        alphabet = ByteLevel.alphabet()
        tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + sorted(alphabet)
        merges = ["a b", "ab c", "Ġ a"]
        tokens += ["ab", "abc", "Ġa"]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(tokens)
        w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
        w.add_token_merges(merges)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
    else:
        tokens = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{b:02X}>" for b in range(256)] + \
                 ["▁", "a", "b", "c", "ab", "abc", "▁a", "  ", "<start_of_turn>", "<end_of_turn>", "\n"]
        types = [3, 3, 3, 2] + [6] * 256 + [1] * 7 + [4, 3, 3, 4]
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_scores([0.0] * len(tokens))
        w.add_bos_token_id(2)
        w.add_eos_token_id(1)
        w.add_bool("tokenizer.ggml.add_bos_token", True)
        w.add_bool("tokenizer.ggml.add_space_prefix", False)
    V = len(tokens)
    r = lambda *s: rng.normal(0, 0.3, size=s).astype(np.float32)  # noqa: E731
    W = {"token_embd.weight": r(V, H), "output_norm.weight": 1 + r(H) * 0.1}
    for i in range(layers):
        p = f"blk.{i}."
        W[p + "attn_norm.weight"] = 1 + r(H) * 0.1
        W[p + "attn_q.weight"], W[p + "attn_k.weight"] = r(nh * d, H), r(nkv * d, H)
        W[p + "attn_v.weight"], W[p + "attn_output.weight"] = r(nkv * d, H), r(H, nh * d)
        W[p + "ffn_norm.weight"] = 1 + r(H) * 0.1
        W[p + "ffn_gate.weight"], W[p + "ffn_up.weight"], W[p + "ffn_down.weight"] = r(inter, H), r(inter, H), r(H, inter)
        if arch == "gemma3":
            W[p + "attn_q_norm.weight"], W[p + "attn_k_norm.weight"] = 1 + r(d) * 0.1, 1 + r(d) * 0.1
            W[p + "post_attention_norm.weight"], W[p + "post_ffw_norm.weight"] = 1 + r(H) * 0.1, 1 + r(H) * 0.1
    for name, value in W.items():
        w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return W
