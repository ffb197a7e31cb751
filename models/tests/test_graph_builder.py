"""Fast tests of the BERT graph builder on a tiny random model (no real weights needed)."""
import numpy as np
import onnx
import pytest

from conftest import ort_session
from reference import bert_forward, random_bert

from nnprep import bert
from nnprep.errors import PrepError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg, W = random_bert()
    model = bert.build_bert_onnx(cfg, W)
    path = tmp_path_factory.mktemp("tiny") / "model.onnx"
    onnx.save_model(model, str(path))
    return cfg, W, model, ort_session(path)


def _feeds(ids, mask, types=None):
    ids = np.array(ids, dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.array(mask, dtype=np.int64),
            "token_type_ids": np.zeros_like(ids) if types is None else np.array(types, dtype=np.int64)}


def test_io_contract(tiny):
    _, _, model, sess = tiny
    assert model.opset_import[0].version == 17
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    for i in sess.get_inputs():
        assert i.type == "tensor(int64)" and i.shape == ["batch_size", "sequence_length"]
    (out,) = sess.get_outputs()
    assert (out.name, out.type, out.shape) == ("last_hidden_state", "tensor(float)", ["batch_size", "sequence_length", 16])


def test_positions_are_a_slice_not_range(tiny):
    ops = {n.op_type for n in tiny[2].graph.node}
    assert "Slice" in ops and "Range" not in ops


def test_matches_numpy_reference(tiny):
    cfg, W, _, sess = tiny
    f = _feeds([[1, 5, 7, 9, 2, 0, 0], [1, 3, 4, 8, 11, 13, 2]],
               [[1, 1, 1, 1, 1, 0, 0], [1] * 7], [[0, 0, 0, 1, 1, 0, 0], [0] * 7])
    got = sess.run(None, f)[0]
    want = bert_forward(W, cfg, f["input_ids"], f["attention_mask"], f["token_type_ids"])
    m = f["attention_mask"].astype(bool)
    assert np.abs(got[m] - want[m]).max() <= 1e-4


def test_padding_invariance_and_no_nan(tiny):
    _, _, _, sess = tiny
    single = sess.run(None, _feeds([[1, 5, 7, 2]], [[1, 1, 1, 1]]))[0]
    padded = sess.run(None, _feeds([[1, 5, 7, 2, 0, 0, 0, 0, 0]], [[1, 1, 1, 1, 0, 0, 0, 0, 0]]))[0]
    assert np.isfinite(padded).all()
    assert np.abs(padded[0, :4] - single[0]).max() <= 1e-5
    # a fully masked row must not produce NaN either
    empty = sess.run(None, _feeds([[0, 0, 0]], [[0, 0, 0]]))[0]
    assert np.isfinite(empty).all()


def test_rejects_unsupported_configs():
    cfg, W = random_bert()
    with pytest.raises(PrepError, match="hidden_act"):
        bert.build_bert_onnx({**cfg, "hidden_act": "relu"}, W)
    W2 = dict(W)
    del W2["encoder.layer.1.output.dense.bias"]
    with pytest.raises(PrepError, match="encoder.layer.1.output.dense.bias"):
        bert.build_bert_onnx(cfg, W2)


def test_saved_with_its_weights_beside_it(tiny, tmp_path):
    """The prepared layout: the graph small, its weights in model.onnx.data (as readable as the
    graph), and ONNX Runtime finds them there: the same outputs as the graph held in memory."""
    from nnprep import onnx_file

    _, _, model, sess = tiny
    def copy():   # saving moves the weights out of the proto it is given
        saved = onnx.ModelProto()
        saved.CopyFrom(model)
        return saved

    path = tmp_path / "onnx" / "model.onnx"
    onnx_file.save(copy(), path)
    data = onnx_file.weights_path(path)
    graph = onnx.load(str(path), load_external_data=False)
    inside = [t.name for t in graph.graph.initializer
              if t.data_location != onnx.TensorProto.EXTERNAL and t.ByteSize() > 1024]
    assert inside == [] and data.stat().st_size > 0
    assert onnx_file.stored_bytes(path) == path.stat().st_size + data.stat().st_size
    assert data.stat().st_mode & 0o777 == path.stat().st_mode & 0o777
    first = data.stat().st_size
    onnx_file.save(copy(), path)   # again: the weights file is replaced, not appended to
    assert data.stat().st_size == first
    feeds = _feeds([[1, 7, 8, 2]], [[1, 1, 1, 1]])
    np.testing.assert_array_equal(ort_session(path).run(None, feeds)[0], sess.run(None, feeds)[0])
