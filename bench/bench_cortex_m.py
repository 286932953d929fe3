"""Cortex-M4 instruction counts of nrqc's builds against ARM's CMSIS-NN int8 kernels.

    python bench/bench_cortex_m.py [--skip-cnn] [--pairs 4] [--table arena]

1. The zoo VAD (`vad_tiny`, BAM, all-integer first layer as `nrqc train vad --variant bam`
   exports it; freshly initialised weights: counts and footprint do not depend on them),
   compiled for cortex-m4, run in QEMU mps2-an386 with `-icount shift=0` (nrqc's firmware
   count: SysTick around nrqc_run, calibrated loop); flash, RAM without I/O, instructions.
2. The same layers one kernel call at a time (nrqc.cortex_m.microbench), beside CMSIS-NN's.
3. Float models (the vad_tiny float twin, a 2-D float CNN): every float conv by TVM's C
   kernel against nrqc's register-blocked nrqc_f32_conv (instructions, flash, RAM).
4. The issue's 48x48 4-layer binary CNN (3x3 convs 1->24->40->56->72, strides 1/2/1/2, global
   average pool, dense 72->3), written with onnx.helper without node names.

The reference: CMSIS-NN (commit 99f736a, arm_convolve_s8 / arm_convolve_1x1_s8_fast, -O2,
DSP extension) measured in QEMU mps2-an386 the same way, as quoted in issue 18 (not re-run
here: CMSIS-NN is not vendored). Ratios are CMSIS-NN / nrqc (> 1: nrqc needs fewer).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# issue 18, CMSIS-NN 99f736a on mps2-an386 (-icount shift=0, SysTick, empty run subtracted)
CMSIS_VAD = {"instructions": 3_035_040, "flash_bytes": 24_300, "ram_bytes": 7_360}
CMSIS_VAD_LAYERS = {"conv1 80->32 k3": 1_490_000, "conv2 32->32 k3": 700_000, "conv3 32->32 k3": 700_000,
                    "head 1x1 32->16": 140_000}
CMSIS_CNN48 = {"instructions": 44_900_000, "macs": 22_300_000}
GOALS = {"instructions": 1_500_000, "flash_bytes": 24 * 1024, "ram_bytes": 7_400}


def compile_for(onnx_path: Path, out: Path, target: str = "cortex-m4", fail: bool = True) -> dict | str:
    """The artifact's manifest, or (fail=False) the compile's error line."""
    cmd = [sys.executable, "-m", "nrqc", "compile", str(onnx_path), "--target", target, "-o", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        err = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else str(p.returncode)
        if fail:
            raise SystemExit(f"compile failed: {err}")
        return err
    return json.loads((out / "manifest.json").read_text())


def compile_m4(onnx_path: Path, out: Path) -> dict:
    return compile_for(onnx_path, out)


def vad_model(path: Path) -> Path:
    import onnx
    import torch

    from nrqc.models.zoo import build
    from nrqc.training.onnx_export import to_onnx

    torch.manual_seed(0)
    m = to_onnx(build("vad_tiny", "bam").eval())
    onnx.save(m[0] if isinstance(m, tuple) else m, str(path))
    return path


def cnn48_model(path: Path) -> Path:
    from tests.binary_models import cnn48_model as build

    return build(path)


def layer_counts(m4, pairs: int, table: str) -> dict:
    """Instructions of one call of each hand-written kernel at the VAD's layer shapes."""
    from nrqc.cortex_m import dsp
    from nrqc.cortex_m.microbench import run_call
    from nrqc.targets.kernels import binary_ops as bo
    from nrqc.targets.kernels import int8_conv as ic
    from nrqc.targets.kernels import packing as pk
    from nrqc.targets.kernels.strategies import cortex_m_smlad as sm

    rng = np.random.default_rng(0)
    out = {}
    g8 = ic.Int8ConvGeom(bo.ConvGeom(1, 80, 1, 100, 32, 1, 3, (1, 1), (0, 1, 0, 1)), (1, 100, 80), (0, 2, 1),
                         "float32", "int8", 0.0315, 0)
    wq = rng.integers(-127, 128, (32, 80, 1, 3)).astype(np.int8)
    w4, corr = sm.weight_args(g8, wq)
    consts = ", ".join(str(v) + ("u" if i == 1 else "") for i, v in enumerate(sm.call_consts(g8, "pack")))
    r = run_call(m4, f"nrqc_s8_conv_smlad(x, w4, corr, sg, th, 0, y, {consts})",
                 {"x": rng.standard_normal((1, 100, 80)).astype(np.float32), "w4": w4, "corr": corr,
                  "sg": np.ones(32, np.int32), "th": np.zeros(32, np.int32)}, {"y": ((1, 1, 100, 1), "uint32")})
    out["conv1 80->32 k3"] = (r.instructions, 768_000, "cortex_m_smlad")
    op = {"op": "binary_conv", "g": {"n": 1, "c_in": 32, "h": 1, "w": 100, "c_out": 32, "kh": 1, "kw": 3,
                                     "stride": [1, 1], "pad": [0, 1, 0, 1], "dilation": [1, 1], "groups": 1},
          "weights": "int8", "strategy": "masked", "out": "pack", "pool": None}
    plan = dsp.nibble_plan(op, rng.integers(-128, 128, (32, 32, 1, 3)).astype(np.int8),
                           {"table": table, "pairs_per_block": pairs})
    fl = plan.flash
    r = run_call(m4, f"nrqc_b01_i8_conv(x, {'0' if fl else 'w'}, {'w' if fl else '0'}, {'0' if fl else 'tab'}, "
                     f"sg, th, 0, y, {', '.join(map(str, plan.consts))})",
                 {"x": pk.pack_channels(rng.random((1, 1, 100, 32)) < 0.5), "w": plan.weights,
                  "sg": np.ones(32, np.int32), "th": np.zeros(32, np.int32)}, {"y": (plan.y_shape, "uint32")},
                 None if fl else {"tab": (plan.table_words, "uint32")})
    out["conv2 32->32 k3"] = out["conv3 32->32 k3"] = (r.instructions, 307_200, plan.what)
    hop = {"op": "binary_conv1x1_float", "n": 1, "c": 32, "h": 1, "w": 100, "o": 16, "signed_input": False}
    consts = dsp.fused_head_consts(hop, 1)
    r = run_call(m4, f"nrqc_bits_head_f32(x, w, b1, w2, b2, y, {', '.join(map(str, consts))})",
                 {"x": pk.pack_channels(rng.random((1, 1, 100, 32)) < 0.5),
                  "w": rng.standard_normal((16, 32)).astype(np.float32), "b1": np.zeros(16, np.float32),
                  "w2": rng.standard_normal((1, 16)).astype(np.float32), "b2": np.zeros(1, np.float32)},
                 {"y": ((1, 1, 1, 100), "float32")})
    out["head 1x1 32->16"] = (r.instructions, 51_200, "fused head: set-bit walk + bias/ReLU + 1x1 16->1 (1,600 MACs more)")
    return out


