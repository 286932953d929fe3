"""x86-64: LLVM for this host's CPU (features detected), or for a named CPU (`--mcpu`).

A build for a named CPU (`x86-64-v2`, `haswell`, `x86-64-v4`, `icelake-server`, ...) takes
its ISA features from LLVM's description of that CPU, not from this host, so a user can
build here for an older or different machine, and tests can build for every ISA level
this host can run (code for an older ISA runs on a newer CPU). The features a build needs
are recorded in the manifest; running it on a CPU that lacks one is refused with a clear
error instead of dying of SIGILL.
"""
from __future__ import annotations

import functools
import os

from nrqc.errors import NrqcError
from nrqc.targets.description import Capabilities, Figure, HostLibrary, TargetDescription

TRIPLE = "x86_64-unknown-linux-gnu"

# LLVM feature name -> the /proc/cpuinfo flag the kernel strategies and the run-time check
# read (one vocabulary for host-detected and named-CPU builds).
_LLVM_TO_CPUINFO = {
    "sse4.1": "sse4_1", "sse4.2": "sse4_2", "ssse3": "ssse3", "popcnt": "popcnt", "avx": "avx", "avx2": "avx2",
    "fma": "fma", "f16c": "f16c", "bmi": "bmi1", "bmi2": "bmi2", "avxvnni": "avx_vnni",
    "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512cd": "avx512cd", "avx512dq": "avx512dq",
    "avx512vl": "avx512vl", "avx512ifma": "avx512ifma", "avx512vbmi": "avx512vbmi", "avx512vbmi2": "avx512_vbmi2",
    "avx512vnni": "avx512_vnni", "avx512bitalg": "avx512_bitalg", "avx512vpopcntdq": "avx512_vpopcntdq",
    "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16", "amx-int8": "amx_int8", "amx-tile": "amx_tile",
}
# The flags whose absence makes a build's code illegal on a CPU (checked before loading).
ISA_FLAGS = frozenset(_LLVM_TO_CPUINFO.values())
# AMX is off unless the tiles are usable: on the host the OS must grant their state
# (amx_usable); NRQC_NO_AMX turns them off for named CPUs too.
_AMX_FLAGS = frozenset({"amx_int8", "amx_tile"})


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


@functools.lru_cache(maxsize=None)
def mcpu_flags(mcpu: str) -> frozenset[str]:
    """The ISA flags (cpuinfo names) LLVM gives the named x86 CPU."""
    import tvm

    if not tvm.target.codegen.llvm_is_valid_cpu(mcpu, TRIPLE):
        raise NrqcError(f"--mcpu {mcpu}: not an x86-64 CPU LLVM knows (for example x86-64-v2, haswell, x86-64-v3, "
                        f"x86-64-v4, skylake-avx512, icelake-server, znver4, sapphirerapids)")
    feats = tvm.target.codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
    return frozenset(_LLVM_TO_CPUINFO[str(f)] for f in feats if str(f) in _LLVM_TO_CPUINFO)


def required_flags(desc: TargetDescription) -> list[str]:
    """The ISA flags a build for `desc` may use, as recorded in the manifest."""
    return sorted(desc.caps.features)


def capabilities(flags: frozenset[str], amx: bool) -> Capabilities:
    """Capabilities of an x86-64 CPU with these cpuinfo flags (AMX only when `amx`)."""
    avx512 = "avx512f" in flags
    return Capabilities("x86", frozenset(f for f in flags if f in ISA_FLAGS and (amx or f not in _AMX_FLAGS)),
                        512 if avx512 else 256 if "avx2" in flags else 128, 32 if avx512 else 16)


@functools.lru_cache(maxsize=None)
def mcpu_capabilities(mcpu: str | None, mattr: tuple[str, ...] = ()) -> Capabilities:
    """Capabilities of a plain TVM target {"kind": "llvm", "mcpu": mcpu, "mattr": mattr}
    (a schedule handed a target dict instead of a description): LLVM's features of the CPU
    (generic x86-64 without mcpu) plus the +features of mattr."""
    flags = set(mcpu_flags(mcpu or "x86-64"))
    flags |= {_LLVM_TO_CPUINFO[a[1:]] for a in mattr if a.startswith("+") and a[1:] in _LLVM_TO_CPUINFO}
    flags -= {_LLVM_TO_CPUINFO[a[1:]] for a in mattr if a.startswith("-") and a[1:] in _LLVM_TO_CPUINFO}
    return capabilities(frozenset(flags), _AMX_FLAGS <= flags)


