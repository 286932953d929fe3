"""Training end to end on the synthetic case study: learned widths, α trade-off, resumption,
checkpoint -> export through the CLI."""
import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from nrqc.cli import main
from nrqc.training.synthetic import K_TRUE
from nrqc.training.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def alpha_runs(tmp_path_factory):
    out = {}
    for alpha in (0.1, 3.0):
        d = tmp_path_factory.mktemp(f"syn{alpha}")
        out[alpha] = train(TrainConfig("synthetic", "reparam", complexity_weight=alpha), d, progress=False)
    return out


def test_input_width_converges_to_the_informative_features(alpha_runs):
    # Only the first K_TRUE = 6 of 16 features carry information; K starts at 16.
    for alpha, r in alpha_runs.items():
        k = r["history"][-1]["widths"]["features"]
        assert K_TRUE - 0.5 <= k <= K_TRUE + 1.0, (alpha, k)
        assert r["complexity"]["widths"]["features"] in (K_TRUE, K_TRUE + 1)  # ⌈K⌉
        assert r["test"]["r2"] > 0.98  # and the task is still solved


def test_larger_alpha_gives_fewer_macs(alpha_runs):
    lo, hi = alpha_runs[0.1]["complexity"]["macs"], alpha_runs[3.0]["complexity"]["macs"]
    assert hi < lo < alpha_runs[0.1]["full_macs"]


def test_budget_holds_macs(tmp_path):
    r = train(TrainConfig("synthetic", "reparam", budget_macs=200, epochs=30), tmp_path, progress=False)
    assert r["history"][-1]["macs_soft"] <= 200 * 1.05


def test_resume_continues_the_same_run(tmp_path):
    a = train(TrainConfig("synthetic", "bam", epochs=2, samples=512), tmp_path, progress=False)
    assert a["epochs_run"] == 2
    b = train(TrainConfig("synthetic", "bam", epochs=4, samples=512), tmp_path, progress=False)
    assert b["epochs_run"] == 4 and [h["epoch"] for h in b["history"]] == [1, 2, 3, 4]
    assert b["history"][:2] == a["history"]
    # a fresh 4-epoch run from the same seed reproduces the resumed one exactly
    c = train(TrainConfig("synthetic", "bam", epochs=4, samples=512), tmp_path / "fresh", progress=False)
    assert [h["train_loss"] for h in c["history"]] == pytest.approx([h["train_loss"] for h in b["history"]], rel=1e-5)


def test_cli_train_then_export(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["train", "synthetic", "--variant", "bam-reparam", "--complexity-weight", "1",
                             "--epochs", "15", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["variant"] == "bam-reparam" and len(m["history"]) == 15 and "macs" in m["history"][0]
    r = runner.invoke(main, ["export", str(tmp_path / "run" / "checkpoint.pt"), "-o", str(tmp_path / "m.onnx"), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(model)
    assert s["after"]["macs"] < s["before"]["macs"] and s["parity"]["agree_fraction"] == 1.0
    assert s["input"]["shape"] == [1, m["complexity"]["widths"]["features"]]
    # bam-reparam: the all-integer first layer reads the kept features quantized to int8
    assert [n.op_type for n in model.graph.node][:6] == ["QuantizeLinear", "DequantizeLinear", "DequantizeLinear",
                                                         "MatMul", "Greater", "Cast"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert float(meta["nrqc.input.features.scale"]) == pytest.approx(m["input_quant"]["scale"], rel=1e-7)
    assert m["first_layer"] == "int8" and m["input_quant"]["bands"] == m["complexity"]["widths"]["features"]


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["train", "synthetic", "--variant", "float", "--complexity-weight", "1", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--complexity-weight" in r.output
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    r = runner.invoke(main, ["export", str(tmp_path / "bad.pt"), "-o", str(tmp_path / "x.onnx")])
    assert r.exit_code == 2 and "bad.pt" in r.output
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.bin").write_bytes(b"x")
    r = runner.invoke(main, ["train", "vad", "--data", str(junk), "--out", str(tmp_path / "o"), "--epochs", "1"])
    assert r.exit_code == 2 and "junk" in r.output and "Traceback" not in r.output
