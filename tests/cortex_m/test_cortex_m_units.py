"""Cortex-M emitter pieces that need no toolchain: exact float literals, workspace sizing,
the stale-load detector, and the arena plan of a small model."""
from __future__ import annotations

import numpy as np

from nrqc.cortex_m import stale_load_kernels
from nrqc.cortex_m.emit import c_array_literal, workspace_bytes

_BUGGY = """
TVM_DLL int32_t __tvm_ffi_max(void* self_handle, void* args, int32_t num_args, void* result) {
  for (int32_t i = 0; i < 16; ++i) {
    red[i] = -3.402823e+38f;
    float v_ = red[i];
    float v__1 = x[(i * 2)];
    red[i] = ((v_) > (v__1) ? (v_) : (v__1));
    float v__2 = x[((i * 2) + 1)];
    red[i] = ((v_) > (v__2) ? (v_) : (v__2));
  }
  return 0;
}
TVM_DLL int32_t __tvm_ffi_ok(void* self_handle, void* args, int32_t num_args, void* result) {
  for (int32_t i = 0; i < 16; ++i) {
    float v_ = red[i];
    float v__1 = x[i];
    red[i] = ((v_) > (v__1) ? (v_) : (v__1));
  }
  return 0;
}
"""


def test_stale_load_detector():
    assert stale_load_kernels(_BUGGY) == {"max"}


def test_float_literals_are_exact():
    vals = np.array([0.1, -1e-30, 3.4028235e38, 1.1754944e-38, 1e-45, 0.0, -0.0, 123.456], np.float32)
    text = c_array_literal(vals)
    parsed = [float.fromhex(t.strip().rstrip("f")) for t in text.replace("\n", "").split(",") if t.strip()]
    assert np.array_equal(np.array(parsed, np.float32).view(np.uint32), vals.view(np.uint32))


def test_workspace_bytes_is_max_over_kernels_of_aligned_sums():
    src = ("\nTVM_DLL int32_t __tvm_ffi_a(void* s) {\n"
           "  float* p = ((float*)TVMBackendAllocWorkspace(1, dev_id, (uint64_t)100ULL, 2, 32));\n"
           "  float* q = ((float*)TVMBackendAllocWorkspace(1, dev_id, (uint64_t)17ULL, 2, 32));\n}\n"
           "\nTVM_DLL int32_t __tvm_ffi_b(void* s) {\n"
           "  float* p = ((float*)TVMBackendAllocWorkspace(1, dev_id, (uint64_t)120ULL, 2, 32));\n}\n")
    assert workspace_bytes(src) == 112 + 32  # a: 100->112, 17->32; b: 120->128


def test_arena_plan_of_small_model(tmp_path):
    from nrqc.onnx_model import import_relax, load_model
    from nrqc.cortex_m import _steps
    from nrqc.cortex_m.emit import plan_caller
    from nrqc.layer_table import build_layer_table
    from nrqc.pipeline import CompileContext, run_pipeline
    from nrqc.targets import get_target
    from tests.onnx_builders import small_conv_model

    m = load_model(small_conv_model(tmp_path / "s.onnx"), {"x": (1, 1, 16, 20)})
    ctx = CompileContext(target=get_target("cortex-m4"), onnx_model=m.shaped, layers=build_layer_table(m.shaped))
    mod = run_pipeline(import_relax(m), ctx, _steps())
    plan = plan_caller(mod, m.inputs, m.outputs)
    names = [n for n, _ in plan.calls]
    assert len(names) == 3 and "conv" in names[0] and "pool" in names[1] and "matmul" in names[2]
    conv_out = plan.calls[0][1][-1]
    assert conv_out.kind == "arena" and conv_out.shape == (1, 4, 16, 20)
    assert plan.calls[-1][1][-1].kind == "output"  # the last kernel writes the caller's buffer
    # the pool output may not overlap the conv output it reads
    pool_out = plan.calls[1][1][-1]
    assert pool_out.kind == "arena"
    a0, a1 = conv_out.ref, conv_out.ref + 4 * 4 * 16 * 20
    b0, b1 = pool_out.ref, pool_out.ref + 4 * 4 * 8 * 10
    assert b1 <= a0 or b0 >= a1
    assert plan.storage_bytes >= 4 * 4 * 16 * 20 + 4 * 4 * 8 * 10
    # conv 36 + bias 4; the 320->3 dense as nrqc_f32_conv: weights padded to 4 outputs + a zero bias
    assert sum(w.size for w in plan.weights) == 36 + 4 + 320 * 4 + 4


