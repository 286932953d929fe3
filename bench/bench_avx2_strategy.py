"""Binary x int8 conv kernels on an AVX2-only build: avx2_maddubs (vpmaddubsw) and
avx2_lut (vpshufb nibble tables) against masked (what AVX2 had before them), on the
binary layers of the zoo's DNSMOS-like BAM model and of the default VAD BAM model
(geometries as `nrqc compile --target x86 --mcpu haswell` meets them), packed output,
fused pool where given.

    python bench/bench_avx2_strategy.py [--mcpu haswell] [--iters 200] [--rounds 5]

One thread (TVM_NUM_THREADS=1 before TVM loads). Each figure is the median over `rounds`
of the mean of `iters` calls, in CPU time of the calling thread (see CLOCK); MAC/cycle at
the clock of the target description, and in % of the peak of the target description the
strategy is bound by (``peak_lut_int8_macs_per_cycle`` for the table lookups,
``peak_int8_macs_per_cycle`` for the others). The host must be able to run the build (an
AVX-512 host runs AVX2 code: label such figures "haswell build on <host CPU>")."""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import time

os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from nrqc.targets.kernels.binary_ops import ConvGeom  # noqa: E402

_PAD1 = (1, 1, 1, 1)
LAYERS = (  # (model, geometry, fused OR-pool or None)
    ("dnsmos conv2", ConvGeom(1, 32, 100, 32, 32, 3, 3, pad=_PAD1), None),
    ("dnsmos conv2+pool", ConvGeom(1, 32, 100, 32, 32, 3, 3, pad=_PAD1), ((2, 2), (2, 2), (0, 0, 0, 0))),
    ("dnsmos conv3", ConvGeom(1, 32, 50, 16, 32, 3, 3, pad=_PAD1), None),
    ("dnsmos conv4", ConvGeom(1, 32, 25, 8, 64, 3, 3, pad=_PAD1), None),
    ("vad conv", ConvGeom(1, 32, 1, 100, 32, 1, 3, pad=(0, 1, 0, 1)), None),
)
STRATEGIES = ("masked", "avx2_maddubs", "avx2_lut")
# +-1 x +-1 on a {-1,+1} map (the same layer shapes): the TE XNOR kernel (LLVM's vector
# ctpop) against the vpshufb nibble popcount with byte accumulation
BINARY_STRATEGIES = ("xnor", "avx2_xnor")
MODULE = {"xnor": "xnor_popcount"}
# CPU time of this thread: on a shared host, wall time also counts the waits for a core
# (the kernels are single-threaded, so their CPU time is their run time on an idle host)
CLOCK = time.thread_time
PEAK = {"avx2_lut": "peak_lut_int8_macs_per_cycle", "avx2_maddubs": "peak_int8_macs_per_cycle",
        "masked": "peak_int8_macs_per_cycle"}


def time_kernel(g, strategy, target, pool, iters, rounds) -> float:
    """Median over rounds of the mean call time (s) of the packed-output kernel."""
    import tvm

    from nrqc.targets.kernels import binary_ops as bo
    from nrqc.targets.kernels import packing as pk

    rng = np.random.default_rng(0)
    # by module, registered or not (a candidate is measured here before it is registered)
    mod = importlib.import_module(f"nrqc.targets.kernels.strategies.{MODULE.get(strategy, strategy)}")
    if mod.WEIGHTS == "binary":  # +-1 weights
        wq = np.where(rng.random((g.c_out, g.cg, g.kh, g.kw)) < 0.5, -1, 1).astype(np.int8)
    else:
        wq = rng.integers(-128, 128, (g.c_out, g.cg, g.kh, g.kw)).astype(np.int8)
    func, wargs = mod.build(g, "pack", target, pool), mod.weight_args(g, wq)
    lib = tvm.tirx.build(bo.as_kernel(func, "k"), target=target.tvm())
    ho, wo = bo.pool_out(g.ho, g.wo, *pool) if pool is not None else (g.ho, g.wo)
    dev = tvm.cpu()
    x = pk.pack_channels(rng.random((g.n, g.h, g.w, g.c_in)) < 0.4)
    args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in
            [x, *wargs, np.ones(g.c_out, np.int32), np.zeros(g.c_out, np.int32), np.zeros((g.n, ho, wo, g.words_out), np.uint32)]]
    f = lib["k"]
    f(*args)
    means = []
    for _ in range(rounds):
        t0 = CLOCK()
        for _ in range(iters):
            f(*args)
        means.append((CLOCK() - t0) / iters)
    return float(np.median(means))


# the instruction each strategy's inner loop is built on, and the MACs one of them does
# (vpshufb: 32 bytes of 4-weight sums = 64 MACs per LO/HI pair; popcount: 32 bytes x 8 bits
# per LO/HI pair = 128 binary MACs each)
SIGNATURE = {"avx2_maddubs": ("vpmaddubsw", 32), "avx2_lut": ("vpshufb", 32), "avx2_xnor": ("vpshufb", 128),
             "xnor": ("vpshufb", 128)}
MCA_CPUS = ("haswell", "znver2")


