"""Fast tests of the fused decoder graph (GroupQueryAttention etc., decoder_fused.py) on tiny random GGUFs,
against the float64 numpy reference: prefill, cached decode, ragged decode batches, shared-buffer mode."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from reference_decoder import forward, load_gguf, write_tiny_gguf

from nnprep import quantize
from nnprep.decoder_fused import KV_LAYOUT, build_fused_decoder_onnx
from nnprep.decoder import KV_LAYOUT_KEY, build_decoder_onnx
from nnprep.gguf_load import GGUFModel
from nnprep.verify_decoder import RaggedDecoder, ragged_mask

IDS = [5, 40, 7, 99, 120, 3, 66, 200, 17, 8, 150, 42]   # longer than the gemma window (4)
MAX_POSITIONS = 64


def _session(model: onnx.ModelProto):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


class Tiny:
    def __init__(self, tmp, arch, quantized=False):
        path = tmp / f"{arch}.gguf"
        # head_dim 16: GroupQueryAttention's rotary needs a multiple of 16
        write_tiny_gguf(path, arch, layers=6 if arch == "gemma3" else 2, head_dim=16 if arch == "llama" else None)
        g = GGUFModel(path)
        self.spec = s = g.spec
        self.model = build_fused_decoder_onnx(s, g.weights(), max_positions=MAX_POSITIONS, untie_lm_head=quantized)
        if quantized:
            self.model = quantize.quantize_weights(self.model, embedding=False, lm_head_bits=8)
        self.dec = RaggedDecoder(_session(self.model), s.num_layers, s.num_kv_heads, s.head_dim)
        self.meta, self.W = load_gguf(path)

    def ref(self, ids):
        return forward(self.meta, self.W, ids)


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def tiny(request, tmp_path_factory):
    return Tiny(tmp_path_factory.mktemp(request.param + "_fused"), request.param)


def close(got, want, rel=2e-4):
    assert np.abs(got - want).max() <= rel * np.abs(want).max(), float(np.abs(got - want).max())


def test_io_contract_and_ops(tiny):
    s, sess = tiny.spec, tiny.dec.sess
    ins = [(i.name, i.type, i.shape) for i in sess.get_inputs()]
    assert ins[:2] == [("input_ids", "tensor(int64)", ["batch_size", "sequence_length"]),
                       ("attention_mask", "tensor(int64)", ["batch_size", "total_sequence_length"])]
    assert ins[2] == ("past_key_values.0.key", "tensor(float)",
                      ["batch_size", s.num_kv_heads, "past_sequence_length", s.head_dim])
    assert len(ins) == 2 + 2 * s.num_layers                     # no position_ids
    outs = [(o.name, o.shape) for o in sess.get_outputs()]
    assert outs[0] == ("logits", ["batch_size", "logits_to_keep", s.vocab_size])
    assert [o[0] for o in outs[1:3]] == ["present.0.key", "present.0.value"] and len(outs) == 1 + 2 * s.num_layers
    props = {p.key: p.value for p in tiny.model.metadata_props}
    assert props[KV_LAYOUT_KEY] == KV_LAYOUT == "ragged"
    ops = [n.op_type for n in tiny.model.graph.node]
    assert ops.count("GroupQueryAttention") == s.num_layers and "SkipSimplifiedLayerNormalization" in ops
    windows = {int(n.name.rsplit("_", 1)[1]): {a.name: a.i for a in n.attribute}.get("local_window_size")
               for n in tiny.model.graph.node if n.op_type == "GroupQueryAttention"}
    assert windows == {i: (s.sliding_window if i in s.sliding_layers else None) for i in range(s.num_layers)}


def test_naive_graph_says_left_padded(tmp_path):
    path = tmp_path / "l.gguf"
    write_tiny_gguf(path, "llama")
    g = GGUFModel(path)
    model = build_decoder_onnx(g.spec, g.weights())
    assert {p.key: p.value for p in model.metadata_props} == {KV_LAYOUT_KEY: "left_padded"}


def test_prefill_matches_numpy_reference(tiny):
    """gemma3: 12 tokens > window 4 on the sliding layers, qk-norm, embedding scale, sandwich norms."""
    want = tiny.ref(IDS)
    for n in (1, 3, 5, len(IDS)):
        got, present = tiny.dec.run(IDS[:n])
        close(got[0], want[n - 1])
        assert present["past_key_values.0.key"].shape == (1, tiny.spec.num_kv_heads, n, tiny.spec.head_dim)


def test_cached_decode_equals_full_prefill(tiny):
    want = tiny.ref(IDS)
    logits, past = tiny.dec.run(IDS[:3])
    for i in range(3, len(IDS)):
        logits, past = tiny.dec.run(IDS[i:i + 1], past=past)
        close(logits[0], want[i])


def _cache_of(tiny, rows, width):
    """Prefill each row alone (batch 1) and place its cache right-padded into a [B, kvh, width, d] batch."""
    dec = tiny.dec
    past = dec.empty_past(len(rows), width)
    for b, ids in enumerate(rows):
        _, p = dec.run(ids)
        for k, v in p.items():
            past[k][b, :, :len(ids)] = v[0]
    return past


def test_ragged_decode_batch_equals_each_row_alone(tiny):
    rows = [IDS, IDS[:4], IDS[2:9]]
    lengths = np.array([len(r) for r in rows])
    past = _cache_of(tiny, rows, lengths.max())
    new = [[9, 11], [23, 5], [77, 1]]
    for step in range(2):
        logits, past = tiny.dec.run([[t[step]] for t in new], lengths=lengths, past=past)
        lengths = lengths + 1
        for b, r in enumerate(rows):
            close(logits[b], tiny.ref(r + new[b][:step + 1])[-1])


def test_right_padded_batched_prefill(tiny):
    """Nice-to-have: a prompt batch with right padding; logits come from each row's last real token."""
    short = IDS[:5]
    ids = [IDS, short + [0] * (len(IDS) - len(short))]
    logits, past = tiny.dec.run_mask(ids, ragged_mask([len(IDS), len(short)], len(IDS)), tiny.dec.empty_past(2))
    close(logits[0], tiny.ref(IDS)[-1])
    close(logits[1], tiny.ref(short)[-1])
    logits, _ = tiny.dec.run([[9], [9]], lengths=[len(IDS), len(short)], past=past)
    close(logits[1], tiny.ref(short + [9])[-1])


