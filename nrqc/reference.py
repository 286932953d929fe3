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
    return ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])


def run_onnxruntime(model_path: str | Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort_session(model_path).run(None, inputs)
