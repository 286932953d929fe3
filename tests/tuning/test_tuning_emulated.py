"""Tuning without the device: the emulated Pi's cycle estimate (arm_cpu) and QEMU
instruction counts of the Cortex-M kernels' knobs (cortex-m4).

Default (fast): the knob database's key handling and the knob space read from a manifest.
Slow (emulator runs): a real tune of a tiny model for each target whose database
`nrqc compile --db` applies, in a fresh process as a user would run it.
"""
from __future__ import annotations

import json
import shutil

import pytest

from nrqc.errors import NrqcError
from tests.conftest import run_cli


def test_knob_database_round_trip_and_keys(tmp_path):
    from nrqc.targets import get_target
    from nrqc.tuning.cortex_m_db import read_knobs, write_knobs

    m4, m7 = get_target("cortex-m4"), get_target("cortex-m7")
    assert read_knobs(None, m4) == (None, None)
    config = {"binary_conv:0123456789ab": {"table": "flash", "pairs_per_block": 2}}
    write_knobs(tmp_path, m4, config, {"measure": "test"})
    got, note = read_knobs(tmp_path, m4)
    assert got == config and "1 kernel(s)" in note
    other, why = read_knobs(tmp_path, m7)  # another core: its own key, no records
    assert other is None and "no Cortex-M knob choices for cortex-m7" in why
    (next(tmp_path.glob("cortex-m4-*")) / "cortex_m_knobs.json").write_text("{not json")
    with pytest.raises(NrqcError, match="unreadable Cortex-M knob database"):
        read_knobs(tmp_path, m4)


def test_knob_space_comes_from_the_kernels_a_compile_built():
    from nrqc.cortex_m import knobs
    from nrqc.tuning.cortex_m_tune import knob_space

    layers = [{"strategy": None}, {"strategy": {"knob_key": "binary_conv:aaa"}},
              {"strategy": {"knob_key": "binary_conv:aaa"}}, {"strategy": {"strategy": "select-add"}}]
    assert knob_space(layers) == {"binary_conv:aaa": knobs.choices("binary_conv")}


def test_a_target_without_a_board_or_emulator_is_refused():
    from nrqc.targets import get_target
    from nrqc.tuning.emulated import emulated_cpu, make_emulated_runner

    assert emulated_cpu(get_target("arm_cpu")) == "cortex-a72"
    assert emulated_cpu(get_target("arm_cpu_a76")) == "cortex-a76"
    assert emulated_cpu(get_target("armv7")) is None
    with pytest.raises(NrqcError, match="no emulated board"):
        make_emulated_runner(get_target("armv7"))


needs_board = pytest.mark.skipif(shutil.which("qemu-aarch64-static") is None or shutil.which("llvm-mca") is None,
                                 reason="qemu-user-static / llvm not installed")


@pytest.mark.slow
@needs_board
def test_arm_cpu_tune_without_a_board_writes_a_database_compile_applies(tmp_path):
    from tests.onnx_builders import small_conv_model

    model = small_conv_model(tmp_path / "m.onnx")
    db = tmp_path / "db"
    run_cli("tune", model, "--target", "arm_cpu", "--trials", "2", "--min-trials", "1", "--trials-per-batch", "2",
            "--db", db, timeout=3600)
    (sub,) = db.glob("arm_cpu-*")
    progress = json.loads((sub / "progress.json").read_text())
    assert progress["measure"].startswith("estimated cycles") and "cortex-a72" in progress["measure"]
    verified = [t["verified"] for t in progress["tasks"].values() if t.get("verified", {}).get("choice")]
    assert verified and all(v["rounds"] == 1 and v["ms"] > 0 for v in verified)
    out = tmp_path / "out"
    run_cli("compile", model, "-t", "arm_cpu", "--db", db, "-o", out, "--no-check")
    notes = " ".join(json.loads((out / "manifest.json").read_text())["notes"])
    assert f"tuning database {db}" in notes and "kernels from tuning records" in notes


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm not installed")
def test_cortex_m_tune_searches_the_knobs_and_compile_applies_them(tmp_path):
    from tests.binary_models import bam_model

    model = bam_model(tmp_path / "bam.onnx", frames=24, bands=16, channels=(8, 16), head=8)
    db = tmp_path / "db"
    run_cli("tune", model, "--target", "cortex-m4", "--db", db, timeout=3600)
    (sub,) = db.glob("cortex-m4-*")
    data = json.loads((sub / "cortex_m_knobs.json").read_text())
    counts = [t["instructions"] for t in data["trials"] if t["instructions"]]
    assert len(data["trials"]) > 2 and len(set(counts)) > 1  # the knobs change the code
    assert data["instructions"]["tuned"] == min(counts) <= data["instructions"]["default"]
    out = tmp_path / "out"
    run_cli("compile", model, "-t", "cortex-m4", "--db", db, "-o", out)  # checked against onnxruntime in QEMU
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["instructions"] == data["instructions"]["tuned"]
    used = {l["strategy"]["knob_key"]: l["strategy"]["knobs"] for l in manifest["layers"]
            if (l.get("strategy") or {}).get("knob_key")}
    for key, knobs in data["config"].items():
        assert {k: used[key][k] for k in knobs} == knobs
