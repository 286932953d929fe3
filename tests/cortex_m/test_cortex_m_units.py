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
    assert sum(w.size for w in plan.weights) == 36 + 4 + 320 * 3
