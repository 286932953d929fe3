"""64-bit Raspberry Pi 4/5 on 64-bit Raspberry Pi OS: aarch64 Cortex-A72, NEON."""
from __future__ import annotations

import functools

from nrqc.targets.description import Capabilities, CrossLibrary, Figure, TargetDescription


# Arm features a kernel strategy may decide on, by their LLVM mattr spelling.
_ARM_FEATURES = ("neon", "dotprod", "i8mm")


def capabilities(mattr: tuple[str, ...] = ()) -> Capabilities:
    """aarch64: NEON always (ARMv8-A), dotprod / i8mm only when mattr enables them; 32
    128-bit vector registers."""
    return Capabilities("aarch64", frozenset({"neon"} | {a[1:] for a in mattr if a[1:] in _ARM_FEATURES
                                                           and a.startswith("+")}), 128, 32)


@functools.lru_cache(maxsize=8)
def llvm_features(mcpu: str) -> frozenset[str]:
    """The Arm features (of _ARM_FEATURES) LLVM enables for an aarch64 `mcpu`: a named
    core's description is LLVM's, not ours."""
    import tvm

    feats = tvm.target.codegen.llvm_get_cpu_features(
        tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": mcpu}))
    return frozenset(str(f) for f in feats) & frozenset(_ARM_FEATURES)


def describe() -> TargetDescription:
    mattr = ("+neon",)
    return TargetDescription(
        name="arm_cpu",
        summary="Raspberry Pi 4 (Cortex-A72, 4 cores, aarch64 + NEON), 64-bit Raspberry Pi OS; also runs on a Pi 5",
        # Cortex-A72 is ARMv8.0-A: NEON, no dot product (sdot/udot came with v8.2, the Pi 5's A76).
        caps=capabilities(mattr),
        backend=CrossLibrary(cross_compiler="aarch64-linux-gnu-g++",
                             emulator=("qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu")),
        aliases=("rasp4b", "rpi4", "aarch64"),
        # Cortex-A72 is ARMv8.0-A: NEON but no sdot (dotprod arrived with v8.2 / the Pi 5's A76).
        tvm_target={"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
                    "mattr": list(mattr), "num-cores": 4},
        figures={
            "peak_int8_macs_per_cycle": Figure(16, "int8 MAC/cycle",
                                               "smlal/smlal2 v.8h: 8 MACs per instruction, 2 NEON pipes "
                                               "(Arm Cortex-A72 Software Optimization Guide)"),
            "peak_fp32_flops_per_cycle": Figure(8, "fp32 FLOP/cycle",
                                                "fmla v.4s: 4 lanes x 2 FLOP, 1 per cycle sustained (A72 SWOG)"),
            "peak_popcount_bits_per_cycle": Figure(256, "popcount bits/cycle",
                                                   "cnt v.16b: 128 bits per instruction, 2 NEON pipes (A72 SWOG)"),
            "clock_ghz": Figure(1.5, "GHz", "Raspberry Pi 4 Model B product brief (BCM2711, 1.5 GHz; 1.8 GHz on rev 1.4+)"),
            "ram_bytes": Figure(1 << 30, "bytes", "smallest Raspberry Pi 4 (1 GB); 2/4/8 GB models exist"),
            "l2_bytes": Figure(1 << 20, "bytes", "BCM2711: 1 MB shared L2 (Raspberry Pi documentation)"),
        },
        notes=("cross-compiled with aarch64-linux-gnu-g++ (Debian gcc-aarch64-linux-gnu)",
               "run with the official aarch64 apache-tvm wheel on the Pi"),
    )