def inner_loop(asm: str, marker: str) -> list[str]:
    """The shortest loop (label .. backward jump) of the assembly holding `marker`."""
    import re

    lines = asm.splitlines()
    best: list[str] = []
    for i, line in enumerate(lines):
        m = re.match(r"\s*j\w+\s+(\.LBB\S+)", line)
        if not m:
            continue
        for j in range(i, -1, -1):
            if lines[j].startswith(m.group(1) + ":"):
                body = [x for x in lines[j + 1:i + 1] if x.strip() and not x.lstrip().startswith((".", "#"))]
                if any(x.split()[0] == marker for x in body) and (not best or len(body) < len(best)):
                    best = body
                break
    return best


def mca_rates(g, strategy, target, pool=None) -> dict:
    """llvm-mca's cycles per iteration of the strategy's inner loop on each of MCA_CPUS ->
    MAC/cycle (a core this host is not: an AVX2-only Haswell, Zen 2)."""
    import re
    import subprocess
    import tempfile

    import tvm

    from nrqc.targets.kernels import binary_ops as bo

    marker, macs_each = SIGNATURE[strategy]
    mod = importlib.import_module(f"nrqc.targets.kernels.strategies.{MODULE.get(strategy, strategy)}")
    asm = tvm.tirx.build(bo.as_kernel(mod.build(g, "pack", target, pool), "k"), target=target.tvm()).inspect_source("asm")
    body = inner_loop(asm, marker)
    macs = sum(1 for x in body if x.split()[0] == marker) * macs_each
    rates = {}
    with tempfile.NamedTemporaryFile("w", suffix=".s") as f:
        f.write("\n".join(body) + "\n")
        f.flush()
        for cpu in MCA_CPUS:
            out = subprocess.run(["llvm-mca", f"-mcpu={cpu}", "-mtriple=x86_64-unknown-linux-gnu", "-iterations=200",
                                  f.name], capture_output=True, text=True, check=True).stdout
            cycles = int(re.search(r"Total Cycles:\s*(\d+)", out).group(1)) / 200
            rates[cpu] = macs / cycles
    return rates


def main() -> None:
    from nrqc.targets import get_target

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mcpu", default="haswell")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    target = get_target("x86", args.mcpu)
    from nrqc.targets import x86

    peaks = {s: target.figure(PEAK.get(s, "peak_int8_macs_per_cycle")) for s in STRATEGIES}
    ghz = target.figure("clock_ghz")
    print(f"x86 --mcpu {args.mcpu} build on this host ({x86.host_mcpu()}), one thread, clock {ghz:g} GHz; peaks "
          + ", ".join(f"{k} {target.figure(k):g} int8 MAC/cycle" for k in sorted(set(PEAK.values())) if target.figure(k)))
    print(f"{'layer':20s} {'MACs':>9s} " + " ".join(f"{s:>22s}" for s in STRATEGIES))
    for label, g, pool in LAYERS:
        macs = g.n * g.ho * g.wo * g.c_out * g.kh * g.kw * g.cg
        cells = []
        for s in STRATEGIES:
            t = time_kernel(g, s, target, pool, args.iters, args.rounds)
            rate = macs / (t * ghz * 1e9)
            cells.append(f"{t * 1e6:7.1f} us {rate:5.1f} M/c {100 * rate / peaks[s]:3.0f}%")
        print(f"{label:20s} {macs:9d} " + " ".join(f"{c:>22s}" for c in cells))
    # binary MACs (1-bit products) per cycle against the popcount figure (bits per cycle)
    pop = target.figure("peak_popcount_bits_per_cycle")
    print(f"\n+-1 x +-1 XNOR (binary MAC/cycle; {pop:g} popcount bits/cycle peak in the target description)")
    print(f"{'layer':20s} {'MACs':>9s} " + " ".join(f"{s:>22s}" for s in BINARY_STRATEGIES) + "   speedup")
    for label, g, pool in LAYERS:
        macs = g.n * g.ho * g.wo * g.c_out * g.kh * g.kw * g.cg
        ts = [time_kernel(g, s, target, pool, args.iters, args.rounds) for s in BINARY_STRATEGIES]
        cells = [f"{t * 1e6:7.1f} us {macs / (t * ghz * 1e9):5.0f} M/c" for t in ts]
        print(f"{label:20s} {macs:9d} " + " ".join(f"{c:>22s}" for c in cells) + f"   {ts[0] / ts[-1]:5.2f}x")
    if shutil.which("llvm-mca"):
        # this host may not be an AVX2-only core: llvm-mca's model of one is the board-free figure
        print(f"\nllvm-mca, inner loop of each kernel (MAC/cycle on {' / '.join(MCA_CPUS)}; haswell peaks: "
              f"vpshufb {target.figure('peak_lut_int8_macs_per_cycle'):g}, vpmaddubsw 16 (port 0), "
              f"description {target.figure('peak_int8_macs_per_cycle'):g})")
        for label, g, pool in LAYERS[:1] + LAYERS[-1:]:
            cells = []
            for s in ("avx2_maddubs", "avx2_lut", "xnor", "avx2_xnor"):
                r = mca_rates(g, s, target, pool)
                cells.append(f"{s} " + " / ".join(f"{v:.1f}" for v in r.values()))
            print(f"{label:20s} " + "   ".join(cells))
    else:
        print("\nllvm-mca not on PATH: no board-free Haswell figures (apt-get install llvm)")


if __name__ == "__main__":
    main()
