import json

import pytest

from nrqc.errors import NrqcError
from nrqc.targets import all_targets, get_target
from tests.conftest import run_cli


def test_targets_cli_lists_every_target():
    out = run_cli("targets").stdout
    for name in ("x86", "arm_cpu", "armv7", "cortex-m4", "cortex-m7"):
        assert name in out
    assert "rasp4b" in out


def test_targets_json_has_tvm_target_figures_and_sources():
    descs = json.loads(run_cli("targets", "--json").stdout)
    by_name = {d["name"]: d for d in descs}
    assert by_name["arm_cpu"]["tvm_target"]["mtriple"] == "aarch64-linux-gnu"
    assert "+neon" in by_name["arm_cpu"]["tvm_target"]["mattr"]
    assert by_name["arm_cpu"]["cross_compiler"] == "aarch64-linux-gnu-g++"
    assert by_name["cortex-m4"]["figures"]["flash_bytes"]["value"] == 256 * 1024
    assert by_name["cortex-m4"]["figures"]["ram_bytes"]["value"] == 64 * 1024
    for d in descs:
        for key in ("peak_int8_macs_per_cycle", "peak_popcount_bits_per_cycle", "clock_ghz"):
            fig = d["figures"][key]
            assert fig["value"] > 0 and fig["source"], (d["name"], key)


def test_x86_target_uses_the_host_cpu_name_not_native():
    import tvm

    t = get_target("x86")
    assert t.tvm_target["mcpu"] == str(tvm.target.codegen.llvm_get_system_cpu())
    assert t.tvm_target["mcpu"] != "native"
    t.tvm()  # TVM accepts it


def test_alias_and_unknown_target():
    assert get_target("rasp4b").name == "arm_cpu"
    with pytest.raises(NrqcError, match="valid targets are .*x86.*arm_cpu.*cortex-m4"):
        get_target("pdp11")
    assert {t.name for t in all_targets()} >= {"x86", "arm_cpu", "cortex-m4", "cortex-m7"}


def test_armv7_target_description():
    d = {t["name"]: t for t in json.loads(run_cli("targets", "--json").stdout)}["armv7"]
    assert d["kind"] == "linux-cross" and d["cross_compiler"] == "arm-linux-gnueabihf-g++"
    assert d["tvm_target"]["mtriple"] == "armv7l-linux-gnueabihf"
    assert {"+neon", "+vfp4"} <= set(d["tvm_target"]["mattr"])
    assert get_target("armhf").name == "armv7"
    get_target("armv7").tvm()  # TVM accepts it


def test_compile_for_armv7_gives_a_32bit_arm_hard_float_elf(tmp_path):
    import shutil
    import struct

    if shutil.which("arm-linux-gnueabihf-g++") is None:
        pytest.skip("no arm-linux-gnueabihf-g++ (apt-get install g++-arm-linux-gnueabihf, or scripts/setup.sh)")
    from tests.onnx_builders import small_conv_model

    out = tmp_path / "armv7"
    run_cli("compile", small_conv_model(tmp_path / "m.onnx"), "--target", "armv7", "-o", out,
            "--shape", "x=1,1,16,20")
    elf = (out / "model.so").read_bytes()
    assert elf[:4] == b"\x7fELF" and elf[4] == 1 and elf[5] == 1  # ELFCLASS32, little-endian
    e_type, e_machine = struct.unpack_from("<HH", elf, 16)
    e_flags = struct.unpack_from("<I", elf, 0x24)[0]
    assert e_type == 3 and e_machine == 40  # ET_DYN, EM_ARM
    assert e_flags >> 24 == 5 and e_flags & 0x400  # EABI version 5, EF_ARM_ABI_FLOAT_HARD (armhf)
    m = json.loads((out / "manifest.json").read_text())
    assert m["target"] == "armv7" and m["check"]["ran"] is False and "--rpc HOST:PORT" in m["check"]["reason"]
    md = (out / "DEPLOY.md").read_text()
    assert "no official TVM wheel" in md and "cmake --build ~/tvm-src/build --target runtime" in md