def _asm_step(k: int, wide: bool) -> str:
    """One output channel's 4 MACs of the SMLAD dot product: int16 pair weights (today's
    layout) or int8 weights sign-extended at load with SXTB16 (bytes 0/2, then ROR 8: 1/3)."""
    if wide:
        return ""  # the int16 variant is the kernel's own nrqc_s8_smlad_pixel_block
    return (f"ldr %[q], [%[wp]], #4\\n\\tsxtb16 %[t], %[q]\\n\\tsmlad %[a{k}], %[x0], %[t], %[a{k}]\\n\\t"
            f"sxtb16 %[t], %[q], ror #8\\n\\tsmlad %[a{k}], %[x1], %[t], %[a{k}]\\n\\t")


def smlad_weight_storage(m4) -> dict:
    """The first layer's dot products (vad conv1: 100 pixels x 32 channels x 240 taps) with the
    SMLAD weights stored as int16 pairs (nrqc_s8_smlad_pixel_block, 15,360 B) or as int8 expanded
    with SXTB16 at load (7,680 B), one pixel at a time, and as int8 with each expanded word
    used for 6 pixels (nrqc_s8_tb_dot, what the kernel runs since the time-blocked layout;
    102 windows), all checked against numpy."""
    from nrqc.cortex_m.microbench import run_call

    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, 240).astype(np.int16)
    w8 = rng.integers(-127, 128, (32, 240)).astype(np.int8)
    r = w8.astype(np.int64).reshape(8, 4, 60, 4)  # [block, k, i, tap]
    lo = lambda a, b: ((a & 0xFFFF) | ((b & 0xFFFF) << 16)).astype(np.uint32).view(np.int32)  # noqa: E731
    w16 = np.stack([lo(r[..., 0], r[..., 1]), lo(r[..., 2], r[..., 3])], -1).transpose(0, 2, 1, 3)  # [8, 60, 4, 2]
    b = [r[..., 0], r[..., 2], r[..., 1], r[..., 3]]  # SXTB16 pairs (b0, b2) = (x0, x1), ROR 8: (x2, x3)
    w8w = sum((v & 0xFF).astype(np.uint32) << np.uint32(8 * j) for j, v in enumerate(b)).transpose(0, 2, 1)
    want = (w8.astype(np.int64) @ x.astype(np.int64)).astype(np.int32)
    loop = "({ for (int32_t p = 0; p < 100; p++) for (int32_t ob = 0; ob < 32; ob += 4) { %s } 0; })"
    wide = loop % "nrqc_s8_smlad_pixel_block((const uint32_t *)x, w + ob * 120, 240, y + ob);"
    narrow = loop % (
        "int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0; const uint32_t *xr = (const uint32_t *)x, *wp = w + ob * 60; "
        "_Pragma(\"GCC unroll 4\") for (int32_t i = 0; i < 60; i++) { uint32_t x0, x1, q, t; "
        "__asm__(\"ldrd %[x0], %[x1], [%[xr]], #8\\n\\t" + "".join(_asm_step(k, False) for k in range(4)) + "\" "
        ": [a0] \"+r\"(a0), [a1] \"+r\"(a1), [a2] \"+r\"(a2), [a3] \"+r\"(a3), [xr] \"+r\"(xr), [wp] \"+r\"(wp), "
        "[x0] \"=&r\"(x0), [x1] \"=&r\"(x1), [q] \"=&r\"(q), [t] \"=&r\"(t) : : \"memory\"); } "
        "y[ob] = a0; y[ob + 1] = a1; y[ob + 2] = a2; y[ob + 3] = a3;")
    out = {}
    for name, call, warr in (("int16 pairs", wide, w16), ("int8 + SXTB16", narrow, np.ascontiguousarray(w8w))):
        got = run_call(m4, call, {"x": x.view(np.uint32), "w": np.ascontiguousarray(warr)}, {"y": ((32,), "int32")})
        if not np.array_equal(got.outputs["y"], want):
            raise SystemExit(f"SMLAD weight-storage experiment ({name}): wrong dot products")
        out[name] = (got.instructions, warr.nbytes, 768_000)
    # the kernel's layout: int8 words shared by 6 consecutive windows (nrqc_s8_tb_dot), 17 blocks
    # of 6 pixels (102 windows, as the layer computes for 100 outputs), one block's columns
    from nrqc.targets.kernels.strategies import cortex_m_smlad as sm

    xs = rng.integers(-128, 128, 108 * 80).astype(np.int16)
    wt = sm.time_block_weights(w8.reshape(32, 3, 80).transpose(0, 2, 1)[:, :, None, :])
    win = np.lib.stride_tricks.sliding_window_view(xs, 240)[::80][:102]  # [pixel, r]
    want = (win.astype(np.int64) @ w8.astype(np.int64).T).astype(np.int32)  # [102, 32]
    call = ("({ for (int32_t b = 0; b < 17; b++) for (int32_t o = 0; o < 32; o++) { int32_t a[8]; "
            "nrqc_s8_tb_dot(x + b * 480, (const uint32_t *)w + o * 60, 240, 80, 6, a); "
            "for (int32_t t = 0; t < 6; t++) y[(b * 6 + t) * 32 + o] = a[t]; } 0; })")
    got = run_call(m4, call, {"x": xs, "w": wt}, {"y": ((102, 32), "int32")})
    if not np.array_equal(got.outputs["y"], want):
        raise SystemExit("SMLAD weight-storage experiment (int8, time-blocked): wrong dot products")
    out["int8, 6 px/word"] = (got.instructions, wt.nbytes, 102 * 32 * 240)
    return out