def test_per_layer_memory_counts_shared_code_and_weights_once():
    """compile report's per-layer flash/RAM (issue 18 item 2), hand-counted on a two-call plan:
    the second call of the same kernel adds no code, a weight shared by both calls counts at
    its first reader, overlapping arena views count once, and the remainder row makes the
    flash add up to the library's."""
    from types import SimpleNamespace

    from nrqc.cortex_m.emit import Buf, CallerPlan
    from nrqc.cortex_m.memory_report import per_call, table

    w = [np.zeros((4, 8), np.int8), np.zeros(4, np.int32), np.zeros(3, np.float32)]
    calls = [("k", [Buf("input", 0, (1, 10), "float32"), Buf("weight", 0, (4, 8), "int8"),
                    Buf("weight", 1, (4,), "int32"), Buf("arena", 0, (10,), "uint32")]),
             ("k", [Buf("arena", 0, (10,), "uint32"), Buf("weight", 1, (4,), "int32"),
                    Buf("arena", 48, (6,), "float32"), Buf("arena", 64, (4,), "float32")]),
             ("h", [Buf("arena", 64, (4,), "float32"), Buf("weight", 2, (3,), "float32"),
                    Buf("output", 0, (1, 3), "float32")])]
    layers = [SimpleNamespace(kernel="nrqc:k", name="conv_a", op="Conv"),
              SimpleNamespace(kernel="tvm:h", name="", op="Gemm")]
    rows = per_call(CallerPlan(calls, w, 64, []), layers, {"__tvm_ffi_k": 100, "__tvm_ffi_h": 20},
                    {"__tvm_ffi_k": 40})
    assert [(r["code_bytes"], r["weight_bytes"], r["arena_bytes"], r["stack_bytes"]) for r in rows] == [
        (100, 32 + 16, 40, 40), (0, 0, 40 + 24 + 8, 40), (20, 12, 16, 0)]  # [48, 72) and [64, 80) overlap
    assert rows[0]["layers"] == ["conv_a"] and rows[2]["layers"] == ["Gemm"]
    assert table(rows, 500)["caller_runtime_flash_bytes"] == 500 - 148 - 0 - 32


def test_float_conv_geometry_found_by_behaviour():
    """nrqc.cortex_m.float_conv recovers stride, padding, dilation and ReLU from what a kernel
    computes (here numpy standing in for the host-built TVM kernel), and refuses a kernel that
    is not that conv (a conv plus 1)."""
    from nrqc.cortex_m import float_conv as fc

    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 3, 3, 2)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    geo = {"stride": (2, 1), "pad": (1, 0, 1, 1), "dilation": (1, 2)}
    x_shape = (1, 3, 10, 7)
    y_shape = fc.ref_conv(np.zeros(x_shape, np.float32), w, b, geo).shape
    got = fc.find_geometry(lambda x: np.maximum(fc.ref_conv(x, w, b, geo), 0), x_shape, w, b, y_shape)
    assert got == {"stride": (2, 1), "pad": (1, 0, 1, 1), "dilation": (1, 2), "relu": 1}
    assert fc.find_geometry(lambda x: fc.ref_conv(x, w, b, geo) + 1, x_shape, w, b, y_shape) is None
    w4 = fc.conv_weights(w)  # [Co4/4, C, KH, KW, 4], zero past Co
    assert w4.shape == (2, 3, 3, 2, 4) and w4[1, 2, 1, 0, 0] == w[4, 2, 1, 0] and not w4[1, :, :, :, 1:].any()


def test_dense_weights_read_both_ways():
    """A dense kernel's constant is [K, M] (MatMul) or [M, K] (Gemm transB): both readings
    are offered as 1x1-conv weights, and the behaviour probe keeps the one that matches."""
    from nrqc.cortex_m import float_conv as fc

    rng = np.random.default_rng(2)
    wkm = rng.standard_normal((6, 6)).astype(np.float32)  # square: both readings possible
    b = rng.standard_normal(6).astype(np.float32)
    run = lambda x: np.maximum(x.reshape(2, 6) @ wkm + b, 0)  # noqa: E731  (MatMul + bias + ReLU)
    found = [tag for tag, w in (("dense_km", wkm.T[:, :, None, None]), ("dense_mk", wkm[:, :, None, None]))
             if fc.find_geometry(run, (2, 6, 1, 1), w, b, (2, 6, 1, 1)) is not None]
    assert found == ["dense_km"]


def test_max_pool_geometry_found_by_behaviour():
    from nrqc.cortex_m import float_conv as fc

    geo = {"kernel": (3, 2), "stride": (2, 2), "pad": (1, 0, 1, 1)}
    x_shape = (1, 2, 9, 8)
    y_shape = fc.ref_maxpool(np.zeros(x_shape, np.float32), geo).shape
    got = fc.find_pool_geometry(lambda x: fc.ref_maxpool(x, geo), x_shape, y_shape)
    # a padding no window reaches is not observable: (1, 0, 1, 0) is found, and it is the same pool
    assert got is not None and got["kernel"] == (3, 2) and got["stride"] == (2, 2)
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    np.testing.assert_array_equal(fc.ref_maxpool(x, got), fc.ref_maxpool(x, geo))
    assert fc.find_pool_geometry(lambda x: -fc.ref_maxpool(-x, geo), x_shape, y_shape) is None  # a min pool
