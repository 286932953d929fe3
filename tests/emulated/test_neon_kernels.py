"""The NEON binary x int8 kernels on the emulated Raspberry Pi, bit-exact against numpy.

Each kernel is built for its Pi (``neon_sadalp``: arm_cpu, Cortex-A72, no dot product;
``neon_sdot``: arm_cpu_a76, Cortex-A76), cross-compiled to a shared library on disk and
run in a fresh guest process under ``qemu-aarch64 -cpu`` that core (the TVM runtime only,
as on a Pi), on odd geometries: input channels not a multiple of 4 or of the 32-bit word,
several words, stride, dilation, asymmetric padding, a 1-row (Conv1d) layer, the fused
OR-pools (2x2 stride 2, and a 3x3 stride-2 padded one that the schedule cannot tensorize:
it runs as plain loops, still exact), packed and float outputs. The default suite runs the
Pi 4 kernel's packed + pooled case; everything else is ``-m slow``.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from nrqc.targets import get_target
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.strategies import neon_sadalp, neon_sdot

_PAD1 = (1, 1, 1, 1)
POOL2 = ((2, 2), (2, 2), (0, 0, 0, 0))
POOL3 = ((3, 3), (2, 2), (1, 1, 1, 1))

# (geometry, output, fused pool)
CASES = [
    (bo.ConvGeom(1, 13, 9, 11, 16, 3, 3, (1, 1), _PAD1), "float", None),       # c_in not a multiple of 4
    (bo.ConvGeom(2, 45, 8, 7, 32, 3, 2, (2, 1), (1, 0, 2, 1), (1, 2)), "pack", None),  # stride, dilation, 2 words
    (bo.ConvGeom(1, 70, 1, 37, 48, 1, 3, (1, 1), (0, 1, 0, 1)), "pack", None),  # Conv1d-like, 3 words, 48 outputs
    (bo.ConvGeom(1, 32, 7, 6, 16, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)), "float", None),  # dilation 2 both ways
    (bo.ConvGeom(1, 40, 9, 10, 32, 3, 3, (1, 1), _PAD1), "pack", POOL2),        # fused 2x2 OR-pool
    (bo.ConvGeom(1, 33, 9, 10, 32, 3, 3, (1, 1), _PAD1), "pack", POOL3),        # overlapping padded pool
]
FAST = [4]  # the default suite's case: packed output with the fused 2x2 pool

STRATEGIES = {"neon_sadalp": ("arm_cpu", neon_sadalp), "neon_sdot": ("arm_cpu_a76", neon_sdot)}

_GUEST = r'''
import ctypes, os, sys
import numpy as np
import tvm_ffi

for d in sys.path:
    p = os.path.join(d, "tvm", "lib", "libtvm_runtime.so")
    if os.path.exists(p):
        ctypes.CDLL(p, ctypes.RTLD_GLOBAL)
        break
work = sys.argv[1]
data = np.load(work + "/cases.npz")
out = {}
for i in range(int(data["n"])):
    lib = tvm_ffi.load_module(f"{work}/k{i}.so")
    args = [np.ascontiguousarray(data[f"a{i}_{j}"]) for j in range(int(data[f"nargs{i}"]))]
    y = np.zeros(tuple(data[f"yshape{i}"]), data[f"y{i}_dtype"].item())
    lib["k"](*[tvm_ffi.from_dlpack(a) for a in args], tvm_ffi.from_dlpack(y))
    out[f"y{i}"] = y
np.savez(work + "/outputs.npz", **out)
print("NRQC_NEON_DONE", flush=True)
'''


def _case(g, out, pool, seed):
    """(kernel arguments but the output, output shape, dtype, numpy reference)."""
    rng = np.random.default_rng(seed)
    x = (rng.random((g.n, g.c_in, g.h, g.w)) < 0.4).astype(np.int64)
    w = rng.integers(-128, 128, (g.c_out, g.cg, g.kh, g.kw)).astype(np.int8)
    w[:, :3] = -128  # extreme weights under set bits: no narrow sum may wrap
    x[:, :3] = 1
    acc = pk.ref_conv_acc(x, w, g.stride, g.pad, g.dilation)
    if out == "float":
        scale = rng.uniform(0.5, 2, g.c_out).astype(np.float32)
        ref = acc.astype(np.float32) * scale[None, :, None, None]
        return w, [pk.pack_nchw(x), scale], ref.shape, np.float32, ref
    sigma = rng.choice([-1, 0, 1], g.c_out).astype(np.int32)
    t = rng.integers(-400, 400, g.c_out).astype(np.int32)
    bits = (sigma[None, :, None, None] * acc >= t[None, :, None, None]).astype(np.uint8)
    ref = bits if pool is None else pk.ref_or_pool(bits, *pool)
    return w, [pk.pack_nchw(x), sigma, t], (g.n, ref.shape[2], ref.shape[3], g.words_out), np.uint32, ref


def _on_board(target, kernels, prefix: str) -> list[np.ndarray]:
    """Build each (PrimFunc, input arrays, output shape, output dtype) for `target`, write the
    libraries to disk, run them all in one fresh guest process under `-cpu` the target's
    core; returns the outputs."""
    import tvm

    from nrqc.emulator import board, guest_run, rootfs

    reason = guest_run.unavailable_reason()
    if reason:
        pytest.skip(f"no emulated board: {reason} (build it with `nrqc emulate arm_cpu`)")
    root = rootfs.rootfs_dir()
    cpu = board.qemu_cpu_for(target.tvm_target)
    argv, env, guest_prefix = board.guest_python(root, cpu=cpu)
    host_dir, guest_dir = board.guest_work_dir(root, guest_prefix, prefix)
    try:
        feeds = {"n": np.array(len(kernels))}
        for i, (func, arrays, yshape, ydtype) in enumerate(kernels):
            lib = tvm.tirx.build(bo.as_kernel(func, "k"), target=target.tvm())
            lib.export_library(str(host_dir / f"k{i}.so"), fcompile=tvm.support.cc.cross_compiler(target.cross_compiler))
            feeds.update({f"a{i}_{j}": np.ascontiguousarray(a) for j, a in enumerate(arrays)})
            feeds.update({f"nargs{i}": np.array(len(arrays)), f"yshape{i}": np.array(yshape),
                          f"y{i}_dtype": np.array(np.dtype(ydtype).name)})
        np.savez(host_dir / "cases.npz", **feeds)
        (host_dir / "run_cases.py").write_text(_GUEST)
        proc = subprocess.run([*argv, f"{guest_dir}/run_cases.py", guest_dir], env=env, cwd="/",
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0 and "NRQC_NEON_DONE" in proc.stdout, \
            f"guest under -cpu {cpu} exited {proc.returncode}\n{proc.stderr[-3000:]}"
        with np.load(host_dir / "outputs.npz") as got:
            return [got[f"y{i}"] for i in range(len(kernels))]
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)


def _run_on_board(strategy: str, case_ids: list[int], tmp_path):
    target_name, mod = STRATEGIES[strategy]
    target = get_target(target_name)
    kernels, refs = [], []
    for ci in case_ids:
        g, out, pool = CASES[ci]
        assert mod.available(target) and mod.supports(g)
        w, args, yshape, ydtype, ref = _case(g, out, pool, ci)
        func = mod.build(g, out, target, pool, strict=pool != POOL3)
        assert (bo.FALLBACK_ATTR in func.attrs) == (pool == POOL3)
        kernels.append((func, [args[0], *mod.weight_args(g, w), *args[1:]], yshape, ydtype))
        refs.append((g, out, ref))
    for ci, y, (g, out, ref) in zip(case_ids, _on_board(target, kernels, f"nrqc-{strategy}-"), refs):
        if out == "float":
            np.testing.assert_array_equal(y, ref, err_msg=f"{strategy} case {ci}")
        else:
            np.testing.assert_array_equal(pk.unpack_channels(y, g.c_out), np.moveaxis(ref, 1, -1),
                                          err_msg=f"{strategy} case {ci}")


# the Pi 4's kernel in the default suite (~15 s of CPU: the guest's start under qemu, the
# builds); the Pi 5's under -m slow with the rest
@pytest.mark.parametrize("strategy", ["neon_sadalp", pytest.param("neon_sdot", marks=pytest.mark.slow)])
def test_neon_kernel_exact_on_its_pi_core(strategy, tmp_path):
    _run_on_board(strategy, FAST, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_neon_kernel_exact_on_odd_shapes(strategy, tmp_path):
    _run_on_board(strategy, [i for i in range(len(CASES)) if i not in FAST], tmp_path)


# ------------------------------------------------------------ int8-input (first layer) kernels

INT8_STRATEGIES = {"int8_neon_smull": "arm_cpu", "int8_neon_sdot": "arm_cpu_a76"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(INT8_STRATEGIES))
def test_int8_input_neon_kernel_exact_on_its_pi_core(name, tmp_path):
    """The int8 first-layer kernels on the geometries of tests/kernels/test_int8_conv.py
    (float source with the quantize fused, int8, uint8 with a zero point, a transposed
    source; odd channel counts), both epilogues, a fused 2x2 pool; numpy's integer conv of
    (q - zp) * w as the reference."""
    from nrqc.targets.kernels import strategies
    from tests.kernels.test_int8_conv import GEOMS, _geom, _inputs

    s = strategies.int8_input_lookup(name)
    target = get_target(INT8_STRATEGIES[name])
    assert s.available(target)
    kernels, checks = [], []
    for gi in range(len(GEOMS)):
        x, wq, ref, rng = _inputs(gi, gi)
        g = _geom(gi, wq)
        c = g.conv
        if not s.supports(g):  # output channels not a multiple of 16
            assert c.c_out % 16
            continue
        kernels.append((s.build(g, "float", target, strict=True), [x, *s.weight_args(g, wq), np.ones(c.c_out, np.float32)],
                        (c.n, c.c_out, c.ho, c.wo), np.float32))
        checks.append(("float", c, ref))
        sigma = rng.choice([-1, 0, 1], c.c_out).astype(np.int32)
        t = rng.integers(-3000, 3000, c.c_out).astype(np.int32)
        bits = (sigma[None, :, None, None] * ref >= t[None, :, None, None]).astype(np.uint8)
        want = pk.ref_or_pool(bits, *POOL2)
        kernels.append((s.build(g, "pack", target, POOL2, strict=True), [x, *s.weight_args(g, wq), sigma, t],
                        (1, want.shape[2], want.shape[3], c.words_out), np.uint32))
        checks.append(("pack", c, want))
    assert len(kernels) >= 4
    for y, (out, c, want) in zip(_on_board(target, kernels, f"nrqc-{name}-"), checks):
        if out == "float":
            np.testing.assert_array_equal(y.astype(np.int64), want)
        else:
            np.testing.assert_array_equal(pk.unpack_channels(y, c.c_out), np.moveaxis(want, 1, -1))
