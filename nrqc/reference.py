"""onnxruntime as the reference executor and the peer we measure against."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def ort_session(model_path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(_loadable(model_path), so, providers=["CPUExecutionProvider"])


def _loadable(model_path: str | Path):
    """The path, or the model's bytes with repeated node names made unique: ONNX allows
    them (some converters write them) but onnxruntime refuses such a file, and a node's
    name never changes what it computes."""
    import onnx

    model = onnx.load(str(model_path))
    names = [n.name for n in model.graph.node if n.name]
    if len(names) == len(set(names)):
        return str(model_path)
    seen: dict[str, int] = {}
    for node in model.graph.node:
        if node.name:
            k = seen.get(node.name, 0)
            seen[node.name] = k + 1
            if k:
                node.name = f"{node.name}__{k}"
    return model.SerializeToString()


def run_onnxruntime(model_path: str | Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort_session(model_path).run(None, inputs)


def manifest_constants(manifest: dict) -> dict[str, np.ndarray]:
    """The inputs a build bound with `--const` (manifest "constants"): no longer inputs of
    the artifact, still inputs of the source model that onnxruntime runs as the reference."""
    return {name: np.asarray(c["value"], dtype=c["dtype"]).reshape(c["shape"])
            for name, c in (manifest.get("constants") or {}).items()}
