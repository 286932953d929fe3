import json

import pytest

from nrqc.errors import NrqcError
from nrqc.targets import all_targets, get_target
from tests.conftest import run_cli


def test_targets_cli_lists_every_target():
    out = run_cli("targets").stdout
    for name in ("x86", "arm_cpu", "cortex-m4", "cortex-m7"):
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
