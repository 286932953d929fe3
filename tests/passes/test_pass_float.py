"""The float passes and the schedule passes one at a time on small Relax modules built
with BlockBuilder: NaN semantics of max/min/relu, Winograd for a 3x3 conv (numbers against
numpy), the shipped schedule rules and the tuning-database step's typed result."""
from __future__ import annotations

import numpy as np

from tests.passes.pass_helpers import call_tir_callees, context, op_names, run_module, run_steps, step


def _module(build, *shapes):
    """main(x0, x1, ...) with one dataflow block whose output is build(bb, *params)."""
    from tvm import relax

    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(list(s), "float32")) for i, s in enumerate(shapes)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(build(bb, *params))
        bb.emit_func_output(out)
    return bb.get()


def test_nan_semantics_wraps_max_min_relu_and_propagates_nan_like_onnx():
    from tvm import relax

    def build(bb, x, y):
        lo = bb.emit(relax.op.maximum(x, relax.const(np.float32(0.25))))
        hi = bb.emit(relax.op.minimum(lo, y))
        return relax.op.nn.relu(bb.emit(relax.op.subtract(hi, relax.const(np.float32(0.5)))))

    ctx = context()
    mod = run_steps(_module(build, (2, 3), (2, 3)), ctx, step("nrqc.PropagateNaN"))
    ops = op_names(mod)
    # maximum with a NaN-free constant: one test; minimum of two inputs: two; relu: one
    assert ops.count("relax.isnan") == 4 and ops.count("relax.where") == 4
    assert any("NaN-propagating" in n and "x3" in n for n in ctx.notes)
    x = np.array([[np.nan, 0.1, 2.0], [1.0, -3.0, 0.9]], np.float32)
    y = np.array([[0.5, np.nan, 1.5], [np.nan, 1.0, np.inf]], np.float32)
    want = np.maximum(np.minimum(np.maximum(x, np.float32(0.25)), y) - np.float32(0.5), 0)  # numpy propagates NaN
    got = run_module(mod, ctx, x, y)
    np.testing.assert_array_equal(got, want)


def test_conv_winograd_rewrites_a_3x3_conv_with_bias_relu_and_pool():
    from tvm import relax

    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    bias = rng.standard_normal((1, 16, 1, 1)).astype(np.float32)

    def build(bb, x):
        y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=[1, 1, 1, 1]))
        y = bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(y, relax.const(bias)))))
        return relax.op.nn.max_pool2d(y, pool_size=[2, 2], strides=[2, 2])

    ctx = context()
    mod = run_steps(_module(build, (1, 8, 10, 12)), ctx, step("nrqc.ConvWinograd"))
    assert call_tir_callees(mod) == ["nrqc_winograd_conv0"]
    assert "relax.nn.conv2d" not in op_names(mod) and "relax.nn.max_pool2d" not in op_names(mod)
    assert any("winograd F(2x2,3x3): 1 float 3x3 conv(s) (8->16 @10x12 +pool)" in n for n in ctx.notes)
    x = rng.standard_normal((1, 8, 10, 12)).astype(np.float32)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((16, 10, 12))
    for dy in range(3):
        for dx in range(3):
            conv += np.einsum("oc,chw->ohw", w[:, :, dy, dx], xp[0, :, dy:dy + 10, dx:dx + 12])
    act = np.maximum(conv + bias[0], 0)
    want = act.reshape(16, 5, 2, 6, 2).max(axis=(2, 4))[None]
    np.testing.assert_allclose(run_module(mod, ctx, x), want, rtol=1e-4, atol=1e-4)


def _legalized(build, *shapes):
    from nrqc import pipeline

    ctx = context()
    mod = run_steps(_module(build, *shapes), ctx, *pipeline.legalize_fuse())
    return ctx, mod


def test_schedule_shipped_gives_the_conv_its_rule(monkeypatch):
    from tvm import relax, tirx

    monkeypatch.setenv("NRQC_NO_CONV_POOL_FUSION", "1")
    w = np.random.default_rng(2).standard_normal((16, 8, 3, 3)).astype(np.float32)
    ctx, mod = _legalized(lambda bb, x: relax.op.nn.conv2d(x, relax.const(w), padding=[1, 1, 1, 1]),
                          (1, 8, 12, 12))
    before = {gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    mod = run_steps(mod, ctx, step("nrqc.ScheduleShipped"))
    funcs = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    assert set(funcs) == before
    assert ctx.schedule.rules.get("conv") == 1
    assert all(bool(f.attrs["tirx.is_scheduled"]) for name, f in funcs.items() if "conv2d" in name)
    assert any(n.startswith("shipped schedules (") and "conv x1" in n for n in ctx.notes)


def test_schedule_database_without_records_for_this_target_is_unused(tmp_path, monkeypatch):
    from tvm import relax

    monkeypatch.setenv("NRQC_NO_DEFAULT_DB", "1")
    db = tmp_path / "db"
    db.mkdir()
    ctx, mod = _legalized(lambda bb, x: relax.op.nn.relu(x), (1, 4, 4, 4))
    ctx.options["db"] = str(db)
    run_steps(mod, ctx, step("nrqc.ApplyTuningDatabase"))
    assert ctx.schedule.database is None and ctx.schedule.database_unused == str(db)
    assert any(n.startswith(f"tuning database {db} ignored: no records for target x86") for n in ctx.notes)
