"""Issue 13, item 4: layers are found by graph structure, never by node name.

One small BAM model (float first conv -> Heaviside -> MaxPool -> int8 conv -> Heaviside ->
MaxPool -> int8 conv -> Heaviside -> global max -> dense head) as nrqc's own exporter writes
it, and as foreign writers write the same computation: onnx.helper with every node name
empty, with duplicate node names, torch.onnx.export with the TorchScript exporter and with
dynamo=True, and onnxruntime's quantize_static QDQ output of its float twin. Each is
compiled with `nrqc compile` (whose check runs the library as written, in a fresh process,
against onnxruntime on the same file), run again from disk with `nrqc run`, compared with
onnxruntime, and its manifest must show the same kernels and bits as nrqc's own export,
with the binary layers' weights stored as int8.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests import binary_models as bm
from tests.conftest import run_cli

X_SHAPE = (1, 24, 16)  # [N, frames, bands], as nrqc export's "image" layout reads it


def _kernel_family(kernel) -> str:
    """nrqc:nrqc_bconv_int8_vnni_pack_2_orpool -> bconv_int8_pack_orpool: the kernel without
    its counter and without the timed strategy (vnni / lut / ... may win on another run)."""
    k = str(kernel)
    if not k.startswith("nrqc:"):
        return "tvm"
    k = re.sub(r"_\d+", "", k[len("nrqc:nrqc_"):])
    return re.sub(r"_(vnni|lut|amx|masked|bitserial)(?=_)", "", k)


def _signature(manifest, ops=("Conv", "MaxPool", "GlobalMaxPool", "ReduceMax", "MatMul", "Gemm")):
    return [(layer["op"].replace("GlobalMaxPool", "ReduceMax").replace("Gemm", "MatMul"),
             _kernel_family(layer["kernel"]), layer["act_bits"], layer["weight_bits"], layer["float_reason"] is None)
            for layer in manifest["layers"] if layer["op"] in ops]


def _compile(path: Path, out: Path, check=True) -> dict:
    """`nrqc compile` in this process (its check runs the written library in a fresh one)."""
    from nrqc.compiler import CompileOptions, compile_model

    compile_model(path, "x86", out, CompileOptions(check=check), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    if check:
        assert manifest["check"]["ran"] and manifest["check"]["passed"], manifest["check"]
        assert manifest["check"]["where"] == "fresh process"
    assert not any("not found" in str(layer["float_reason"]) for layer in manifest["layers"]), manifest["layers"]
    return manifest


def _run_from_disk(out: Path, ref_model: Path, tmp: Path, n_inputs=1, atol=1e-4):
    """`nrqc run` (a fresh process loading the written library) against onnxruntime, on
    another input than the compile's check."""
    from nrqc.reference import run_onnxruntime

    rng = np.random.default_rng(7)
    for i in range(n_inputs):
        x = rng.standard_normal(X_SHAPE).astype(np.float32)
        np.save(tmp / f"x{i}.npy", x)
        run_cli("run", out, "--input", f"x={tmp / f'x{i}.npy'}", "-o", tmp / f"y{i}.npy")
        got = np.load(tmp / f"y{i}.npy")
        ref = run_onnxruntime(ref_model, {"x": x})[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=atol, rtol=1e-4)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """nrqc's own export of the model, compiled: the manifest every writer must match."""
    tmp = tmp_path_factory.mktemp("nrqc_export")
    net = bm.nrqc_bam_net(frames=X_SHAPE[1], bands=X_SHAPE[2])
    path = bm.nrqc_export(net, tmp / "nrqc.onnx")
    inputs = [i.name for i in onnx.load(str(path)).graph.input]
    assert inputs == ["logmel"]
    # The foreign writers name the input "x"; so does this copy (input names are not layers).
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.input[:] = ["x" if i == "logmel" else i for i in node.input]
    model.graph.input[0].name = "x"
    path = tmp / "nrqc_x.onnx"
    onnx.save(model, str(path))
    manifest = _compile(path, tmp / "out")
    sig = _signature(manifest)
    # the model is a BAM model as nrqc builds it: first conv fused with threshold + pack,
    # two int8 binary convs, OR-pools, a global OR, the first dense layer on the bits
    assert [s[1] for s in sig] == ["fconv_threshold_pack_orpool", "fconv_threshold_pack_orpool",
                                   "bconv_int8_pack_orpool", "bconv_int8_pack_orpool", "bconv_int8_pack",
                                   "global_or", "binary_fc_float", "tvm"], sig
    assert manifest["weights_bytes_by_dtype"]["int8"] == (32 * 16 + 32 * 32) * 9
    return {"path": path, "manifest": manifest, "arrays": bm.exported_arrays(path), "tmp": tmp}


