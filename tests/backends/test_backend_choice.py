"""Back ends are chosen by the type of a target's back-end spec, and a written artifact
reopens through the back end that built it (from its manifest, as older artifacts wrote it)."""
from __future__ import annotations

import pytest

from nrqc.artifact import MANIFEST, read_manifest, write_json
from nrqc.backends import BACKENDS, backend_for, backend_of_manifest
from nrqc.backends.bare_metal import BareMetalBackend
from nrqc.backends.cross import CrossLibraryBackend
from nrqc.backends.host import HostLibraryBackend
from nrqc.targets import BareMetalC, BackendSpec, CrossLibrary, HostLibrary, all_targets, get_target
from tests.onnx_builders import small_conv_model

# What each registered target is built by, written out by hand (not derived from BACKENDS).
EXPECTED = {"x86": HostLibraryBackend, "arm_cpu": CrossLibraryBackend, "arm_cpu_a76": CrossLibraryBackend,
            "armv7": CrossLibraryBackend,
            "cortex-m4": BareMetalBackend, "cortex-m7": BareMetalBackend}


def test_every_spec_type_has_one_back_end():
    specs = {HostLibrary, CrossLibrary, BareMetalC}
    assert set(BACKENDS) == specs
    assert set(BackendSpec.__subclasses__()) == specs  # a new spec type needs a back end here
    assert len(set(BACKENDS.values())) == len(specs)


@pytest.mark.parametrize("target", all_targets(), ids=lambda d: d.name)
def test_each_registered_target_gets_its_back_end_by_type(target):
    backend = backend_for(target)
    assert type(backend) is EXPECTED[target.name]
    assert backend.target is target and backend.spec is target.backend


def test_rpc_refusals_come_from_the_bare_metal_back_end_only(tmp_path):
    from nrqc.errors import NrqcError

    for target in all_targets():
        backend = backend_for(target)
        if isinstance(backend, BareMetalBackend):
            with pytest.raises(NrqcError, match="bare metal and has no TVM RPC server"):
                backend.check_compile_rpc("127.0.0.1:9090")
            with pytest.raises(NrqcError, match=rf"{target.name} \(bare metal\).*nrqc run"):
                backend.check_deploy(tmp_path)
        else:
            assert backend.check_compile_rpc("127.0.0.1:9090") is None
            assert backend.check_deploy(tmp_path) is None


def _manifest_for(target, tmp_path):
    """The manifest nrqc.manifest writes for a (not built) model and this target."""
    from nrqc.manifest import make_manifest
    from nrqc.onnx_model import load_model
    from nrqc.pipeline import CompileContext

    m = load_model(small_conv_model(tmp_path / "m.onnx"), {})
    ctx = CompileContext(target=target, onnx_model=m.shaped, layers=[])
    lib = tmp_path / "lib.bin"
    lib.write_bytes(b"\0" * 10)
    return make_manifest(m, ctx, {"float32": 64}, lib, 0.5)


@pytest.mark.parametrize("name,mcpu", [("x86", None), ("x86", "haswell"), ("arm_cpu", None), ("armv7", None),
                                       ("cortex-m4", None), ("cortex-m7", None)])
def test_a_written_manifest_reopens_through_the_back_end_that_built_it(tmp_path, name, mcpu):
    target = get_target(name, mcpu)
    manifest = _manifest_for(target, tmp_path)
    assert manifest["target"] == target.name and manifest["target_kind"] == target.backend.name
    out = tmp_path / "artifact"
    out.mkdir()
    write_json(out / MANIFEST, manifest)
    reopened = backend_of_manifest(read_manifest(out))
    assert type(reopened) is EXPECTED[name]
    assert reopened.target.name == target.name
    # an x86 build keeps the CPU it was built for (not this host's)
    assert reopened.target.tvm_target.get("mcpu") == target.tvm_target.get("mcpu")
    if mcpu:
        assert manifest["cpu"]["mcpu"] == mcpu == reopened.target.tvm_target["mcpu"]


def test_an_older_manifest_without_a_cpu_record_reopens_on_this_host():
    # artifacts written before the x86 CPU record: the target name alone decides
    old = {"target": "x86", "target_kind": "host", "tvm_target": {"kind": "llvm"}}
    assert type(backend_of_manifest(old)) is HostLibraryBackend
    assert type(backend_of_manifest({"target": "arm_cpu", "target_kind": "linux-cross"})) is CrossLibraryBackend
