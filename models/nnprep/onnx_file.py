"""Writing a prepared graph: the graph in `NAME.onnx`, its weights beside it in `NAME.onnx.data`."""
from __future__ import annotations

from pathlib import Path

import onnx


def weights_path(path: Path) -> Path:
    """Where the weights of the graph at `path` are kept."""
    return path.with_name(path.name + ".data")


def save(model: onnx.ModelProto, path: Path) -> None:
    """Writes `model` to `path` with every tensor over 1 KiB in `weights_path(path)`.

    Why external data even under protobuf's 2 GB limit: ONNX Runtime maps an external
    weights file into memory and uses the tensors it does not repack (embedding tables)
    in place, while weights inside the protobuf are copied out of it, per session. The
    host keeps two sessions of each graph (`spinning = "when-idle"`); measured with the
    embedded default config (MiniLM, SmolLM2 int4, Gemma 3 8-bit, ORT 1.32), the
    server's RSS after a request to each model was 1.91 GB with weights inside the
    files and 1.41 GB with them beside (docs/PROVIDERS.md).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    data = weights_path(path)
    data.unlink(missing_ok=True)   # save_model appends to an existing external-data file
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    # onnx creates the weights file owner-only (0600); a server running as another user
    # must read it as it reads the graph.
    data.chmod(path.stat().st_mode & 0o777)


def stored_bytes(path: Path) -> int:
    """The graph's size on disk, weights included."""
    data = weights_path(path)
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)