def test_onnx_helper_without_node_names(reference, tmp_path):
    path = bm.renamed(reference["path"], tmp_path / "unnamed.onnx", "empty")
    assert all(n.name == "" for n in onnx.load(str(path)).graph.node)
    manifest = _compile(path, tmp_path / "out")
    assert _signature(manifest) == _signature(reference["manifest"])
    assert manifest["weights_bytes_by_dtype"] == reference["manifest"]["weights_bytes_by_dtype"]
    # display names: op type and node index, one per layer
    names = [layer["name"] for layer in manifest["layers"]]
    assert names[0] == "Conv_1" and len(set(names)) == len(names), names
    _run_from_disk(tmp_path / "out", path, tmp_path)


def test_duplicate_node_names(reference, tmp_path):
    """All Conv nodes named "conv", all MaxPools "maxpool", ... onnxruntime refuses such a file
    ("two nodes with same node name"); nrqc's reference runner hands it the model with the
    repeated names made unique (names do not change what a node computes), so the compile's
    own check runs; the build is also compared with onnxruntime on the named file."""
    path = bm.renamed(reference["path"], tmp_path / "dup.onnx", "duplicate")
    assert [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"] == ["conv"] * 3
    manifest = _compile(path, tmp_path / "out")
    assert manifest["check"]["passed"], manifest["check"]
    assert _signature(manifest) == _signature(reference["manifest"])
    assert manifest["weights_bytes_by_dtype"] == reference["manifest"]["weights_bytes_by_dtype"]
    names = [layer["name"] for layer in manifest["layers"]]
    assert len(set(names)) == len(names) and names[0].startswith("conv ["), names
    assert len({layer["onnx_node"]["output"] for layer in manifest["layers"]}) == len(names)
    _run_from_disk(tmp_path / "out", reference["path"], tmp_path)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_torch_onnx_export(reference, tmp_path, dynamo):
    """(y > t).float() Heavisides and torch.fake_quantize_per_channel_affine int8 weights:
    both exporters write QuantizeLinear -> DequantizeLinear of the float weight (TorchScript
    routes the shared int8 zero point through an Identity node), Greater + Cast, MaxPool,
    ReduceMax, Gemm(transB=1)."""
    if dynamo:
        pytest.importorskip("onnxscript")
    module = bm.torch_bam_module(reference["arrays"])
    path = bm.torch_export(module, X_SHAPE, tmp_path / "torch.onnx", dynamo=dynamo)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("QuantizeLinear") == 2 and ops.count("Greater") == 3 and "Gemm" in ops, ops
    manifest = _compile(path, tmp_path / "out")
    assert _signature(manifest) == _signature(reference["manifest"])
    assert manifest["weights_bytes_by_dtype"] == reference["manifest"]["weights_bytes_by_dtype"]
    _run_from_disk(tmp_path / "out", path, tmp_path)


def test_onnxruntime_quantize_static_qdq(reference, tmp_path):
    """quantize_static (QDQ, per-channel int8 weights) of the float twin: weights arrive as
    DequantizeLinear(int8); every activation gets a Q/DQ pair. Those on the pooled {0,1}
    maps are exact (scale 1/255, zero point 0: 255 * s == 1 in float32) and those on the
    conv outputs before the comparison are a step function of the output, folded into the
    threshold: every conv and pool converts as in nrqc's own export."""
    pytest.importorskip("onnxruntime.quantization")
    module = bm.torch_bam_module(reference["arrays"], weight_quant="none")
    float_path = bm.torch_export(module, X_SHAPE, tmp_path / "float.onnx", dynamo=False)
    path = bm.ort_quantize_static(float_path, tmp_path / "qdq.onnx", X_SHAPE)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("QuantizeLinear") >= 6 and ops.count("DequantizeLinear") >= 10, ops
    manifest = _compile(path, tmp_path / "out")
    convs_pools = ("Conv", "MaxPool", "GlobalMaxPool", "ReduceMax")
    got, want = _signature(manifest, convs_pools), _signature(reference["manifest"], convs_pools)
    # the first conv's weights are int8 here too (quantize_static quantizes every weight), and
    # its input is QuantizeLinear -> DequantizeLinear (uint8, calibrated zero point): it becomes
    # the int8 x int8 conv (quantize fused into its load) emitting the same packed bits, with
    # its max-pool fused, where nrqc's own float-first export has the float conv kernel
    assert got[0] == ("Conv", "int8conv_int8_pack_orpool", 8, 8, True) and got[1][1] == got[0][1], (got, want)
    assert [g[0] for g in got[:2]] == [w[0] for w in want[:2]] and got[2:] == want[2:], (got, want)
    assert manifest["int8_input"]["dtype"] == "uint8" and manifest["check"]["int8_entry_point"]["passed"]
    first_dense = next(layer for layer in manifest["layers"] if layer["op"] == "Gemm")
    assert first_dense["act_bits"] == 1 and first_dense["weight_bits"] == 8
    assert str(first_dense["kernel"]).startswith("nrqc:nrqc_bconv_int8")  # int8 dense on the packed vector
    assert manifest["weights_bytes_by_dtype"]["int8"] >= reference["manifest"]["weights_bytes_by_dtype"]["int8"]
    assert "activation Q/DQ pair(s) read through" in " ".join(manifest["notes"])
    # the output is itself Q/DQ'd: one quantization step is the resolution of the reference
    y_scale = next(float(onnx.numpy_helper.to_array(i)) for i in onnx.load(str(path)).graph.initializer
                   if i.name == "y_scale")
    _run_from_disk(tmp_path / "out", path, tmp_path, atol=y_scale * 1.01)


def test_winograd_pool_fusion_without_names(tmp_path):
    """A float model's conv + ReLU + MaxPool fused into one Winograd kernel: the pool's layer
    entry is found from the conv's node (structure) with names or without."""
    named = bm.bam_model(tmp_path / "float.onnx", frames=24, bands=16, channels=(32, 32), head=16, float_model=True)
    unnamed = bm.renamed(named, tmp_path / "float_unnamed.onnx", "empty")
    sigs = []
    for p in (named, unnamed):
        manifest = _compile(p, tmp_path / f"out_{p.stem}")
        sigs.append([(layer["op"], str(layer["kernel"]), layer.get("fused_into") is not None)
                     for layer in manifest["layers"]])
    assert sigs[0] == sigs[1]
    assert ("MaxPool", "nrqc:nrqc_winograd_conv0", True) in sigs[1], sigs[1]


_M_MISSING = [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm") if not shutil.which(t)]


@pytest.mark.slow
@pytest.mark.skipif(bool(_M_MISSING), reason=f"Cortex-M toolchain/emulator missing: {', '.join(_M_MISSING)}")
def test_cortex_m4_unnamed_converts_and_fits_as_named(tmp_path):
    """The zoo's BAM VAD (nrqc export) and the same file without node names, for a
    Cortex-M4: both checked against onnxruntime in QEMU by the compile, the same kernels
    and bits per layer, the same flash and RAM, within 256 KiB / 64 KiB."""
    import torch

    from nrqc.models.zoo import build
    from nrqc.training.onnx_export import to_onnx

    torch.manual_seed(0)
    model = to_onnx(build("vad_tiny", "bam").eval())[0]
    named = tmp_path / "vad_bam.onnx"
    onnx.save(model, str(named))
    unnamed = bm.renamed(named, tmp_path / "vad_bam_unnamed.onnx", "empty")
    mans = []
    for p in (named, unnamed):
        out = tmp_path / f"out_{p.stem}"
        run_cli("compile", p, "--target", "cortex-m4", "-o", out)
        man = json.loads((out / "manifest.json").read_text())
        assert man["check"]["ran"] and man["check"]["passed"], man["check"]
        assert man["flash_bytes"] <= 256 * 1024 and man["ram_bytes"] + man["stack_bytes"] <= 64 * 1024
        mans.append(man)
    assert _signature(mans[1]) == _signature(mans[0])
    assert any(s[1].startswith("bconv") for s in _signature(mans[1])), _signature(mans[1])
    for key in ("weights_bytes_by_dtype", "flash_bytes", "ram_bytes"):
        assert mans[1][key] == mans[0][key], key
