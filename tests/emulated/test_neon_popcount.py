"""The NEON +-1 x +-1 popcount kernels (``neon_xnor`` on {-1,+1} maps, ``neon_and`` on {0,1}
maps) on the emulated Raspberry Pi 4, bit-exact against numpy's integer conv.

Each kernel is built for arm_cpu (Cortex-A72), written to disk as a shared library and run
in a fresh guest process under ``qemu-aarch64 -cpu cortex-a72`` (the TVM runtime only, as on
a Pi; tests/emulated/test_neon_kernels.py's harness), on odd geometries: input channels not
a multiple of the word, several words (more than 31 steps: several byte-count widenings),
output channels not a multiple of 4 or 16, stride, dilation, asymmetric padding, groups and
depthwise (the mask M), a Conv1d-like row, fused OR-pools, packed and float outputs. The
guest's start alone is ~15 s of emulated `import`, so all of it is ``-m slow``; the default
suite checks the aarch64 build's instructions (tests/kernels/test_neon_popcount.py).
A whole +-1 model compiled for arm_cpu passes its compile-time check on the emulated board.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from nrqc.targets import get_target
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.strategies import neon_and, neon_xnor
from tests.emulated.test_neon_kernels import POOL2, POOL3, _on_board

_PAD1 = (1, 1, 1, 1)
# (geometry, output, fused pool)
CASES = [
    (bo.ConvGeom(1, 13, 9, 11, 16, 3, 3, (1, 1), _PAD1), "float", None),                # c_in under a word
    (bo.ConvGeom(2, 45, 8, 7, 40, 3, 2, (2, 1), (1, 0, 2, 1), (1, 2)), "pack", None),   # stride, dilation, c_out 40
    (bo.ConvGeom(1, 70, 6, 5, 66, 1, 3, (1, 2), (0, 1, 0, 1), groups=2), "pack", None),  # groups, c_out 66
    (bo.ConvGeom(1, 300, 4, 5, 18, 3, 3, (1, 1), _PAD1), "float", None),               # 90 steps: 3 widenings
    (bo.ConvGeom(1, 33, 7, 6, 33, 3, 3, (1, 1), _PAD1, groups=33), "pack", None),       # depthwise
    (bo.ConvGeom(1, 70, 1, 37, 48, 1, 3, (1, 1), (0, 1, 0, 1)), "float", None),         # Conv1d-like
    (bo.ConvGeom(1, 40, 9, 10, 72, 3, 3, (1, 1), _PAD1), "pack", POOL2),                # fused 2x2 OR-pool
    (bo.ConvGeom(1, 33, 9, 10, 20, 3, 3, (1, 1), _PAD1), "pack", POOL3),                # overlapping padded pool
]
STRATEGIES = {"neon_xnor": (neon_xnor, True), "neon_and": (neon_and, False)}


def _case(g, out, pool, seed, signed):
    """(weights, kernel arguments but the weights and output, output shape, dtype, reference)."""
    rng = np.random.default_rng(seed)
    x = (rng.random((g.n, g.c_in, g.h, g.w)) < 0.5).astype(np.int64)
    if signed:
        x = 2 * x - 1
    w = np.where(rng.random((g.c_out, g.cg, g.kh, g.kw)) < 0.5, -1, 1).astype(np.int8)
    w[0] = 1  # a channel agreeing with an all-ones patch: every byte count 8
    x[:, :, :2, :] = 1
    acc = pk.ref_conv_acc(x, w, g.stride, g.pad, g.dilation, g.groups)
    if out == "float":
        scale = rng.uniform(0.5, 2, g.c_out).astype(np.float32)
        ref = acc.astype(np.float32) * scale[None, :, None, None]
        return w, [pk.pack_nchw(x), scale], ref.shape, np.float32, ref
    sigma = rng.choice([-1, 0, 1], g.c_out).astype(np.int32)
    t = rng.integers(-30, 30, g.c_out).astype(np.int32)
    bits = (sigma[None, :, None, None] * acc >= t[None, :, None, None]).astype(np.uint8)
    ref = bits if pool is None else pk.ref_or_pool(bits, *pool)
    return w, [pk.pack_nchw(x), sigma, t], (g.n, ref.shape[2], ref.shape[3], g.words_out), np.uint32, ref


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_popcount_kernel_exact_on_the_a72(name):
    mod, signed = STRATEGIES[name]
    target = get_target("arm_cpu")
    assert mod.available(target)
    kernels, refs = [], []
    for ci, (g, out, pool) in enumerate(CASES):
        w, args, yshape, ydtype, ref = _case(g, out, pool, ci, signed)
        kernels.append((mod.build(g, out, target, pool, strict=True), [args[0], *mod.weight_args(g, w), *args[1:]],
                        yshape, ydtype))
        refs.append((g, out, ref))
    for ci, (y, (g, out, ref)) in enumerate(zip(_on_board(target, kernels, f"nrqc-{name}-"), refs)):
        if out == "float":
            np.testing.assert_array_equal(y, ref, err_msg=f"{name} case {ci}")
        else:
            np.testing.assert_array_equal(pk.unpack_channels(y, g.c_out), np.moveaxis(ref, 1, -1),
                                          err_msg=f"{name} case {ci}")


@pytest.mark.slow
def test_whole_pm1_model_for_arm_cpu_uses_them_and_passes_its_check(tmp_path):
    """A chain model with +-1 weights (a {0,1} map into the first +-1 conv, Sign maps after)
    compiled for arm_cpu: the layers get neon_and / neon_xnor by the estimates, and the
    artifact, run from disk on the emulated board by the compile's check, matches onnxruntime."""
    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.emulator import guest_run
    from tests import binary_models as bm

    reason = guest_run.unavailable_reason()
    if reason:
        pytest.skip(f"no emulated board: {reason} (build it with `nrqc emulate arm_cpu`)")
    layers = [dict(c_out=40, c_first=33, weights="binary", act="sign"),
              dict(c_out=36, weights="binary", act="sign", input_sign=True, stride=2)]
    path = bm.chain_model(tmp_path / "pm1.onnx", layers, x_shape=(1, 1, 12, 11), seed=1, first_act="greater")
    out = compile_model(path, "arm_cpu", tmp_path / "out", CompileOptions(check=True), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"]["ran"] and manifest["check"]["passed"], manifest["check"]
    chosen = [(layer.get("strategy") or {}).get("strategy") for layer in manifest["layers"]]
    assert "neon_xnor" in chosen, json.dumps(manifest["layers"], indent=1)
