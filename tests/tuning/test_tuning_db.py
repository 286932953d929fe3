"""`nrqc tune` -> database -> `nrqc compile --db`: keys, application, resume, progress."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_cli


def _dense_model(path, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
         helper.make_node("Relu", ["a"], ["y"])], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 32])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return w, b


def test_keys_differ_per_target_and_cpu_features():
    from nrqc.targets import get_target
    from nrqc.tuning.database import key_material, target_key

    x86 = get_target("x86")
    arm = get_target("arm_cpu")
    assert target_key(x86) != target_key(arm)
    # same target name, another CPU / feature set => another key
    other_cpu = dataclasses.replace(x86, tvm_target={**x86.tvm_target, "mcpu": "haswell"})
    other_attr = dataclasses.replace(arm, tvm_target={**arm.tvm_target, "mattr": ["+neon", "+dotprod"]})
    assert target_key(other_cpu) != target_key(x86)
    assert target_key(other_attr) != target_key(arm)
    assert key_material(x86)["host_cpu_flags_sha256"] is not None  # host flags are part of the key
    assert target_key(x86) == target_key(get_target("host"))  # aliases are the same target


def test_database_of_another_target_is_ignored(tmp_path):
    from nrqc.targets import get_target
    from nrqc.tuning.database import open_for_target

    db, why = open_for_target(tmp_path / "db", get_target("arm_cpu"), create=True)
    assert db is not None
    db2, why2 = open_for_target(tmp_path / "db", get_target("x86"))
    assert db2 is None and "no records for target x86" in why2 and "arm_cpu-" in why2
    # a compile with it: not tuned, a note says why
    _dense_model(tmp_path / "d.onnx")
    run_cli("compile", tmp_path / "d.onnx", "-o", tmp_path / "out", "--db", tmp_path / "db")
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["tuning"]["tuned"] is False
    assert any("ignored" in n and "no records for target x86" in n for n in man["notes"]), man["notes"]


def test_verified_choice_keeps_shipped_unless_clearly_faster():
    from nrqc.tuning.tune import choose_verified

    assert choose_verified({"shipped": 1.00, "record 1": 0.99}, "shipped", 0.98) == "shipped"  # within noise
    assert choose_verified({"shipped": 1.00, "record 1": 0.90, "record 2": 0.95}, "shipped", 0.98) == "record 1"
    assert choose_verified({"shipped": 0.80, "record 1": 0.90}, "shipped", 0.98) == "shipped"
    assert choose_verified({"record 1": 0.9, "record 2": 0.7}, None, 0.98) == "record 2"  # no shipped rule


@pytest.mark.slow  # 2-5 min on a loaded 2-core machine (worker start-up, builds, measurements)
def test_tune_compile_resume_profile(tmp_path):
    """A real (tiny) MetaSchedule run: records measured here, applied by compile, a rerun
    resumes without measuring again, the profile says tuned + which database."""
    w, b = _dense_model(tmp_path / "d.onnx")
    db = tmp_path / "db"
    proc = run_cli("tune", tmp_path / "d.onnx", "--trials", "4", "--min-trials", "4", "--trials-per-batch", "4",
                   "--db", db, timeout=600)
    err = proc.stderr
    assert "1 tasks, 4 trials" in err, err[-2000:]
    assert "[1/1 tasks]" in err and "best" in err and "left" in err, err[-2000:]
    (sub,) = [p for p in db.iterdir() if p.is_dir()]
    progress = json.loads((sub / "progress.json").read_text())
    (task,) = progress["tasks"].values()
    assert task["trials"] >= 4 and task["best_ms"] > 0 and task["shipped_ms"] > 0
    records = (sub / "database_tuning_record.json").read_text().strip().splitlines()
    assert len(records) >= 2  # the shipped schedule + at least one tuned candidate
    # the winner re-measured against the shipped schedule, interleaved, kept in selected_*
    ver = task["verified"]
    assert ver["candidates_ms"]["shipped"] > 0 and len(ver["candidates_ms"]) >= 2, ver
    # candidates_ms is rounded to 0.1 us in progress.json
    assert ver["ms"] == pytest.approx(min(ver["candidates_ms"].values()), abs=1e-4) or ver["choice"] == "shipped", ver
    assert len((sub / "selected_tuning_record.json").read_text().strip().splitlines()) == 1

    run_cli("compile", tmp_path / "d.onnx", "-o", tmp_path / "out", "--db", db)
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["tuning"] == {"tuned": True, "database": str(db)}
    assert any("1 of 1 kernels from tuning records, 1 of them verified" in n for n in man["notes"]), man["notes"]
    assert man["check"]["passed"] and man["check"]["max_abs_error"] < 1e-4

    from nrqc.runtime import ArtifactSession

    x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    got = ArtifactSession(tmp_path / "out").run({"x": x})[0]
    np.testing.assert_allclose(got, np.maximum(x.astype(np.float64) @ w + b, 0), atol=2e-4, rtol=1e-4)

    again = run_cli("tune", tmp_path / "d.onnx", "--trials", "4", "--min-trials", "4", "--db", db, timeout=600)
    assert "done before" in again.stderr and "skipped" in again.stderr, again.stderr[-2000:]
    assert len((sub / "database_tuning_record.json").read_text().strip().splitlines()) == len(records)

    prof = run_cli("profile", tmp_path / "out", "--repeat", "2")
    assert f"tuned with {db}" in prof.stdout + prof.stderr


@pytest.mark.slow  # ~1-2 min: a real search cut short by its time budget
def test_time_budget_ends_the_search_and_resume_continues(tmp_path):
    """--minutes: a budget of far more trials than fit stops at the clock (the task listed
    as cut short, its trials so far kept), and the winner is still verified."""
    import time

    _dense_model(tmp_path / "d.onnx")
    db = tmp_path / "db"
    t0 = time.perf_counter()
    proc = run_cli("tune", tmp_path / "d.onnx", "--trials", "2000", "--trials-per-batch", "4", "--minutes", "1",
                   "--db", db, timeout=900)
    wall = time.perf_counter() - t0
    (sub,) = [p for p in db.iterdir() if p.is_dir()]
    progress = json.loads((sub / "progress.json").read_text())
    (name, task), = progress["tasks"].items()
    assert progress["short_of_time"] == [name], proc.stderr[-2000:]
    assert 4 <= task["trials"] < 2000 and task["verified"]["candidates_ms"], task
    assert "time share spent" in proc.stderr and "time budget of 1 min" in proc.stderr
    # the clock is checked between batches: one batch and the verification past the minute at most
    assert wall < 60 + 240, wall
