"""Whole models through `nrqc compile` against onnxruntime on the same ONNX file (which runs
the Greater/Cast/QDQ graph in float), one model per contract variant.

Tolerance: the integer layers' thresholds sit half-way between two accumulator values
(tests/binary_models.py), so a correct integer kernel reproduces every bit that
onnxruntime computes in float; the first (float-input) conv compares a float sum with a
threshold, where a different summation order could flip a bit exactly at the boundary.
We therefore require at most 0.1 % differing output bits over 3 random inputs (observed: 0)
and, for the float-output BAM model, |error| <= 1e-4 + 1e-4 |ref|.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from tests import binary_models as bm

from nrqc.compiler import CompileOptions, compile_model
from nrqc.reference import run_onnxruntime
from nrqc.runtime import ArtifactSession


def _compile_and_compare(tmp_path, path, x_shape, n_inputs=3):
    out = compile_model(path, "x86", tmp_path / "out", CompileOptions(check=False), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    sess = ArtifactSession(out, manifest)
    rng = np.random.default_rng(0)
    diffs, total, ones = 0, 0, 0.0
    for _ in range(n_inputs):
        x = rng.standard_normal(x_shape).astype(np.float32)
        ref = run_onnxruntime(path, {"x": x})[0]
        got = sess.run({"x": x})[0]
        assert got.shape == ref.shape
        diffs += int(np.sum(got != ref))
        total += ref.size
        ones += float(np.mean(ref > 0))
    return manifest, diffs, total, ones / n_inputs


def _binary_layers(manifest):
    return [layer for layer in manifest["layers"]
            if layer["op"] in ("Conv", "MatMul", "Gemm") and str(layer["kernel"]).startswith("nrqc:nrqc_bconv")]


CASES = {
    # name: (layers after the first float conv, input shape, first activation)
    "greater_int8_channel_stride_pool": ([dict(c_out=37, c_first=35), dict(pool=(3, 2, 1)),
                                          dict(c_out=33, stride=2, scale="tensor"),
                                          dict(c_out=20, fold="bn", neg_channels=5, act="greaterequal")],
                                         (1, 2, 15, 17), "greater"),
    "bias_qdq_dilation_groups": ([dict(c_out=34, c_first=34, fold="bias", weights="qdq", dilation=2),
                                  dict(c_out=34, groups=2), dict(pool=(2, 2, 0)),
                                  dict(c_out=34, groups=34, k=3)], (1, 1, 14, 13), "greater"),
    "binary_weights_and_sign_xnor": ([dict(c_out=40, c_first=33, weights="binary", act="sign"),
                                      dict(c_out=36, weights="binary", act="sign", input_sign=True, stride=2)],
                                     (1, 1, 12, 11), "greater"),
    "conv1d": ([dict(c_out=35, c_first=33, k=5), dict(pool=(2, 2, 0)), dict(c_out=31, fold="bn", neg_channels=3)],
               (1, 3, 29), "greater"),
    # Less(T, y) / LessOrEqual(T, y) (operands swapped), and Less(y, T) (1 below T)
    "less_lessequal_heads": ([dict(c_out=37, c_first=35, act="less"),
                              dict(c_out=33, act="lessequal", fold="bn", neg_channels=4),
                              dict(c_out=30, act="less_below", stride=2)], (1, 1, 13, 12), "greater"),
    # bare Sign(y), the threshold folded into a conv bias / BatchNormalization
    "sign_bare_xnor": ([dict(c_out=40, c_first=33, weights="binary", act="sign_bare", fold="bias"),
                        dict(c_out=36, weights="binary", act="sign_bare", fold="bn", neg_channels=3, input_sign=True)],
                       (1, 1, 12, 11), "greater"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_contract_variant_matches_onnxruntime(tmp_path, name):
    layers, x_shape, act = CASES[name]
    path = bm.chain_model(tmp_path / f"{name}.onnx", layers, x_shape=x_shape, seed=1, first_act=act)
    manifest, diffs, total, ones = _compile_and_compare(tmp_path, path, x_shape)
    n_binary = sum(1 for s in layers if "c_out" in s)
    converted = _binary_layers(manifest)
    assert len(converted) == n_binary, json.dumps(manifest["layers"], indent=1)
    for layer in converted:
        assert layer["act_bits"] == 1 and layer["weight_bits"] in (1, 8)
        assert layer["multiplications_replaced"] == layer["macs"] > 0
        assert layer["float_reason"] is None
        assert layer["accumulator"]["dtype"] == "int32"
    assert 0.02 < ones < 0.98 or name == "binary_weights_and_sign_xnor"  # maps are not trivial
    assert diffs <= 0.001 * total, f"{diffs} of {total} output values differ from onnxruntime"


def test_bam_model_end_to_end(tmp_path):
    """The BAM speech-quality architecture (4 convs, pools, global max, dense head):
    float output within tolerance, every feature conv and pool on packed bits, and no float
    map between binary layers left in the compiled module."""
    path = bm.bam_model(tmp_path / "bam.onnx", frames=40, bands=24, channels=(32, 32, 32, 64), head=64, seed=3)
    out = compile_model(path, "x86", tmp_path / "out", CompileOptions(check=True), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"]["passed"], manifest["check"]
    kinds = [(layer["op"], str(layer["kernel"])) for layer in manifest["layers"]]
    assert [k for op, k in kinds if op == "Conv"][0].startswith("nrqc:nrqc_fconv_threshold_pack")
    assert sum(k.startswith("nrqc:nrqc_bconv_int8") for op, k in kinds if op == "Conv") == 3
    # every max-pool runs on packed words, fused into the kernel that produces its input
    assert all(k.endswith("_orpool") for op, k in kinds if op == "MaxPool")
    assert "fused into the kernel producing" in " ".join(manifest["notes"])
    assert any("global_or" in k for op, k in kinds if op == "GlobalMaxPool")
    first_dense = next(layer for layer in manifest["layers"] if layer["op"] == "MatMul")
    assert first_dense["act_bits"] == 1 and "binary_fc" in first_dense["kernel"]
    # per-layer reasons for everything that stayed float
    for layer in manifest["layers"]:
        if not str(layer["kernel"]).startswith("nrqc:") or layer["act_bits"] == 32:
            assert layer["float_reason"], layer
    # the Relax module has no float/int8 activation between binary layers: every tensor
    # passed between nrqc kernels is uint32 words
    assert "uint32" in manifest["weights_bytes_by_dtype"] or "int8" in manifest["weights_bytes_by_dtype"]
    report = (out / "report.txt").read_text()
    assert "nrqc_bconv_int8" in report and "layers left in float" in report


@pytest.mark.parametrize("dense_op,gpool", [("MatMul", "ReduceMax"), ("Gemm", "GlobalMaxPool")])
def test_dense_int8_head_and_global_pool(tmp_path, dense_op, gpool):
    """ReduceMax / GlobalMaxPool+Flatten global pool, and an int8 MatMul / Gemm fed by the
    pooled binary vector (a binary-input layer)."""
    g = bm.G(5)
    x = bm.first_conv(g, "x", 1, 35)
    x = bm.binary_conv(g, x, 35, 40, p_in=0.3)
    if gpool == "ReduceMax":
        x = g.op("ReduceMax", [x], "reducemax", axes=[2, 3], keepdims=0)
    else:
        x = g.op("Flatten", [g.op("GlobalMaxPool", [x], "gmp")], "flatten", axis=1)
    x = bm.dense(g, x, 40, 9, op=dense_op, weights="int8", relu=False)
    path = bm.save(g, (1, 1, 10, 9), x, (1, 9), tmp_path / "m.onnx")
    out = compile_model(path, "x86", tmp_path / "out", CompileOptions(check=False), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    sess = ArtifactSession(out, manifest)
    rng = np.random.default_rng(1)
    for _ in range(3):
        xin = rng.standard_normal((1, 1, 10, 9)).astype(np.float32)
        np.testing.assert_allclose(sess.run({"x": xin})[0], run_onnxruntime(path, {"x": xin})[0], rtol=1e-5, atol=1e-5)
    dense = next(layer for layer in manifest["layers"] if layer["op"] == dense_op)
    assert dense["kernel"].startswith("nrqc:nrqc_bconv_int8") and dense["act_bits"] == 1 and dense["weight_bits"] == 8
    assert dense["multiplications_replaced"] == dense["macs"] == 40 * 9
    rmax = next(layer for layer in manifest["layers"] if layer["op"] == gpool)
    assert "global_or" in rmax["kernel"]


def test_no_float_map_between_binary_layers(tmp_path):
    """After the binary passes, every tensor a binary conv reads or writes is uint32 packed
    words, and no float/int8 tensor of a feature-map shape is left in main."""
    from tvm import relax

    from nrqc.onnx_model import import_relax, load_model
    from nrqc.layer_table import build_layer_table
    from nrqc.pipeline import BINARY_REWRITE, CompileContext, build_pipeline, run_pipeline
    from nrqc.targets import get_target

    path = bm.bam_model(tmp_path / "bam.onnx", frames=24, bands=16, channels=(32, 32, 32, 64), head=16, seed=4)
    m = load_model(path, {})
    ctx = CompileContext(target=get_target("x86"), onnx_model=m.shaped, layers=build_layer_table(m.shaped))
    mod = run_pipeline(import_relax(m), ctx, build_pipeline(through=BINARY_REWRITE))
    calls = []
    relax.analysis.post_order_visit(mod["main"], lambda e: calls.append(e) if isinstance(e, relax.Call)
                                    and getattr(e.op, "name", "") == "relax.call_tir" else None)
    bconv = [c for c in calls if c.args[0].name_hint.startswith("nrqc_bconv")]
    assert len(bconv) == 3
    for c in bconv:
        assert str(c.args[1].fields[0].ty.dtype) == "uint32"  # packed input words
        assert str(c.ty.dtype) == "uint32"  # packed (and pooled) output words
    shapes = []
    relax.analysis.post_order_visit(mod["main"], lambda e: shapes.append((tuple(int(d) for d in e.ty.shape),
                                                                          str(e.ty.dtype)))
                                    if isinstance(e, relax.Var) and isinstance(e.ty, relax.TensorType)
                                    and e.ty.shape is not None and len(e.ty.shape) == 4 else None)
    float_maps = [s for s in shapes if s[1] in ("float32", "int8") and s[0][1] in (32, 64) and s[0] != (1, 1, 24, 16)]
    assert not float_maps, float_maps


def test_zoo_bam4_export_is_fully_converted(tmp_path):
    """The model zoo's BAM speech-quality network exported by nrqc's own exporter (untrained
    weights; the contract, not the accuracy, is under test): every feature conv after the
    first and every pool runs on packed bits, and the library matches onnxruntime."""
    import onnx
    import torch

    from nrqc.models.zoo import quality_bam4
    from nrqc.training.onnx_export import to_onnx

    torch.manual_seed(0)
    net = quality_bam4("bam", frames=40, bands=32)
    net.eval()
    model, _ = to_onnx(net)
    path = tmp_path / "zoo_bam4.onnx"
    onnx.save(model, str(path))
    out = compile_model(path, "x86", tmp_path / "out", CompileOptions(check=True), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"]["passed"], manifest["check"]
    convs = [layer for layer in manifest["layers"] if layer["op"] == "Conv"]
    assert len(convs) == 4 and all(layer["kernel"].startswith("nrqc:nrqc_bconv_int8") for layer in convs[1:])
    assert all(layer["weight_bits"] == 8 and layer["act_bits"] == 1 for layer in convs[1:])
    assert all(str(layer["kernel"]).startswith("nrqc:") for layer in manifest["layers"]
               if layer["op"] in ("MaxPool", "GlobalMaxPool"))


# name: (hidden binary dense layer before the last one or None, last dense layer);
# each dense as dict(op, trans_b, weights[, act])
DENSE_CASES = {
    # PyTorch's nn.Linear export: Gemm(x, W[out, in], b, transB=1), int8 weights through
    # DequantizeLinear (per output unit, axis=0)
    "gemm_transB1_int8": (None, dict(op="Gemm", trans_b=True, weights="int8")),
    "matmul_pm1": (None, dict(op="MatMul", trans_b=False, weights="binary")),
    "gemm_transB1_pm1": (None, dict(op="Gemm", trans_b=True, weights="binary")),
    # a binary dense layer with its own head (packed output) feeding a float dense layer
    "gemm_transB1_pm1_head": (dict(op="Gemm", trans_b=True, weights="binary"),
                              dict(op="MatMul", trans_b=False, weights="float")),
    "matmul_int8_less_head": (dict(op="MatMul", trans_b=False, weights="int8", act="less"),
                              dict(op="Gemm", trans_b=True, weights="float")),
    "gemm_transB1_int8_head": (dict(op="Gemm", trans_b=True, weights="int8"),
                               dict(op="Gemm", trans_b=True, weights="binary")),
}


@pytest.mark.parametrize("name", list(DENSE_CASES))
def test_dense_variants_match_onnxruntime(tmp_path, name):
    """Dense layers fed by a globally max-pooled binary vector: Gemm with transB=1 (what
    nn.Linear exports) and transB=0, MatMul, int8 (DequantizeLinear) and +-s_c weights, with
    a float output or their own Heaviside head (packed output). Compared with onnxruntime
    within 1e-5 (the integer sums are exact; only the final float scale/bias rounds), and
    every dense layer on binary input is reported converted in manifest.json."""
    hidden, last = DENSE_CASES[name]
    g = bm.G(7)
    x = bm.first_conv(g, "x", 1, 35)
    x = bm.binary_conv(g, x, 35, 40, p_in=0.3)
    x = g.op("Flatten", [g.op("GlobalMaxPool", [x], "gmp")], "flatten", axis=1)
    n_in = 40
    if hidden is not None:
        x = bm.binary_dense(g, x, n_in, 21, p_in=0.5, **hidden)
        n_in = 21
    x = bm.dense(g, x, n_in, 9, relu=False, **last)
    path = bm.save(g, (1, 1, 10, 9), x, (1, 9), tmp_path / "m.onnx")
    gemm = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "Gemm") if "gemm" in name else None
    if gemm is not None and "transB1" in name:
        assert {a.name: a.i for a in gemm.attribute}.get("transB") == 1
    out = compile_model(path, "x86", tmp_path / "out", CompileOptions(check=False), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    sess = ArtifactSession(out, manifest)
    rng = np.random.default_rng(1)
    spread = []
    for _ in range(4):
        xin = rng.standard_normal((1, 1, 10, 9)).astype(np.float32)
        ref = run_onnxruntime(path, {"x": xin})[0]
        np.testing.assert_allclose(sess.run({"x": xin})[0], ref, rtol=1e-5, atol=1e-5)
        spread.append(ref)
    assert np.ptp(np.stack(spread), axis=0).max() > 1e-2  # the output depends on the input
    dense = [layer for layer in manifest["layers"] if layer["op"] in ("MatMul", "Gemm")]
    assert len(dense) == 1 + (hidden is not None)
    specs = ([hidden] if hidden is not None else []) + [last]
    for layer, spec in zip(dense, specs):
        assert layer["op"] == spec["op"] and layer["act_bits"] == 1, layer
        assert layer["float_reason"] is None, layer
        assert layer["multiplications_replaced"] == layer["macs"] > 0, layer
        assert layer.get("strategy") and layer["strategy"].get("method"), layer
        if spec["weights"] == "float":
            assert "binary_fc_float" in layer["kernel"] and layer["weight_bits"] == 32, layer
            continue
        kind = {"int8": "int8", "binary": "binary"}[spec["weights"]]
        assert layer["kernel"].startswith(f"nrqc:nrqc_bconv_{kind}"), layer
        assert layer["weight_bits"] == (8 if kind == "int8" else 1), layer
        # a layer with its own head emits packed bits; the last one emits floats
        assert ("_pack" in layer["kernel"]) == (spec is hidden), layer


def test_eval_affine_broadcasts_constants_from_the_right():
    """A dense layer's bias is a [C] constant on a [N, C] output (and a conv's may be
    [C, 1, 1] on [N, C, H, W]): numpy aligns it to the right, onto the channel axis. (A [C]
    bias used to be read as varying along a non-channel axis, so a MatMul/Gemm + bias +
    Greater head stayed float.)"""
    from nrqc.passes.binary_patterns import eval_affine

    bias = np.arange(5, dtype=np.float32)
    m, k = eval_affine([("relax.add", bias, False), ("relax.multiply", np.float32(2.0), False)], 5, 2)
    np.testing.assert_array_equal(m, np.full(5, 2.0))
    np.testing.assert_array_equal(k, 2.0 * bias)
    m, k = eval_affine([("relax.subtract", bias.reshape(5, 1, 1), True)], 5, 4)  # c - y
    np.testing.assert_array_equal(m, -np.ones(5))
    np.testing.assert_array_equal(k, bias)
    assert eval_affine([("relax.add", np.zeros((1, 5, 3, 1)), False)], 5, 4) is None  # varies along H
    assert eval_affine([("relax.add", np.zeros(3), False)], 5, 4) is None  # [3] is on W, not channels


def test_manifest_records_the_int8_strategy_choice(tmp_path):
    """Every binary x int8 layer of a whole model has a `strategy` entry in manifest.json
    saying which strategy runs and how it was chosen: timed on this host for a layer of at
    least select.MEASURE_MIN_MACS MACs (the winner is the fastest candidate), the cost
    model below that (the winner has the lowest estimate); the kernel is the chosen one
    and report.txt shows the choice."""
    from nrqc.targets import get_target
    from nrqc.targets.kernels import select

    # second conv 20x12x32x(3x3x32) = 2.2 M MACs (timed); third 0.55 M, fourth 0.28 M (cost model)
    path = bm.bam_model(tmp_path / "bam.onnx", frames=40, bands=24, channels=(32, 32, 32, 64), head=64, seed=3)
    out = compile_model(path, "x86", tmp_path / "out", CompileOptions(check=False), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    int8 = [layer for layer in manifest["layers"] if layer["op"] in ("Conv", "MatMul", "Gemm")
            and str(layer["kernel"]).startswith("nrqc:nrqc_bconv_int8")]  # (fused pools share the kernel)
    assert len(int8) == 3, [(layer["name"], layer["kernel"]) for layer in manifest["layers"]]
    offered = set(select.strategies_for(bo_geom_any(), get_target("x86")))
    methods = []
    report = (out / "report.txt").read_text()
    for layer in int8:
        st = layer.get("strategy")
        assert st and st["strategy"] in offered and st["method"], layer
        assert layer["kernel"].startswith(f"nrqc:nrqc_bconv_int8_{st['strategy']}_"), layer
        if layer["macs"] >= select.MEASURE_MIN_MACS:
            assert st["method"].startswith("measured"), st
            ms = st["candidates_ms"]
            assert set(ms) == offered and all(v > 0 for v in ms.values()), st
            assert st["strategy"] == min(ms, key=ms.get), st
        else:
            assert st["method"].startswith("cost model"), st
            est = st["cost_model_cycles"]
            assert set(est) == offered and st["strategy"] == min(est, key=est.get), st
        methods.append(st["method"].split()[0])
        assert f"{layer['name']}: {st['strategy']} by {st['method']}" in report, report
    assert set(methods) == {"measured", "cost"}  # both ways of choosing are exercised


def bo_geom_any():
    """A groups=1 geometry: the strategies offered for every conv of the BAM model."""
    from nrqc.targets.kernels import binary_ops as bo

    return bo.ConvGeom(1, 32, 4, 4, 32, 3, 3, (1, 1), (1, 1, 1, 1))


# +-1 maps written as 2*Cast(Greater(y, T)) - 1 (what `2 * (y > t).float() - 1` exports).
# name: (first conv's head, second conv's weights, second conv's head[, z of its threshold])
PM1_AFFINE_CASES = {
    "mul_sub_xnor": ("pm1_mul_sub", "binary", "pm1_mul_sub"),
    "mul_sub_left_xnor_sign": ("pm1_mul_sub_left", "binary", "sign"),
    "mul_add_xnor": ("pm1_mul_add", "binary", "pm1_add_left"),
    "one_minus_xnor": ("pm1_one_minus", "binary", "greater"),
    # 1 - 2b on an integer layer (z = -2: the comparison mostly true, so +1s are sparse)
    "mul_sub_xnor_one_minus": ("pm1_mul_sub", "binary", "pm1_one_minus", -2.0),
    # int8 weights on a +-1 map: no integer kernel (documented), the conv stays float and says why
    "add_left_int8": ("pm1_add_left", "int8", "pm1_mul_add"),
}


def _pm1_model(path, first_act, weights, act, z=2.0, c_first=35):
    """First float conv with a +-1 head, a binary conv (+-1 or int8 weights) with another
    head, a max-pool, a global max-pool and a float dense layer."""
    g = bm.G(11)
    x = bm.first_conv(g, "x", 1, c_first, act=first_act)
    # z = 2: sparse +1s, so the global max still depends on the input
    x = bm.binary_conv(g, x, c_first, 40, weights=weights, act=act, input_sign=True, z=z)
    x = g.op("MaxPool", [x], "maxpool", kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Flatten", [g.op("GlobalMaxPool", [x], "gmp")], "flatten", axis=1)
    x = bm.dense(g, x, 40, 7, relu=False)
    return bm.save(g, (1, 1, 10, 9), x, (1, 7), path)


def _check_against_onnxruntime(out, path, manifest, x_shape=(1, 1, 10, 9), n=3):
    """|error| <= 1e-4 + 1e-4 |ref| (the float-output tolerance above) on n random inputs."""
    sess = ArtifactSession(out, manifest)
    rng = np.random.default_rng(2)
    refs = []
    for _ in range(n):
        x = rng.standard_normal(x_shape).astype(np.float32)
        ref = run_onnxruntime(path, {"x": x})[0]
        got = sess.run({"x": x})[0]
        assert got.shape == ref.shape
        assert np.all(np.abs(got - ref) <= 1e-4 + 1e-4 * np.abs(ref)), np.abs(got - ref).max()
        refs.append(ref)
    assert np.ptp(np.stack(refs), axis=0).max() > 1e-2  # the output depends on the input


@pytest.mark.parametrize("name", list(PM1_AFFINE_CASES))
def test_pm1_written_as_affine_heaviside_is_a_pm1_map(tmp_path, name):
    """2*Cast(Greater(y, T)) - 1 in every spelling (Mul/Sub or Mul/Add(-1), constants on
    either side, 1 - 2b) is read as a {-1,+1} map: compiled with the default numerical check
    on (which used to fail), exact against onnxruntime, and the conv after it runs on the
    packed bits (XNOR for +-1 weights; int8 weights on a +-1 map stay a float conv and say why)."""
    first_act, weights, act, *z = PM1_AFFINE_CASES[name]
    path = _pm1_model(tmp_path / "m.onnx", first_act, weights, act, *z)
    out = compile_model(path, "x86", tmp_path / "out", CompileOptions(), log=lambda *a: None)  # check on
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"]["ran"] and manifest["check"]["passed"], manifest["check"]
    _check_against_onnxruntime(out, path, manifest)
    convs = [layer for layer in manifest["layers"] if layer["op"] == "Conv"]
    assert convs[0]["kernel"].startswith("nrqc:nrqc_fconv_threshold_pack")
    assert convs[0]["output"] == "packed {-1,+1} bits", convs[0]
    assert f"{convs[0]['name']}: Heaviside map followed by" in " ".join(manifest["notes"])
    second = convs[1]
    assert second["act_bits"] == 1, second
    if weights == "binary":
        assert second["kernel"].startswith("nrqc:nrqc_bconv_binary_xnor_pack"), second
        assert second["float_reason"] is None and second["weight_bits"] == 1
        assert second["multiplications_replaced"] == second["macs"] > 0
        assert second["output"] == ("packed {0,1} bits" if act == "greater" else "packed {-1,+1} bits"), second
    else:
        assert second["kernel"].startswith("tvm:"), second
        assert second["float_reason"] == "{-1,+1} input with int8 weights is not supported by the integer kernels"
    pools = [layer for layer in manifest["layers"] if layer["op"] in ("MaxPool", "GlobalMaxPool")]
    assert all(str(layer["kernel"]).startswith("nrqc:") and layer["act_bits"] == 1 for layer in pools), pools
    dense = next(layer for layer in manifest["layers"] if layer["op"] == "MatMul")
    assert "binary_fc_float" in dense["kernel"] and dense["act_bits"] == 1 and dense["float_reason"] is None


def test_affine_heaviside_that_is_not_pm1_stays_float_and_says_why(tmp_path):
    """3*Cast(Greater) - 1 is an affine map of the bits but not a {-1,+1} map: the conv after
    it is not a binary kernel, the manifest says why, and the numbers are exact."""
    # (8 channels: the float conv + threshold + pack kernel on a wide input is slow to build)
    path = _pm1_model(tmp_path / "m.onnx", "affine_3b_minus_1", "binary", "sign", c_first=8)
    out = compile_model(path, "x86", tmp_path / "out", CompileOptions(), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"]["passed"], manifest["check"]
    _check_against_onnxruntime(out, path, manifest)
    convs = [layer for layer in manifest["layers"] if layer["op"] == "Conv"]
    assert convs[0]["output"] == "packed {0,1} bits"
    assert not convs[1]["kernel"].startswith("nrqc:nrqc_bconv"), convs[1]
    assert convs[1]["act_bits"] == 32
    assert convs[1]["float_reason"].startswith(f"input is computed from the binary map of {convs[0]['name']} "
                                               "by multiply + subtract and is neither"), convs[1]
    assert "read as a {-1,+1} map" not in " ".join(manifest["notes"])


def test_dense_on_pooled_pm1_vector_left_float_reports_the_reason(tmp_path):
    """A dense layer with int8 weights on a globally max-pooled {-1,+1} vector has no integer
    kernel: its manifest entry says so (it used to say "float model layer (no binary
    activation input)", because the layer table did not see the binary input through the
    pool and flatten), and it runs exactly in float."""
    from nrqc.layer_table import build_layer_table

    g = bm.G(13)
    x = bm.first_conv(g, "x", 1, 35)
    x = bm.binary_conv(g, x, 35, 40, weights="binary", act="sign", z=2.0)
    x = g.op("Flatten", [g.op("GlobalMaxPool", [x], "gmp")], "flatten", axis=1)
    x = bm.dense(g, x, 40, 9, weights="int8", relu=False)
    path = bm.save(g, (1, 1, 10, 9), x, (1, 9), tmp_path / "m.onnx")
    table = {layer["name"]: layer for layer in build_layer_table(onnx.shape_inference.infer_shapes(onnx.load(str(path))))}
    assert [layer["act_bits"] for layer in table.values() if layer["op"] in ("GlobalMaxPool", "MatMul")] == [1, 1]
    out = compile_model(path, "x86", tmp_path / "out", CompileOptions(), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"]["passed"], manifest["check"]
    _check_against_onnxruntime(out, path, manifest)
    dense = next(layer for layer in manifest["layers"] if layer["op"] == "MatMul")
    assert dense["kernel"].startswith("tvm:") and dense["act_bits"] == 1, dense
    assert dense["float_reason"] == "{-1,+1} input with int8 weights is not supported by the integer kernels", dense
    assert "layers left in float" in (out / "report.txt").read_text()
    assert dense["float_reason"] in (out / "report.txt").read_text()


def test_layer_table_sees_binary_inputs_through_affine_pools_and_reshapes(tmp_path):
    """act_bits of the layer table (ONNX level): 1 after every +-1 spelling of
    2*Cast(Greater) - 1 and through MaxPool / GlobalMaxPool + Flatten / ReduceMax; 32 after
    3*Cast(Greater) - 1 and after a float ReLU."""
    from nrqc.layer_table import build_layer_table

    for act in list(bm.PM1_AFFINE_FORMS) + list(bm.NOT_PM1_FORMS):
        g = bm.G(1)
        x = bm.first_conv(g, "x", 1, 8, act=act)
        x = g.op("MaxPool", [x], "maxpool", kernel_shape=[2, 2], strides=[2, 2])
        x = bm.binary_conv(g, x, 8, 8)
        x = g.op("ReduceMax", [x], "reducemax", axes=[2, 3], keepdims=0)
        x = bm.dense(g, x, 8, 4, relu=True)
        x = bm.dense(g, x, 4, 2, relu=False)
        path = bm.save(g, (1, 1, 8, 8), x, (1, 2), tmp_path / f"{act}.onnx")
        layers = build_layer_table(onnx.shape_inference.infer_shapes(onnx.load(str(path))))
        bits = [(layer["op"], layer["act_bits"]) for layer in layers]
        first_bits = 1 if act in bm.PM1_AFFINE_FORMS else 32
        assert bits == [("Conv", 32), ("MaxPool", first_bits), ("Conv", first_bits), ("ReduceMax", 1),
                        ("MatMul", 1), ("MatMul", 32)], (act, bits)
