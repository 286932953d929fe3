"""x86-64 host: LLVM with the host CPU's features detected (popcount, AVX2, AVX-512)."""
from __future__ import annotations

import functools

from nrqc.targets import Figure, TargetDescription


@functools.lru_cache(maxsize=1)
def host_cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def host_mcpu() -> str:
    # TVM refuses mcpu=native; LLVM's own host detection gives the exact CPU name, and
    # without an explicit mcpu no hardware popcount is emitted.
    import tvm

    return str(tvm.target.codegen.llvm_get_system_cpu())


@functools.lru_cache(maxsize=1)
def amx_usable() -> bool:
    """The CPU has AMX int8 tiles and the OS grants this process their state (Linux
    arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA); the compiled kernels ask again themselves)."""
    import ctypes
    import os

    from nrqc.targets.kernels.amx import ARCH_REQ_XCOMP_PERM, SYS_ARCH_PRCTL, XFEATURE_XTILEDATA

    flags = host_cpu_flags()
    if not {"amx_int8", "amx_tile"} <= flags or os.environ.get("NRQC_NO_AMX"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


def _clock_ghz() -> Figure:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return Figure(float(line.split(":")[1]) / 1000.0, "GHz", "/proc/cpuinfo 'cpu MHz' of this host")
    except (OSError, ValueError):
        pass
    return Figure(3.0, "GHz", "assumed: /proc/cpuinfo gives no clock")


def describe() -> TargetDescription:
    flags = host_cpu_flags()
    avx512 = "avx512f" in flags
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    vpopcnt = "avx512_vpopcntdq" in flags
    amx = amx_usable()
    vec_bits = 512 if avx512 else 256 if "avx2" in flags else 128
    # int8 MACs per cycle: vpdpbusd does vec_bits/8 u8*s8 MACs; two issue ports on
    # Intel server cores and Zen 4 (512-bit ops as two 256-bit halves => same total).
    if vnni:
        # Zen 4 executes a 512-bit op as two 256-bit halves, so one zmm vpdpbusd per cycle;
        # Intel cores issue two per cycle.
        per_cycle = 1 if "znver" in host_mcpu() else 2
        int8 = Figure(vec_bits / 8 * per_cycle, "int8 MAC/cycle",
                      "vpdpbusd: vec_bits/8 u8*s8 MACs per instruction, 2 per cycle on Intel (optimization "
                      "manual), 1 zmm per cycle on Zen 4 (AMD Software Optimization Guide 57647)")
    else:
        int8 = Figure(2 * vec_bits / 16 * 2, "int8 MAC/cycle",
                      "vpmaddubsw+vpmaddwd: vec_bits/16 pairs per instruction, 2 ports (Intel optimization manual)")
    if vpopcnt:
        pop = Figure(vec_bits, "popcount bits/cycle", "vpopcntq zmm: 512 bits per instruction, 1 per cycle (uops.info)")
    else:
        pop = Figure(3 * 64, "popcount bits/cycle", "scalar popcnt r64: 3 per cycle on Zen/Skylake ALUs (uops.info)")
    return TargetDescription(
        name="x86",
        summary=f"this x86-64 host ({host_mcpu()}), LLVM, {vec_bits}-bit SIMD"
                + (", AVX-512 VPOPCNTDQ" if vpopcnt else "") + (", VNNI" if vnni else "") + (", AMX" if amx else ""),
        kind="host",
        aliases=("host", "llvm"),
        tvm_target={"kind": "llvm", "mcpu": host_mcpu(), "num-cores": _num_cores(),
                    **({"mattr": ["+amx-int8", "+amx-tile"]} if amx else {})},
        figures={
            "peak_int8_macs_per_cycle": int8,
            "peak_fp32_flops_per_cycle": Figure(2 * 2 * vec_bits / 32, "fp32 FLOP/cycle",
                                                "2 FMA ports x vec_bits/32 lanes x 2 FLOP"),
            "peak_popcount_bits_per_cycle": pop,
            "clock_ghz": _clock_ghz(),
            **({"peak_lut_int8_macs_per_cycle": Figure(128, "int8 MAC/cycle",
                                                       "vpermb table lookups: 2 vpermb + 2 vpdpbusd per 256 MACs "
                                                       "(lo and hi table planes), one vpermb and one vpdpbusd per "
                                                       "cycle (measured on Zen 4: they issue on different pipes)")}
               if vnni and "avx512vbmi" in flags else {}),
            **({"peak_amx_int8_macs_per_cycle": Figure(1024, "int8 MAC/cycle",
                                                       "AMX tdpbusd: 16x16x64 u8*s8 MACs per 16 cycles "
                                                       "(Intel optimization manual, AMX chapter)")} if amx else {}),
        },
        notes=tuple(sorted(f for f in flags if f.startswith(("avx", "popcnt", "bmi"))
                           or (amx and f in ("amx_int8", "amx_tile")))),
    )


def _num_cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
