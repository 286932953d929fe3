"""Cortex-M back end: C library + firmware built with arm-none-eabi-gcc, run in QEMU,
compared with onnxruntime (independent reference)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_cli

_MISSING = [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "qemu-system-arm")
            if not shutil.which(t)]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"Cortex-M toolchain/emulator missing: {', '.join(_MISSING)} "
                                                       f"(apt install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)")


def vad_like_model(path: Path, seed: int = 0, mels: int = 40, frames: int = 32, hidden: int = 32) -> Path:
    """A VAD-shaped float model on a log-mel patch [1,1,mels,frames]: three 3x3 Conv+Relu+MaxPool
    stages (8/16/32 channels), Flatten, MatMul+Add+Relu, MatMul -> 2 logits (~26 k parameters)."""
    rng = np.random.default_rng(seed)

    def init(name, shape, fan_in):
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)

    flat = 32 * (mels // 8) * (frames // 8)
    inits = [init("w0", (8, 1, 3, 3), 9), init("b0", (8,), 9), init("w1", (16, 8, 3, 3), 72), init("b1", (16,), 72),
             init("w2", (32, 16, 3, 3), 144), init("b2", (32,), 144), init("d0", (flat, hidden), flat),
             init("db0", (hidden,), 1), init("d1", (hidden, 2), hidden)]
    nodes = []
    x = "x"
    for i in range(3):
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
                  helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2])]
        x = f"p{i}"
    nodes += [helper.make_node("Flatten", [x], ["f"]), helper.make_node("MatMul", ["f", "d0"], ["h"]),
              helper.make_node("Add", ["h", "db0"], ["h1"]), helper.make_node("Relu", ["h1"], ["h2"]),
              helper.make_node("MatMul", ["h2", "d1"], ["y"])]
    g = helper.make_graph(nodes, "vad_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, mels, frames])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _ort(model: Path, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.fixture(scope="module")
def m4_artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("cm4")
    model = vad_like_model(d / "vad.onnx")
    out = d / "out"
    proc = run_cli("compile", model, "--target", "cortex-m4", "-o", out)
    return model, out, proc


def test_m4_library_layout_and_check(m4_artifact):
    model, out, proc = m4_artifact
    manifest = json.loads((out / "manifest.json").read_text())
    # The compile-time check ran the firmware in QEMU and compared with onnxruntime.
    assert manifest["check"]["ran"] and manifest["check"]["passed"], manifest["check"]
    assert manifest["check"]["max_abs_error"] < 1e-4
    assert "numerical check in QEMU (cortex-m4)" in proc.stderr + proc.stdout
    # the three conv+ReLU layers and the two dense layers run nrqc's register-blocked float conv
    # (geometry, weight orientation and epilogue found by behaviour), the max pools nrqc_f32_maxpool
    convs = [layer for layer in manifest["layers"] if layer["op"] in ("Conv", "MatMul")]
    assert len(convs) == 5 and all(str(layer["kernel"]).startswith("nrqc:nrqc_f32conv") for layer in convs), convs
    pools = [layer for layer in manifest["layers"] if layer["op"] == "MaxPool"]
    assert len(pools) == 3 and all(str(layer["kernel"]).startswith("nrqc:nrqc_f32maxpool") for layer in pools)
    for f in ("nrqc_model.h", "nrqc_model.c", "nrqc_kernels.c", "nrqc_weights.c", "nrqc_runtime.c", "report.txt",
              "firmware/firmware.elf"):
        assert (out / f).exists(), f
    header = (out / "nrqc_model.h").read_text()
    assert "int nrqc_run(const float *in0, float *out0);" in header
    arena = int(re.search(r"#define NRQC_ARENA_BYTES (\d+)u", header).group(1))
    assert arena == manifest["arena_bytes"]
    # One static arena, const weights, no heap, nothing from libc beyond string.h.
    srcs = "".join((out / f).read_text() for f in manifest["sources"])
    assert not re.search(r"\b(malloc|calloc|free|printf)\s*\(", srcs)
    # 9 initializers, + a zero bias for the last dense layer (nrqc_f32_conv always adds one)
    assert (out / "nrqc_weights.c").read_text().count("const float nrqc_w") == 10
    nm = subprocess.run(["arm-none-eabi-nm", "-u", *sorted(map(str, (out / "firmware" / "build").glob("*.o")))],
                        capture_output=True, text=True, check=True).stdout
    undefined = {ln.split()[-1] for ln in nm.splitlines() if ln.strip() and not ln.endswith(":")}
    defined = subprocess.run(["arm-none-eabi-nm", "--defined-only",
                              *sorted(map(str, (out / "firmware" / "build").glob("*.o")))],
                             capture_output=True, text=True, check=True).stdout
    undefined -= {ln.split()[-1] for ln in defined.splitlines() if len(ln.split()) == 3}
    assert undefined <= {"memcpy", "memset"} | {s for s in undefined if s.startswith("__aeabi")}, undefined
    # The weights are in flash: 26,464 float parameters; the 32->2 dense layer's weights padded to
    # 4 outputs (nrqc_f32_conv's register block) with a zero bias: 32 x 4 + 4 instead of 32 x 2.
    assert manifest["weights_bytes"] == 4 * (72 + 8 + 1152 + 16 + 4608 + 32 + 640 * 32 + 32 + 32 * 4 + 4)
    assert manifest["flash_bytes"] >= manifest["weights_bytes"]
    assert manifest["ram_bytes"] >= arena
    report = (out / "report.txt").read_text()
    assert "cortex-m footprint" in report and f"{manifest['flash_bytes']:,} B of 262,144" in report


def test_m4_run_matches_onnxruntime_on_new_input(m4_artifact, tmp_path):
    model, out, _ = m4_artifact
    x = np.random.default_rng(123).standard_normal((1, 1, 40, 32)).astype(np.float32) * 2
    np.save(tmp_path / "x.npy", x)
    run_cli("run", out, "--input", f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "y.npy")
    got = np.load(tmp_path / "y.npy")
    ref = _ort(model, {"x": x})[0]
    assert got.shape == ref.shape == (1, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    # a different input gives different outputs (the file really reached the firmware)
    x2 = -x
    np.save(tmp_path / "x2.npy", x2)
    run_cli("run", out, "--input", f"x={tmp_path / 'x2.npy'}", "-o", tmp_path / "y2.npy")
    np.testing.assert_allclose(np.load(tmp_path / "y2.npy"), _ort(model, {"x": x2})[0], rtol=1e-4, atol=1e-4)
    assert not np.allclose(np.load(tmp_path / "y2.npy"), got)


def test_m4_profile_json(m4_artifact):
    model, out, _ = m4_artifact
    a = json.loads(run_cli("profile", out, "--json").stdout)
    b = json.loads(run_cli("profile", out, "--json").stdout)
    size = subprocess.run(["arm-none-eabi-size", "-t", *sorted(map(str, (out / "firmware" / "build").glob("*.o")))],
                          capture_output=True, text=True, check=True).stdout
    text, data, bss = (int(v) for v in size.strip().splitlines()[-1].split()[:3])
    assert a["memory"]["flash_bytes"] == text + data
    assert a["memory"]["ram_bytes"] == data + bss
    assert a["memory"]["flash_bytes"] <= 256 * 1024 and a["memory"]["ram_bytes"] <= 64 * 1024 and a["memory"]["fits"]
    # Executed instructions: deterministic under -icount, and at least one per multiply-accumulate.
    manifest = json.loads((out / "manifest.json").read_text())
    assert a["instructions"] == b["instructions"]
    assert a["instructions"] > manifest["macs"] > 800_000
    text_out = run_cli("profile", out).stdout
    assert "flash" in text_out and "instructions/inference" in text_out


def test_does_not_fit_m4(tmp_path):
    """A 1280x64 dense layer (327 KB of float weights) cannot fit 256 KB of flash."""
    rng = np.random.default_rng(0)
    d = numpy_helper.from_array(rng.standard_normal((1280, 64)).astype(np.float32), "d")
    g = helper.make_graph([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "d"], ["y"])],
                          "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 40, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [d])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "big.onnx"))
    proc = run_cli("compile", tmp_path / "big.onnx", "--target", "cortex-m4", "-o", tmp_path / "o", check_exit=2)
    assert "big.onnx does not fit cortex-m4: flash" in proc.stderr and "> 262,144 B" in proc.stderr
    assert not (tmp_path / "o").exists()
    # The same model fits the M7's 2 MB (compile only, no QEMU run).
    run_cli("compile", tmp_path / "big.onnx", "--target", "cortex-m7", "-o", tmp_path / "o7", "--no-check")
    assert json.loads((tmp_path / "o7" / "manifest.json").read_text())["flash_bytes"] > 1280 * 64 * 4


def test_does_not_fit_m4_ram(tmp_path):
    """Conv(1->8, 3x3) + Relu + Conv(8->1) on a 64x64 map: 2.5 KB of code and weights, but the
    8x64x64 float map between the convs (131,072 B) must live in the arena: more than the
    M4's 64 KiB of RAM. Compile exits 2 with one error line naming RAM and the limit, and
    writes nothing; the M7 (1 MiB RAM) takes the same model."""
    rng = np.random.default_rng(0)
    w0 = numpy_helper.from_array((rng.standard_normal((8, 1, 3, 3)) / 3).astype(np.float32), "w0")
    w1 = numpy_helper.from_array((rng.standard_normal((1, 8, 3, 3)) / 8).astype(np.float32), "w1")
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 64, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 64, 64])], [w0, w1])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "wide.onnx"))
    proc = run_cli("compile", tmp_path / "wide.onnx", "--target", "cortex-m4", "-o", tmp_path / "o", check_exit=2)
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower() or "does not fit" in ln]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    hit = re.fullmatch(r"nrqc: error: wide\.onnx does not fit cortex-m4: RAM ([\d,]+) B \(arena ([\d,]+)\) "
                       r"\+ stack ([\d,]+) B > 65,536 B", errors[0])
    assert hit, errors[0]
    ram, arena, stack = (int(v.replace(",", "")) for v in hit.groups())
    assert arena >= 8 * 64 * 64 * 4 and ram >= arena and ram + stack > 64 * 1024
    assert "flash" not in errors[0]  # the flash (a few KB) fits: RAM is the reason
    assert not (tmp_path / "o").exists()
    run_cli("compile", tmp_path / "wide.onnx", "--target", "cortex-m7", "-o", tmp_path / "o7", "--no-check")
    man7 = json.loads((tmp_path / "o7" / "manifest.json").read_text())
    assert man7["arena_bytes"] == arena and man7["flash_bytes"] < 64 * 1024


def test_m7_matches_onnxruntime(tmp_path):
    model = vad_like_model(tmp_path / "vad.onnx", seed=3, mels=24, frames=16, hidden=16)
    out = tmp_path / "out7"
    run_cli("compile", model, "--target", "cortex-m7", "-o", out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "cortex-m7" and manifest["check"]["passed"]
    x = np.random.default_rng(9).standard_normal((1, 1, 24, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run_cli("run", out, "--input", f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "y.npy")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), _ort(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_m4_global_max_pool_model(tmp_path):
    """Regression: the BAM architecture's float twin (MaxPool to 2x1, GlobalMaxPool, 3 dense)
    once came out wrong in C (an unrolled max reduction reused a stale load)."""
    from tests.binary_models import bam_model

    model = bam_model(tmp_path / "bamf.onnx", frames=32, bands=16, channels=(8, 8, 8, 16), head=16, float_model=True)
    out = tmp_path / "o"
    run_cli("compile", model, "--target", "cortex-m4", "-o", out)
    assert json.loads((out / "manifest.json").read_text())["check"]["passed"]
    x = np.random.default_rng(1).standard_normal((1, 1, 32, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run_cli("run", out, "--input", f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "y.npy")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), _ort(model, {"x": x})[0], rtol=1e-4, atol=1e-5)
