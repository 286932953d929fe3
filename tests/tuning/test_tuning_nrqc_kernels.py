"""nrqc's own hand-scheduled kernels (binary operators, Winograd convs) as tuning tasks:
tuned in their unscheduled form (MetaSchedule cannot take the compacted, scheduled one),
their hand schedule measured as the baseline, and a verified record applied at compile
time giving the same numbers as onnxruntime."""
from __future__ import annotations

import json

import numpy as np
import pytest

from nrqc.targets import get_target
from tests import binary_models as bm
from tests.kernels.test_schedules_cpu import _conv_model

X86 = get_target("x86")


def _block_names(func) -> list[str]:
    import re

    return re.findall(r'T\.sblock\("([^"]*)"', func.script())


def test_nrqc_kernels_are_tasks_in_unscheduled_form(tmp_path):
    """Winograd and binary kernels: the task is the TE compute (named blocks only, no
    schedule), the hand-scheduled kernel rides along as the baseline, and MetaSchedule
    generates a design space for every task."""
    from nrqc.tuning.tune import _tune_context, extract_tasks

    _conv_model(tmp_path / "wg.onnx", 16, 32, 8, 10, 3, 1, 1, bias=True, pool="max")
    bm.bam_model(tmp_path / "bam.onnx", frames=16, bands=16, channels=(8, 16), head=8)
    for model, expect in (("wg.onnx", "nrqc_winograd_conv"), ("bam.onnx", "nrqc_")):
        tasks, _ = extract_tasks(tmp_path / model, X86)
        ours = [t for t in tasks if t.name.startswith(expect)]
        assert ours, [t.name for t in tasks]
        for t in ours:
            assert t.shipped is not None and "tirx.is_scheduled" in t.shipped.attrs
            names = _block_names(t.func)
            assert "" not in names and len(names) == len(set(names)), names
            assert not (t.func.attrs is not None and "tirx.is_scheduled" in t.func.attrs)
            assert t.flops >= 0  # integer-only kernels (OR, popcount) count no float ops
            assert _tune_context(t, X86, 0).generate_design_space(), t.name


def test_verified_record_for_a_winograd_kernel_is_applied_and_exact(tmp_path):
    """A record (a plain MetaSchedule design of the unscheduled Winograd compute) in the
    verified database replaces the hand schedule at compile time; the build still matches
    onnxruntime (compile-time check) and an independent numpy conv."""
    from tvm.s_tir import meta_schedule as ms

    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.runtime import ArtifactSession
    from nrqc.tuning.database import open_for_target, open_selected, target_dir, workload_mod
    from nrqc.tuning.tune import _tune_context, extract_tasks

    wt, b = _conv_model(tmp_path / "wg.onnx", 16, 32, 8, 10, 3, 1, 1, bias=True, pool="max")
    tasks, _ = extract_tasks(tmp_path / "wg.onnx", X86)
    (task,) = [t for t in tasks if t.name.startswith("nrqc_winograd_conv")]
    design = _tune_context(task, X86, 0).generate_design_space()[0]
    db_dir = tmp_path / "db"
    open_for_target(db_dir, X86, create=True)
    selected = open_selected(target_dir(db_dir, X86), create=True)
    wl_mod = workload_mod(task.func)
    selected.commit_tuning_record(ms.database.TuningRecord(
        design.trace, selected.commit_workload(wl_mod), [1e-3], X86.tvm(),
        ms.arg_info.ArgInfo.from_prim_func(wl_mod["main"])))

    out = compile_model(tmp_path / "wg.onnx", "x86", tmp_path / "out", CompileOptions(db=str(db_dir)),
                        log=lambda m: None)
    man = json.loads((out / "manifest.json").read_text())
    assert man["tuning"]["tuned"] is True
    assert any("1 of" in n and "1 of them verified" in n for n in man["notes"]), man["notes"]
    assert man["check"]["passed"] and man["check"]["max_abs_error"] < 1e-4, man["check"]

    x = np.random.default_rng(5).standard_normal((1, 16, 8, 10)).astype(np.float32)
    got = ArtifactSession(out).run({"x": x})[0]
    xp = np.pad(x[0].astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    conv = np.einsum("cyxij,kcij->kyx", np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2)), wt)
    ref = np.maximum(conv + b[:, None, None], 0).reshape(32, 4, 2, 5, 2).max(axis=(2, 4))[None]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # a few minutes: worker start-up, builds and measurements of the Winograd compute
def test_tune_a_winograd_kernel_keeps_the_faster_schedule(tmp_path):
    """A real tune of the Winograd task: the hand schedule is measured as the baseline and
    the verified choice is the faster one by re-measurement."""
    from nrqc.tuning.tune import tune_model

    _conv_model(tmp_path / "wg.onnx", 16, 32, 8, 10, 3, 1, 1, bias=True, pool="max")
    progress = tune_model(tmp_path / "wg.onnx", X86, 8, tmp_path / "db", min_trials_per_task=8,
                          num_trials_per_iter=8, only_tasks=["nrqc_winograd_conv0"], log=lambda m: None)
    rec = progress["tasks"]["nrqc_winograd_conv0"]
    assert rec["shipped_ms"] > 0 and rec["trials"] >= 8
    ver = rec["verified"]
    assert "shipped" in ver["candidates_ms"] and len(ver["candidates_ms"]) >= 2, ver
    assert ver["ms"] == pytest.approx(min(ver["candidates_ms"].values()), rel=1e-3) or ver["choice"] == "shipped"
