"""The real third-party DNSMOS P.808 model through compile, run and profile on x86."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def dnsmos_x86(tmp_path_factory, dnsmos_path):
    out = tmp_path_factory.mktemp("dnsmos") / "dns-x86"
    proc = run_cli("compile", dnsmos_path, "--target", "x86", "-o", out)
    return out, proc


def test_compile_writes_library_manifest_report(dnsmos_x86):
    out, proc = dnsmos_x86
    assert (out / "model.so").stat().st_size > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "x86"
    assert manifest["inputs"] == [{"name": "input_1", "shape": [1, 900, 120], "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": "Identity:0", "shape": [1, 1], "dtype": "float32"}]
    assert manifest["tvm_version"].startswith("0.27")
    assert "relax.LegalizeOps" in manifest["passes"] and "relax.StaticPlanBlockMemory" in manifest["passes"]
    assert manifest["passes"].index("relax.LegalizeOps") < manifest["passes"].index("relax.StaticPlanBlockMemory")
    report = (out / "report.txt").read_text()
    assert "conv2d_6" in report and "numerical check" in report


def test_weights_and_macs_match_hand_counts(dnsmos_x86, dnsmos_path):
    out, _ = dnsmos_x86
    manifest = json.loads((out / "manifest.json").read_text())
    model = onnx.load(str(dnsmos_path))
    # 54,945 float32 parameters (the model's README) = the initializers' bytes.
    init_bytes = sum(numpy_helper.to_array(i).nbytes for i in model.graph.initializer)
    assert init_bytes == 54945 * 4
    # The four 32-channel 3x3 convs run as Winograd F(2x2,3x3): their weights are stored
    # transformed, 16 instead of 9 values per filter (32*32*9*3 + 64*32*9 = 46,080 weights).
    # (+ 4 bytes: the NaN constant nrqc.PropagateNaN selects when the head's ReduceMax sees a NaN)
    assert manifest["weights_bytes"] == init_bytes + 46080 * (16 - 9) // 9 * 4 + 4
    convs = {layer["name"]: layer for layer in manifest["layers"] if layer["op"] == "Conv"}
    # Hand count: out_channels * H_out * W_out * in_channels * 3 * 3 (all convs are 'same', 3x3).
    expect = {"conv2d_5": 32 * 900 * 120 * 1 * 9, "conv2d_6": 32 * 450 * 60 * 32 * 9,
              "conv2d_7": 32 * 225 * 30 * 32 * 9, "conv2d_8": 32 * 225 * 30 * 32 * 9,
              "conv2d_9": 64 * 112 * 15 * 32 * 9}
    assert {k: v["macs"] for k, v in convs.items()} == expect
    assert 430e6 < manifest["macs"] < 440e6  # "about 435 M" per the model's README
    for layer in manifest["layers"]:
        assert {"name", "op", "kernel", "act_bits", "weight_bits", "macs"} <= layer.keys()
        assert layer["kernel"].startswith(("tvm:", "nrqc:nrqc_winograd"))


def test_memory_plan_is_reported(dnsmos_x86):
    out, _ = dnsmos_x86
    m = json.loads((out / "manifest.json").read_text())
    # conv2d_5 (+ its 2x2 max-pool) writes the 32x450x60 float32 map conv2d_6 reads, and
    # conv2d_6 writes another of 32x225x30 while reading it: both are live at once.
    assert m["peak_activation_bytes"] >= (32 * 450 * 60 + 32 * 225 * 30) * 4
    assert m["memory_plan"]["planned_storage_bytes"] > 0


def test_compile_check_matches_onnxruntime(dnsmos_x86):
    out, proc = dnsmos_x86
    m = json.loads((out / "manifest.json").read_text())
    assert m["check"]["ran"] and m["check"]["passed"]
    assert m["check"]["max_abs_error"] < 1e-4
    assert "max abs error" in proc.stderr


def test_run_matches_onnxruntime_on_a_real_input(dnsmos_x86, dnsmos_path, tmp_path):
    out, _ = dnsmos_x86
    # A log-mel-like input in the model's range ((dB+40)/40, dB <= 0).
    x = np.random.default_rng(7).uniform(-1.0, 1.0, (1, 900, 120)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run_cli("run", out, "--input", f"input_1={tmp_path / 'x.npy'}", "-o", tmp_path / "y.npy")
    got = np.load(tmp_path / "y.npy")
    ref = ort.InferenceSession(str(dnsmos_path)).run(None, {"input_1": x})[0]
    assert got.shape == (1, 1)
    assert np.max(np.abs(got - ref)) < 1e-4


def test_profile_json_prints_both_latencies_and_memory(dnsmos_x86):
    out, _ = dnsmos_x86
    p = json.loads(run_cli("profile", out, "--repeat", "3", "--json").stdout)
    assert p["latency_ms"]["median"] > 0 and p["onnxruntime_latency_ms"]["median"] > 0
    assert p["speedup_vs_onnxruntime"] == pytest.approx(
        p["onnxruntime_latency_ms"]["median"] / p["latency_ms"]["median"])
    assert p["threads"] == 1
    assert p["memory"]["weights_bytes"] == json.loads((out / "manifest.json").read_text())["weights_bytes"]
    assert p["memory"]["peak_activation_bytes"] > 0 and p["memory"]["library_bytes"] > 0
    kernels = [r["kernel"] for r in p["operators"]]
    assert any("conv2d" in k for k in kernels)
    assert p["tuning"]["tuned"] is False


def test_profile_table_text(dnsmos_x86):
    out, _ = dnsmos_x86
    text = run_cli("profile", out, "--repeat", "2").stdout
    assert "nrqc" in text and "onnxruntime" in text and "peak activations" in text


@pytest.mark.slow
def test_compile_for_arm_cpu_gives_an_aarch64_elf(tmp_path, dnsmos_path):
    out = tmp_path / "dns-arm"
    run_cli("compile", dnsmos_path, "--target", "rasp4b", "-o", out)
    head = (out / "model.so").read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[4] == 2  # 64-bit
    assert int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    m = json.loads((out / "manifest.json").read_text())
    assert m["target"] == "arm_cpu"
    check = m["check"]
    if check["ran"]:  # the emulated board's root file system is cached here: checked on it
        assert check["passed"] and check["emulated"] is True and check["max_abs_error"] < 1e-4
    else:  # no board, no cached emulator: says why and how
        assert "nrqc emulate arm_cpu" in check["reason"] and "--rpc HOST:PORT" in check["reason"]
    assert (out / "DEPLOY.md").exists()
