"""An independent float64 numpy BERT forward pass (HF BertModel semantics), used as the oracle."""
from __future__ import annotations

import math

import numpy as np

_erf = np.frompyfunc(math.erf, 1, 1)


def _ln(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _lin(x, W, prefix):
    return x @ W[prefix + ".weight"].astype(np.float64).T + W[prefix + ".bias"].astype(np.float64)


def bert_forward(W: dict, cfg: dict, input_ids, attention_mask, token_type_ids) -> np.ndarray:
    """last_hidden_state [B, S, H] for HF-named weights W (no 'bert.' prefix) and config.json `cfg`."""
    H, nh, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    eps, d = cfg.get("layer_norm_eps", 1e-12), cfg["hidden_size"] // cfg["num_attention_heads"]
    f = lambda k: W[k].astype(np.float64)  # noqa: E731
    B, S = input_ids.shape
    pos = np.arange(S)
    x = f("embeddings.word_embeddings.weight")[input_ids] + f("embeddings.position_embeddings.weight")[pos][None] \
        + f("embeddings.token_type_embeddings.weight")[token_type_ids]
    x = _ln(x, f("embeddings.LayerNorm.weight"), f("embeddings.LayerNorm.bias"), eps)
    ext = (1.0 - attention_mask[:, None, None, :].astype(np.float64)) * np.finfo(np.float64).min
    for i in range(L):
        p = f"encoder.layer.{i}."
        heads = lambda t: t.reshape(B, S, nh, d).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = (heads(_lin(x, W, p + "attention.self." + n)) for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + ext
        s = s - s.max(-1, keepdims=True)
        a = np.exp(s)
        a = a / a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(0, 2, 1, 3).reshape(B, S, H)
        x = _ln(_lin(ctx, W, p + "attention.output.dense") + x,
                f(p + "attention.output.LayerNorm.weight"), f(p + "attention.output.LayerNorm.bias"), eps)
        h = _lin(x, W, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)).astype(np.float64))
        x = _ln(_lin(h, W, p + "output.dense") + x,
                f(p + "output.LayerNorm.weight"), f(p + "output.LayerNorm.bias"), eps)
    return x


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float64)
    e = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return e / np.linalg.norm(e, axis=-1, keepdims=True)


def random_bert(seed=0, vocab=50, hidden=16, heads=4, layers=2, inter=32, positions=24):
    """A tiny random BERT (config, weights) to test the graph builder without real weights."""
    rng = np.random.default_rng(seed)
    cfg = {"model_type": "bert", "hidden_size": hidden, "num_attention_heads": heads, "num_hidden_layers": layers,
           "intermediate_size": inter, "max_position_embeddings": positions, "type_vocab_size": 2,
           "vocab_size": vocab, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}
    r = lambda *s: rng.normal(0, 0.5, size=s).astype(np.float32)  # noqa: E731
    W = {"embeddings.word_embeddings.weight": r(vocab, hidden),
         "embeddings.position_embeddings.weight": r(positions, hidden),
         "embeddings.token_type_embeddings.weight": r(2, hidden),
         "embeddings.LayerNorm.weight": 1 + r(hidden) * 0.1, "embeddings.LayerNorm.bias": r(hidden)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for n in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            W[p + n + ".weight"], W[p + n + ".bias"] = r(hidden, hidden), r(hidden)
        W[p + "intermediate.dense.weight"], W[p + "intermediate.dense.bias"] = r(inter, hidden), r(inter)
        W[p + "output.dense.weight"], W[p + "output.dense.bias"] = r(hidden, inter), r(hidden)
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            W[p + n + ".weight"], W[p + n + ".bias"] = 1 + r(hidden) * 0.1, r(hidden)
    return cfg, W