def float_rows(m4, tmp: Path) -> list[tuple]:
    """Float models, TVM's C kernels for every float conv, dense and max pool (knobs
    float_conv.kernel / float_maxpool.kernel = tvm, through a knob database as `nrqc compile
    --db` applies it) against nrqc_f32_conv / nrqc_f32_maxpool (the defaults):
    (model, MACs, before manifest, after manifest)."""
    import onnx
    import torch

    from nrqc.models.zoo import build
    from nrqc.training.onnx_export import to_onnx
    from nrqc.tuning.cortex_m_db import write_knobs
    from tests.cortex_m.test_cortex_m_firmware import vad_like_model

    torch.manual_seed(0)
    m = to_onnx(build("vad_tiny", "float").eval())
    onnx.save(m[0] if isinstance(m, tuple) else m, str(tmp / "vad_tiny_float.onnx"))
    rows = []
    for label, path in (("vad_tiny float twin", tmp / "vad_tiny_float.onnx"),
                        ("2-D CNN (3 x conv3x3+ReLU+MaxPool, 2 dense; [1,1,40,32])", vad_like_model(tmp / "cnn2d.onnx"))):
        after = compile_m4(path, tmp / f"{path.stem}_nrqc")
        keys = {(layer.get("strategy") or {}).get("knob_key") for layer in after["layers"]}
        config = {k: {"kernel": "tvm"} for k in keys if k and k.startswith(("float_conv:", "float_maxpool:"))}
        db = tmp / f"{path.stem}_db"
        write_knobs(db, m4, config, {"measure": "bench_cortex_m: TVM's C kernels for the float convs"})
        cmd = [sys.executable, "-m", "nrqc", "compile", str(path), "--target", "cortex-m4", "--db", str(db), "-o",
               str(tmp / f"{path.stem}_tvm")]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if p.returncode != 0:
            raise SystemExit(f"compile failed: {p.stderr.strip().splitlines()[-1]}")
        before = json.loads((tmp / f"{path.stem}_tvm" / "manifest.json").read_text())
        rows.append((label, after["macs"], before, after))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-cnn", action="store_true", help="skip the 48x48 CNN (the longest run)")
    ap.add_argument("--pairs", type=int, default=4, help="nibble-table knob pairs_per_block for the per-layer run")
    ap.add_argument("--table", default="arena", choices=("arena", "flash"))
    args = ap.parse_args()
    from nrqc.targets import get_target

    m4 = get_target("cortex-m4")
    print("Cortex-M4 (QEMU mps2-an386, -icount shift=0: executed instructions). Reference: CMSIS-NN 99f736a int8, "
          "figures from issue 18 (same QEMU, same counting)\n")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        man = compile_m4(vad_model(tmp / "vad_tiny_bam.onnx"), tmp / "vad")
        macs = man["macs"]
        print(f"vad_tiny BAM ({macs:,} MACs)        {'nrqc':>12} {'CMSIS-NN':>12} {'CMSIS/nrqc':>11} {'goal':>10}")
        for key, label in (("instructions", "instructions"), ("flash_bytes", "flash B"),
                           ("ram_bytes", "RAM B (arena+data)")):
            print(f"  {label:<30} {man[key]:>12,} {CMSIS_VAD[key]:>12,} {CMSIS_VAD[key] / man[key]:>10.2f}x "
                  f"{GOALS[key]:>10,}")
        print(f"  {'instructions per MAC':<30} {man['instructions'] / macs:>12.2f} {CMSIS_VAD['instructions'] / macs:>12.2f}")
        print(f"  (arena {man['arena_bytes']:,} B, stack {man['stack_bytes']:,} B; the library also holds the "
              f"nrqc_run_int8 entry point: {man.get('int8_input') is not None})")
        for layer in man["layers"]:
            print(f"    {layer['name']:<14} {layer['kernel']:<44} {(layer.get('strategy') or {}).get('strategy', '')}")
        print("\nper layer, one kernel call (nrqc.cortex_m.microbench)")
        print(f"  {'layer':<18} {'nrqc':>10} {'per MAC':>8} {'CMSIS-NN':>10} {'CMSIS/nrqc':>11}  kernel")
        for name, (instr, lmacs, what) in layer_counts(m4, args.pairs, args.table).items():
            ref = CMSIS_VAD_LAYERS[name]
            print(f"  {name:<18} {instr:>10,} {instr / lmacs:>8.2f} {ref:>10,} {ref / instr:>10.2f}x  {what}")
        print("\nfirst layer's SMLAD dot products only (100 x 32 x 240 MACs), by weight storage")
        base = None
        for name, (instr, nbytes, lmacs) in smlad_weight_storage(m4).items():
            base = base or instr
            print(f"  {name:<16} {instr:>10,} instructions ({instr / lmacs:.2f} per MAC, {instr - base:+,}), "
                  f"weights {nbytes:,} B flash")
        print("\nfloat models: float convs/dense/max pools by TVM's C (knobs kernel=tvm) -> nrqc_f32_conv / "
              "nrqc_f32_maxpool (default)")
        for label, macs, before, after in float_rows(m4, tmp):
            print(f"  {label} ({macs:,} MACs)")
            for key, name in (("instructions", "instructions"), ("flash_bytes", "flash B"), ("ram_bytes", "RAM B"),
                              ("stack_bytes", "stack B")):
                print(f"    {name:<14} {before[key]:>12,} -> {after[key]:>12,}  ({before[key] / after[key]:.2f}x)")
            print(f"    checks vs onnxruntime: {before['check']['max_abs_error']:.2g} / "
                  f"{after['check']['max_abs_error']:.2g}")
            for layer in after["layers"]:
                print(f"      {layer['name']:<14} {layer['kernel']}")
        if not args.skip_cnn:
            path = cnn48_model(tmp / "cnn48.onnx")
            man = compile_for(path, tmp / "cnn48", fail=False)
            if isinstance(man, str):  # does not fit the M4: count it on the M7 board (same code, more RAM)
                print(f"\n48x48 binary CNN on cortex-m4: {man}\n  counted on cortex-m7 (mps2-an500) instead")
                man = compile_for(path, tmp / "cnn48_m7", "cortex-m7")
            macs = man["macs"]
            print(f"\n48x48 binary CNN (onnx.helper, no node names; {macs:,} MACs; {man['target']})")
            print(f"  instructions {man['instructions']:,} ({man['instructions'] / macs:.2f} per MAC; CMSIS-NN "
                  f"{CMSIS_CNN48['instructions']:,}, {CMSIS_CNN48['instructions'] / CMSIS_CNN48['macs']:.2f} per MAC; "
                  f"goal 1.0 per MAC)")
            print(f"  flash {man['flash_bytes']:,} B, RAM {man['ram_bytes']:,} B + stack {man['stack_bytes']:,} B "
                  f"(M4 budget 262,144 / 65,536)")
            for layer in man["layers"]:
                print(f"    {layer['name']:<14} {layer['kernel']:<44} {(layer.get('strategy') or {}).get('strategy', '')}")


if __name__ == "__main__":
    main()