def test_shared_buffer_equals_normal_mode(tiny):
    dec, cap = tiny.dec, 24
    # batch 1: prefill into the buffer, then decode steps in place
    cache = dec.shared_cache(1, cap)
    shared = [dec.run_shared([IDS[:6]], ragged_mask([6], 6), cache)]
    normal_logits, past = dec.run(IDS[:6])
    normal = [normal_logits]
    for i in range(6, len(IDS)):
        shared.append(dec.run_shared([IDS[i:i + 1]], ragged_mask([i + 1], i + 1), cache))
        logits, past = dec.run(IDS[i:i + 1], past=past)
        normal.append(logits)
    for a, b in zip(shared, normal):
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()
    key = cache["past_key_values.0.key"].numpy()
    assert np.array_equal(key[:, :, :len(IDS)], past["past_key_values.0.key"]) and not key[:, :, len(IDS):].any()

    # ragged batch in one buffer; the mask may be as wide as the longest row or the whole capacity
    rows = [IDS, IDS[:4]]
    lengths = np.array([len(r) for r in rows])
    cache = dec.shared_cache(2, cap)
    for k, v in _cache_of(tiny, rows, lengths.max()).items():
        buf = cache[k].numpy()   # a numpy view of the bound buffer
        buf[:, :, :v.shape[2]] = v
    for step, width in enumerate((lengths.max() + 1, cap)):
        logits = dec.run_shared([[9 + step], [9 + step]], ragged_mask(lengths + 1, width), cache)
        lengths = lengths + 1
        for b, r in enumerate(rows):
            close(logits[b], tiny.ref(r + [9, 10][:step + 1])[-1])


def test_quantized_fused_graph_runs_and_stays_close(tmp_path):
    t = Tiny(tmp_path, "llama", quantized=True)
    ops = {n.op_type for n in t.model.graph.node}
    assert {"MatMulNBits", "GroupQueryAttention"} <= ops
    assert {p.key: p.value for p in t.model.metadata_props}[KV_LAYOUT_KEY] == "ragged"
    got, _ = t.dec.run(IDS)
    want = t.ref(IDS)[-1]
    cos = float(got[0] @ want / np.linalg.norm(got[0]) / np.linalg.norm(want))
    assert cos > 0.9, cos


def test_chunked_prefill_batch1(tiny):
    """A prompt on top of a non-empty cache (batch 1), in both modes."""
    want = tiny.ref(IDS)[-1]
    _, past = tiny.dec.run(IDS[:5])
    logits, _ = tiny.dec.run(IDS[5:], past=past)
    close(logits[0], want)
    cache = tiny.dec.shared_cache(1, 20)
    tiny.dec.run_shared([IDS[:5]], ragged_mask([5], 5), cache)
    close(tiny.dec.run_shared([IDS[5:]], ragged_mask([len(IDS)], len(IDS)), cache)[0], want)


def test_logits_to_keep_gives_every_positions_logits(tiny):
    """A scored prompt asks for the logits of its last N positions (batch 1, on top of a cache too)."""
    want = tiny.ref(IDS)
    sess, keep = tiny.dec.sess, lambda n: {"logits_to_keep": np.array([n], np.int64)}
    past = tiny.dec.empty_past(1)
    out = sess.run(None, {"input_ids": np.array([IDS[:5]]), "attention_mask": np.ones((1, 5), np.int64), **past,
                          **keep(5)})
    assert out[0].shape == (1, 5, tiny.spec.vocab_size)
    for i in range(5):
        close(out[0][0, i], want[i])
    past = {n.replace("present.", "past_key_values."): v for n, v in zip(tiny.dec.outputs[1:], out[1:])}
    out = sess.run(None, {"input_ids": np.array([IDS[5:]]), "attention_mask": np.ones((1, len(IDS)), np.int64),
                          **past, **keep(len(IDS) - 5)})
    for i in range(5, len(IDS)):
        close(out[0][0, i - 5], want[i])
