import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(MODELS))  # nnprep
sys.path.insert(0, str(Path(__file__).resolve().parent))  # reference

PREPARED = MODELS / "prepared"
CACHE = MODELS / "cache"
DEFAULT = "all-MiniLM-L6-v2"


def assert_weights_beside(graph: Path, min_weights_bytes: int = 1_000_000) -> None:
    """The graph small, its weights in their own file (ONNX Runtime maps that file rather than
    copying the weights out of the protobuf for each session: nnprep/onnx_file.py), as readable
    as the graph."""
    from nnprep.onnx_file import weights_path

    data = weights_path(graph)
    assert data.is_file(), f"{data.name} missing"
    assert graph.stat().st_size < 1_000_000 and data.stat().st_size > min_weights_bytes, \
        (graph.stat().st_size, data.stat().st_size)
    assert data.stat().st_mode & 0o777 == graph.stat().st_mode & 0o777, "the weights as readable as the graph"


def ort_session(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def prepared_dir() -> Path:
    d = PREPARED / DEFAULT
    if not (d / "nnhost.json").is_file():
        pytest.skip(f"{d} is not prepared; run: .venv/bin/python models/prepare.py")
    return d


@pytest.fixture(scope="session")
def manifest():
    from nnprep.manifest import load_manifest

    return load_manifest(MODELS / "manifests" / f"{DEFAULT}.toml")


@pytest.fixture(scope="session")
def source_dir(manifest) -> Path:
    """The original HF folder (model.safetensors ...) from the download cache; never downloads."""
    from nnprep.errors import PrepError
    from nnprep.fetch import fetch_source

    try:
        folder, _ = fetch_source(manifest, CACHE, download=False, log=lambda _m: None)
    except PrepError as e:
        pytest.skip(f"source weights not cached ({e})")
    return folder
