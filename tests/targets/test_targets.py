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


# ------------------------------------------------------------------ capabilities
# Reference: LLVM's own feature list of a CPU (llvm_get_cpu_features), independent of the
# cpuinfo-named features nrqc keeps. LLVM name -> the name in Capabilities.features.
_LLVM_X86 = {"popcnt": "popcnt", "sse4.2": "sse4_2", "avx2": "avx2", "fma": "fma", "avx512f": "avx512f",
             "avx512bw": "avx512bw", "avx512vnni": "avx512_vnni", "avx512vbmi": "avx512vbmi",
             "avx512vpopcntdq": "avx512_vpopcntdq", "amx-int8": "amx_int8", "amx-tile": "amx_tile"}


def _llvm_features(tvm_target: dict) -> set[str]:
    import tvm

    return {str(f) for f in tvm.target.codegen.llvm_get_cpu_features(tvm.target.Target(tvm_target))}


@pytest.mark.parametrize("mcpu, vector_bits, registers", [
    ("x86-64-v2", 128, 16), ("haswell", 256, 16), ("x86-64-v4", 512, 32), ("icelake-server", 512, 32),
    ("sapphirerapids", 512, 32)])
def test_x86_capabilities_per_mcpu_match_llvm(monkeypatch, mcpu, vector_bits, registers):
    from nrqc.targets import x86

    monkeypatch.delenv("NRQC_NO_AMX", raising=False)
    caps = x86.describe(mcpu).caps
    llvm = _llvm_features({"kind": "llvm", "mcpu": mcpu})
    assert caps.isa == "x86" and (caps.vector_bits, caps.vector_registers) == (vector_bits, registers)
    for llvm_name, name in _LLVM_X86.items():
        assert (name in caps.features) == (llvm_name in llvm), (mcpu, llvm_name)
    # AMX tiles: a build for a named CPU uses them when the CPU has them, unless turned off
    monkeypatch.setenv("NRQC_NO_AMX", "1")
    assert not x86.describe(mcpu).caps.has("amx_int8")


def test_x86_capability_levels():
    """What each level means for the kernel strategies, spelled out."""
    from nrqc.targets import x86

    assert not x86.describe("x86-64-v2").caps.has("avx2")
    assert x86.describe("haswell").caps.has("avx2") and not x86.describe("haswell").caps.has("avx512f")
    assert not x86.describe("x86-64-v4").caps.has("avx512_vnni")
    assert x86.describe("icelake-server").caps.has("avx512_vnni", "avx512vbmi")
    assert x86.describe("cascadelake").caps.has("avx512_vnni") and not x86.describe("cascadelake").caps.has("avx512vbmi")


def test_host_capabilities_are_the_cpuinfo_flags_and_amx_only_when_usable():
    from nrqc.targets import x86

    host = x86.describe()
    cpuinfo = x86.host_cpu_flags()
    assert host.caps.features <= cpuinfo
    for name in ("popcnt", "avx2", "avx512f", "avx512_vnni", "avx512vbmi"):
        assert host.caps.has(name) == (name in cpuinfo), name
    assert host.caps.has("amx_int8") == x86.amx_usable()
    assert host.caps.vector_bits == (512 if "avx512f" in cpuinfo else 256 if "avx2" in cpuinfo else 128)


# required_flags as recorded by the manifests before capabilities existed (ISA flags read
# out of the description's notes): a build's cpu.isa_flags must not change.
_RECORDED_ISA_FLAGS = {
    "x86-64-v2": ["popcnt", "sse4_1", "sse4_2", "ssse3"],
    "haswell": ["avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "popcnt", "sse4_1", "sse4_2", "ssse3"],
    "x86-64-v4": ["avx", "avx2", "avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl", "bmi1", "bmi2", "f16c",
                  "fma", "popcnt", "sse4_1", "sse4_2", "ssse3"],
    "znver4": ["avx", "avx2", "avx512_bf16", "avx512_bitalg", "avx512_vbmi2", "avx512_vnni", "avx512_vpopcntdq",
               "avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512ifma", "avx512vbmi", "avx512vl", "bmi1",
               "bmi2", "f16c", "fma", "popcnt", "sse4_1", "sse4_2", "ssse3"],
}


@pytest.mark.parametrize("mcpu", list(_RECORDED_ISA_FLAGS))
def test_required_flags_come_from_capabilities_unchanged(mcpu):
    from nrqc.targets import x86

    desc = x86.describe(mcpu)
    assert x86.required_flags(desc) == _RECORDED_ISA_FLAGS[mcpu]
    assert not any(n in x86.ISA_FLAGS for n in desc.notes)  # notes are for people


def test_arm_and_cortex_m_capabilities_match_llvm():
    arm, v7, m4 = get_target("arm_cpu"), get_target("armv7"), get_target("cortex-m4")
    a72 = _llvm_features(arm.tvm_target)
    assert arm.caps.isa == "aarch64" and (arm.caps.vector_bits, arm.caps.vector_registers) == (128, 32)
    for name in ("neon", "dotprod", "i8mm"):  # Cortex-A72 is ARMv8.0-A: NEON, no sdot/udot, no i8mm
        assert arm.caps.has(name) == (name in a72), name
    assert "dotprod" in _llvm_features({**arm.tvm_target, "mcpu": "cortex-a76"})  # the reference can say yes
    a7 = _llvm_features(v7.tvm_target)
    assert v7.caps.isa == "armv7" and (v7.caps.vector_bits, v7.caps.vector_registers) == (128, 16)
    assert v7.caps.has("neon", "vfp4") and {"neon", "vfp4"} <= a7
    # Cortex-M: C code (no vector registers); LLVM's Thumb description of the same core has the DSP extension
    m4_llvm = _llvm_features({"kind": "llvm", "mtriple": "thumbv7em-none-eabi", "mcpu": "cortex-m4"})
    assert m4.caps.isa == "armv7e-m" and m4.caps.vector_bits == 0
    assert m4.caps.has("dsp") and "dsp" in m4_llvm and "neon" not in m4_llvm and not m4.caps.has("neon")


def test_caps_for_a_bare_tvm_target_follow_the_descriptions():
    import tvm

    from nrqc.targets import caps_for_tvm_target, x86

    for mcpu in ("haswell", "icelake-server"):
        d = {"kind": "llvm", "mcpu": mcpu}
        assert caps_for_tvm_target(d) == x86.describe(mcpu).caps == caps_for_tvm_target(tvm.target.Target(d))
    assert caps_for_tvm_target({"kind": "llvm", "mcpu": "haswell", "mattr": ["+avx512f"]}).vector_bits == 512
    for name in ("arm_cpu", "armv7", "cortex-m4", "cortex-m7"):
        desc = get_target(name)
        assert caps_for_tvm_target(desc.tvm_target) == desc.caps, name
