"""Per-target code generation of the binary kernels: hardware popcount where the ISA has
one (x86 AVX-512 VPOPCNTDQ `vpopcntd/q` via the target's mcpu, aarch64 NEON `cnt`), and
plain C with `__builtin_popcount` for Cortex-M (generic TIR lowered by the C back end)."""
from __future__ import annotations

import re

import pytest
import tvm

from nrqc.targets import get_target
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import build, pixelwise, select, strategies

G = bo.ConvGeom(1, 32, 10, 6, 32, 3, 3, (1, 1), (1, 1, 1, 1))


def _source(lib, kind):
    return lib.inspect_source(kind) if hasattr(lib, "inspect_source") else lib.get_source(kind)


def _build(target_name, strategy="bitserial"):
    target = get_target(target_name)
    func = build.schedule_binary_conv(bo.binary_conv(G, "int8", strategy, "pack"), G, "pack", target)
    return tvm.tirx.build(bo.as_kernel(func, "k"), target=target.tvm())


def test_x86_uses_vector_popcount_when_the_host_has_it():
    asm = _source(_build("x86"), "asm")
    if get_target("x86").caps.has("avx512_vpopcntdq"):
        assert re.search(r"vpopcnt[dq]", asm)
    else:
        assert re.search(r"\bpopcnt", asm) or "vpshufb" in asm


def test_aarch64_uses_neon_cnt():
    asm = _source(_build("arm_cpu"), "asm")
    assert re.search(r"\bcnt\s+v\d+\.(8|16)b", asm)


@pytest.mark.parametrize("strategy", ["bitserial", "masked"])
def test_cortex_m_lowers_to_plain_c(strategy):
    import nrqc.cortex_m as cm

    cm._register_popcount()
    src = _source(_build("cortex-m4", strategy), "c")
    assert "TVMFFIAny" in src or "int32_t" in src
    if strategy == "bitserial":
        # M-profile has no popcount instruction: the C calls nrqc_dsp.h's inline SWAR
        # popcount, never __builtin_popcount (a call into libgcc's __popcountsi2 per word).
        assert "nrqc_popcount32" in src
        assert "__builtin_popcount" not in src


def test_cortex_m4_bam_small_runs_exactly_in_qemu(tmp_path):
    """The BAM architecture (small input) through the Cortex-M back end: binary kernels as
    plain C, firmware run in QEMU (mps2-an386), output equal to onnxruntime."""
    import json
    import shutil

    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("arm-none-eabi-gcc / qemu-system-arm not installed")
    from tests import binary_models as bm

    from nrqc.compiler import CompileOptions, compile_model

    path = bm.bam_model(tmp_path / "bam.onnx", frames=32, bands=32, channels=(8, 8, 8, 16), head=16)
    out = compile_model(path, "cortex-m4", tmp_path / "m4", CompileOptions(check=True), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"]["ran"] and manifest["check"]["passed"], manifest["check"]
    convs = [layer for layer in manifest["layers"] if layer["op"] == "Conv"]
    assert all(str(layer["kernel"]).startswith("nrqc:nrqc_bconv_int8") for layer in convs[1:])


# AVX-512 in AT&T assembly: zmm registers, mask registers, EVEX-only upper xmm/ymm
# registers, and mnemonics that exist only with AVX-512 (or AVX-512-era extensions)
_AVX512 = re.compile(r"%zmm\d+|%k[0-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b|\{1to\d+\}|"
                     r"\b(vpopcnt[bwdq]|vpternlog[dq]|vpdpbus[d]s?|vpdpwssds?|kmov[bwdq]|vpcompress[bwdq]|"
                     r"vpexpand[bwdq]|vpermt2\w+|vpermi2\w+|vpmovm2\w+|vpmov\w+2m|vpcmp[u]?[bwdq]\s+\$)")


def _avx2_target():
    """The x86 description of an AVX2-only CPU (haswell): its capabilities are LLVM's
    haswell features (8 x 32-bit lanes; no VNNI strategy)."""
    return get_target("x86", "haswell")


@pytest.mark.parametrize("strategy", ["bitserial", "masked"])
def test_x86_avx2_only_target_has_no_avx512_and_is_exact(strategy):
    """An AVX2-only x86 build of a binary x int8 kernel on this (AVX-512) host: the
    assembly is 256-bit (ymm) with no AVX-512 instruction or register, the bit-serial
    popcount is the AVX2 nibble-table sequence (vpshufb + vpsadbw, no vpopcnt), and the
    kernel, which this host can run, is bit-exact against numpy."""
    import numpy as np

    from nrqc.targets.kernels import packing as pk

    target = _avx2_target()
    assert not strategies.lookup("int8", "vnni").available(target) and select.strategies_for(G, target) == (
        "bitserial", "masked", "avx2_maddubs", "avx2_lut")
    assert pixelwise.vector_lanes(target) == 8
    func = build.schedule_binary_conv(bo.binary_conv(G, "int8", strategy, "pack"), G, "pack", target)
    asm = _source(tvm.tirx.build(bo.as_kernel(func, "k"), target=target.tvm()), "asm")
    bad = sorted({m.group(0) for m in _AVX512.finditer(asm)})
    assert not bad, f"AVX-512 in an AVX2-only build: {bad[:10]}"
    assert re.search(r"%ymm\d+", asm), "no 256-bit vector code"
    if strategy == "bitserial":
        assert re.search(r"\bvpshufb\b", asm) and re.search(r"\bvpsadbw\b|\bvpaddb\b", asm)
    # exact on this host (an AVX-512 CPU runs AVX2 code)
    rng = np.random.default_rng(11)
    x = (rng.random((G.n, G.c_in, G.h, G.w)) < 0.4).astype(np.int64)
    w = rng.integers(-128, 128, (G.c_out, G.cg, G.kh, G.kw)).astype(np.int8)
    ref = pk.ref_conv_acc(x, w, G.stride, G.pad, G.dilation, G.groups)
    func, wargs = build.build_conv(G, "int8", strategy, "float", w, target)
    lib = tvm.tirx.build(func, target=target.tvm())
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros((G.n, G.c_out, G.ho, G.wo), np.float32), dev)
    lib(*[tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in [pk.pack_nchw(x), *wargs,
                                                                   np.ones(G.c_out, np.float32)]], out)
    np.testing.assert_array_equal(out.numpy().astype(np.int64), ref)


def test_avx512_pattern_catches_the_host_build():
    """The AVX-512 detector above is not vacuous: on an AVX-512 host the host build of the
    same kernel matches it (skipped elsewhere)."""
    if not get_target("x86").caps.has("avx512f"):
        pytest.skip("host has no AVX-512")
    assert _AVX512.search(_source(_build("x86"), "asm"))
