"""The zoo's CRNN VAD in bam-reparam (binary conv front end with learned widths, GRU with a
learned hidden width): one epoch of `train` on a tiny corpus, `export_checkpoint` slices the
GRU to ⌈K⌉ units, and onnxruntime running the file written to disk (in a fresh process)
matches the PyTorch model of the checkpoint; `--frames` exports the same weights for another
window length.

The full run (1,000 synthesized windows, 60 epochs, compile and profile on three targets) is
the documented command in docs/training.md ("Recurrent VADs"), not a test: each training run
is about 3 min of CPU (35 min of wall time on the shared 2-core host), each target's compile
and profile minutes more."""
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from nrqc.data.corpus import split_indices, write_corpus
from nrqc.errors import NrqcError
from nrqc.training.checkpoint import load_checkpoint, model_from_checkpoint
from nrqc.training.onnx_export import export_checkpoint, run_onnx, with_window
from nrqc.training.slicing import slice_input
from nrqc.training.trainer import TrainConfig, train

FRAMES, BANDS, HIDDEN = 20, 16, 32

_ORT = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
np.save(sys.argv[3], s.run(None, {s.get_inputs()[0].name: np.load(sys.argv[2])})[0])
"""


def _tiny_vad_corpus(path, n=24, seed=0):
    """Speech frames raise the energy of the lowest bands: a task one epoch can start on."""
    rng = np.random.default_rng(seed)
    speech = rng.random((n, FRAMES)) < 0.5
    feats = rng.normal(size=(n, FRAMES, BANDS)) + 2.0 * speech[..., None] * (np.arange(BANDS) < 6)
    write_corpus(path, "vad", feats.astype(np.float32), speech.astype(np.float32), split_indices(n, seed),
                 {"kind": "synthesized", "generator": "test: Gaussian bands, louder low bands in speech frames"})


def test_crnn_bam_reparam_exports_the_sliced_gru_and_onnxruntime_matches_torch(tmp_path):
    _tiny_vad_corpus(tmp_path / "data")
    # budget 0 and a fast lr_k: every K falls by about 2 units per step, so one epoch (5
    # batches) certainly leaves the GRU with fewer than its 32 units.
    cfg = TrainConfig("vad", "bam-reparam", arch="vad_crnn", epochs=1, batch_size=4, budget_macs=0.0, lr_k=1.0)
    r = train(cfg, tmp_path / "run", tmp_path / "data", progress=False)
    widths = r["complexity"]["widths"]
    assert set(widths) == {"bands", "conv1", "conv2", "gru", "head1"}
    assert widths["gru"] < HIDDEN and widths["conv2"] < 32 and widths["bands"] < BANDS

    summary = export_checkpoint(str(tmp_path / "run" / "checkpoint.pt"), str(tmp_path / "crnn.onnx"))
    model = onnx.load(str(tmp_path / "crnn.onnx"))
    (gru,) = [n for n in model.graph.node if n.op_type == "GRU"]
    attrs = {a.name: a.i for a in gru.attribute}
    assert attrs["hidden_size"] == widths["gru"]
    inits = {i.name: i for i in model.graph.initializer}
    w = inits[gru.input[1]]  # W [1, 3·H, C]: the sliced hidden width and the kept conv2 channels
    assert list(w.dims) == [1, 3 * widths["gru"], widths["conv2"]]
    assert summary["input"]["shape"] == [1, FRAMES, widths["bands"]]
    # both front-end convs are binary with int8 weights: two Greater thresholds, the int8 input
    assert [n.op_type for n in model.graph.node].count("Greater") == 2
    assert summary["first_layer"] == "int8" and summary["input"]["quantized_to"] == "int8"

    net = model_from_checkpoint(load_checkpoint(tmp_path / "run" / "checkpoint.pt")).eval()
    x = torch.randn(1, FRAMES, BANDS, generator=torch.Generator().manual_seed(3)) * 2
    with torch.no_grad():
        ref = net(x).numpy()
    np.save(tmp_path / "x.npy", slice_input(net, x).numpy())
    subprocess.run([sys.executable, "-c", _ORT, str(tmp_path / "crnn.onnx"), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True)
    got = np.load(tmp_path / "y.npy")
    assert got.shape == ref.shape == (1, FRAMES)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)

    # --frames: the same weights exported for a shorter window (less RAM on a Cortex-M)
    export_checkpoint(str(tmp_path / "run" / "checkpoint.pt"), str(tmp_path / "crnn8.onnx"), frames=8)
    x8 = slice_input(net, x[:, :8]).numpy()
    with torch.no_grad():
        ref8 = net(x[:, :8]).numpy()
    np.testing.assert_allclose(run_onnx(onnx.load(str(tmp_path / "crnn8.onnx")), x8), ref8, rtol=1e-5, atol=1e-5)


def test_frames_option_refuses_a_model_that_is_not_over_time(tmp_path):
    from nrqc.models import build

    with pytest.raises(NrqcError, match="--frames needs a frame-level model over time"):
        with_window(build("bam4", "float"), 50, "q.pt")
