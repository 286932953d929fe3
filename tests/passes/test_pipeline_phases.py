"""The pipeline as named phases of TVM module passes: phase order and cuts, the back-end
slot, PassContext instruments seeing every step, IR dumps after each step, and errors
raised inside a step reaching the caller unchanged."""
from __future__ import annotations

import numpy as np
import pytest

from tests.passes.pass_helpers import context


def _tiny_module():
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 6, 6], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.add(x, relax.const(np.full((1, 4, 1, 1), 0.5, np.float32))))
            out = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(out)
    return bb.get()


def test_phases_concatenate_to_the_pipeline_and_cut_after_a_phase():
    from nrqc import pipeline

    full = [s.name for s in pipeline.build_pipeline()]
    assert full == [s.name for _, make in pipeline.PHASES for s in make()]
    assert full[0] == "relax.DecomposeOpsForInference" and full[-1] == "relax.AttachGlobalSymbol"
    fused = [s.name for s in pipeline.build_pipeline(through=pipeline.LEGALIZE_FUSE)]
    assert fused == full[: full.index("nrqc.RecordKernels") + 1]
    planned = [s.name for s in pipeline.build_pipeline(through=pipeline.MEMORY_PLAN)]
    assert planned == full[: full.index("nrqc.RecordMemoryPlan") + 1]
    with pytest.raises(ValueError, match="no pipeline phase"):
        pipeline.build_pipeline(through="optimize")


def test_target_schedule_slot_sits_after_the_schedules_before_lowering():
    from nrqc import pipeline

    extra = pipeline.Step("test.Extra", "schedule", lambda mod, ctx: mod)
    names = [s.name for s in pipeline.build_pipeline(through=pipeline.MEMORY_PLAN, target_schedule=[extra])]
    at = names.index("test.Extra")
    assert names[at - 1] == "nrqc.ScheduleShipped" and names[at + 1] == "relax.RewriteDataflowReshape"
    assert "test.Extra" not in [s.name for s in pipeline.build_pipeline()]


def test_instruments_see_every_step_and_dump_writes_each_module(tmp_path):
    from tvm.ir import instrument

    from nrqc import pipeline

    seen = []

    @instrument.pass_instrument
    class StepNames:
        def run_before_pass(self, mod, info):
            seen.append(info.name)

    ctx = context(dump_ir_dir=tmp_path / "ir")
    steps = pipeline.build_pipeline(through=pipeline.LEGALIZE_FUSE)
    mod = pipeline.run_pipeline(_tiny_module(), ctx, steps, instruments=[StepNames()])
    ran = [s["name"] for s in ctx.steps_run]
    assert ran == [s.name for s in steps]
    # every step ran as a module pass of its own name (stock passes also report their inner name)
    assert [n for n in seen if n in set(ran)] == ran
    files = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert files == [f"{i + 1:02d}-{name}.py" for i, name in enumerate(ran)]
    last = (tmp_path / "ir" / files[-1]).read_text()
    assert last == mod.script() and "def main" in last
    first = (tmp_path / "ir" / files[0]).read_text()
    assert "R.nn.relu" in first and "call_tir" not in first  # before legalization
    assert ctx.kernels_in_order and all(k in last for k in ctx.kernels_in_order)


def test_error_inside_a_step_reaches_the_caller_as_raised():
    from nrqc import pipeline
    from nrqc.errors import NrqcError

    def refuse(mod, ctx):
        raise NrqcError("layer x: refused for a test")

    ctx = context()
    steps = [*pipeline.import_cleanup(), pipeline.Step("test.Refuse", "cleanup", refuse)]
    with pytest.raises(NrqcError, match="^layer x: refused for a test$"):
        pipeline.run_pipeline(_tiny_module(), ctx, steps)
    assert [s["name"] for s in ctx.steps_run] == [s.name for s in pipeline.import_cleanup()]