def missing_here(required) -> list[str]:
    """The ISA flags in `required` this host's CPU lacks."""
    return sorted(set(required) - host_cpu_flags())


def check_runs_here(required: list[str] | None, what: str, mcpu: str | None) -> None:
    """Refuse to load a library whose ISA this CPU lacks (it would die of SIGILL)."""
    host = host_cpu_flags()
    if not required or not host:  # no record (older artifact) or no cpuinfo: nothing to compare
        return
    missing = missing_here(required)
    if missing:
        raise NrqcError(f"{what}: built for x86 CPU '{mcpu}', which has {', '.join(missing)}; this CPU "
                        f"({host_mcpu()}) lacks {'it' if len(missing) == 1 else 'them'}: rebuild with "
                        f"`nrqc compile ... --target x86 --mcpu {host_mcpu()}` (or an older level such as haswell)")


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
    if not _AMX_FLAGS <= flags or os.environ.get("NRQC_NO_AMX"):
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


def describe(mcpu: str | None = None) -> TargetDescription:
    """This host (mcpu None; $NRQC_X86_MCPU sets a default named CPU), or the named CPU."""
    mcpu = mcpu or os.environ.get("NRQC_X86_MCPU") or None
    if mcpu is None or mcpu == host_mcpu():
        mcpu, flags, amx, where = host_mcpu(), host_cpu_flags(), amx_usable(), "this x86-64 host"
    else:
        flags = mcpu_flags(mcpu)
        amx = _AMX_FLAGS <= flags and not os.environ.get("NRQC_NO_AMX")
        where = "x86-64 CPU"
    caps = capabilities(flags, amx)
    vnni = caps.has("avx512_vnni") or caps.has("avx_vnni")
    vpopcnt = caps.has("avx512_vpopcntdq")
    vec_bits = caps.vector_bits
    # int8 MACs per cycle: vpdpbusd does vec_bits/8 u8*s8 MACs; two issue ports on
    # Intel server cores and Zen 4 (512-bit ops as two 256-bit halves => same total).
    if vnni:
        # Zen 4 executes a 512-bit op as two 256-bit halves, so one zmm vpdpbusd per cycle;
        # Intel cores issue two per cycle.
        per_cycle = 1 if "znver" in mcpu else 2
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
        summary=f"{where} ({mcpu}), LLVM, {vec_bits}-bit SIMD"
                + (", AVX-512 VPOPCNTDQ" if vpopcnt else "") + (", VNNI" if vnni else "") + (", AMX" if amx else ""),
        caps=caps,
        backend=HostLibrary(),
        aliases=("host", "llvm"),
        tvm_target={"kind": "llvm", "mcpu": mcpu, "num-cores": _num_cores(),
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
               if vnni and caps.has("avx512vbmi") else
               {"peak_lut_int8_macs_per_cycle": _avx2_lut_peak(mcpu)} if caps.has("avx2") else {}),
            **({"peak_amx_int8_macs_per_cycle": Figure(1024, "int8 MAC/cycle",
                                                       "AMX tdpbusd: 16x16x64 u8*s8 MACs per 16 cycles "
                                                       "(Intel optimization manual, AMX chapter)")} if amx else {}),
        },
        notes=(("ISA features detected from this host's /proc/cpuinfo" if where.startswith("this") else
                 f"ISA features from LLVM's description of {mcpu}, not from this host"),
               "a build records the features it may use (manifest cpu.isa_flags); nrqc run refuses it on a CPU "
               "lacking one",
               "AMX tiles only where the OS grants their state (Linux arch_prctl); NRQC_NO_AMX=1 turns them off"),
    )


def _avx2_lut_peak(mcpu: str) -> Figure:
    # strategies/avx2_lut.py: 2 vpshufb (LO and HI table planes) per 32 pixels x 4 MACs
    shuffles = 2 if "znver" in mcpu else 1
    return Figure(64 * shuffles, "int8 MAC/cycle",
                  "AVX2 vpshufb nibble tables: 2 vpshufb ymm per 128 MACs (lo and hi table planes, a pixel per byte); "
                  + ("2 shuffles per cycle on Zen 2/3/4 (FP1/FP2 pipes)" if shuffles == 2 else
                     "1 shuffle per cycle on Intel cores (port 5 only)") + " (uops.info, VPSHUFB ymm)")


def _num_cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
