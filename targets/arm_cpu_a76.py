"""64-bit Raspberry Pi 5 on 64-bit Raspberry Pi OS: aarch64 Cortex-A76 (ARMv8.2-A: NEON + sdot/udot).

It differs from the Pi 4 target (`arm_cpu`) by the core LLVM schedules and selects
instructions for, the features the kernel strategies decide on (dotprod: the binary x int8
layers get the ``neon_sdot`` strategy, the Pi 4 ``neon_sadalp``), the emulated board's core
(`qemu -cpu cortex-a76`), the llvm-mca model of the cycle estimate, and the tuning database
(its key has the mcpu).
"""
from __future__ import annotations

from nrqc.targets.arm_cpu import capabilities, llvm_features
from nrqc.targets.description import CrossLibrary, Figure, TargetDescription

MCPU = "cortex-a76"


def describe() -> TargetDescription:
    # mattr spells out what LLVM's cortex-a76 already has (neon, dotprod; no i8mm, which came
    # with v8.6), so that a bare target dict of this build carries the same capabilities.
    mattr = tuple(f"+{f}" for f in ("neon", "dotprod", "i8mm") if f in llvm_features(MCPU))
    return TargetDescription(
        name="arm_cpu_a76",
        summary="Raspberry Pi 5 (Cortex-A76, 4 cores, aarch64 + NEON + dot product), 64-bit Raspberry Pi OS",
        caps=capabilities(mattr),
        backend=CrossLibrary(cross_compiler="aarch64-linux-gnu-g++",
                             emulator=("qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu")),
        aliases=("rpi5", "pi5"),
        tvm_target={"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": MCPU,
                    "mattr": list(mattr), "num-cores": 4},
        figures={
            "peak_int8_macs_per_cycle": Figure(32, "int8 MAC/cycle",
                                               "sdot v.4s: 16 MACs per instruction, 2 ASIMD pipes "
                                               "(Arm Cortex-A76 Software Optimization Guide)"),
            "peak_fp32_flops_per_cycle": Figure(16, "fp32 FLOP/cycle",
                                                "fmla v.4s: 4 lanes x 2 FLOP, 2 ASIMD pipes (A76 SWOG)"),
            "peak_popcount_bits_per_cycle": Figure(256, "popcount bits/cycle",
                                                   "cnt v.16b: 128 bits per instruction, 2 ASIMD pipes (A76 SWOG)"),
            "clock_ghz": Figure(2.4, "GHz", "Raspberry Pi 5 product brief (BCM2712, quad Cortex-A76 at 2.4 GHz)"),
            "ram_bytes": Figure(2 << 30, "bytes", "smallest Raspberry Pi 5 at launch (2 GB; 1 GB added later, "
                                                  "4/8/16 GB models exist)"),
            "l2_bytes": Figure(512 << 10, "bytes", "BCM2712: 512 KB L2 per core (Raspberry Pi 5 product brief)"),
            "l3_bytes": Figure(2 << 20, "bytes", "BCM2712: 2 MB shared L3 (Raspberry Pi 5 product brief)"),
        },
        notes=("cross-compiled with aarch64-linux-gnu-g++ (Debian gcc-aarch64-linux-gnu)",
               "run with the official aarch64 apache-tvm wheel on the Pi",
               "binary x int8 layers: sdot kernels (strategies/neon_sdot.py); other kernels as on the Pi 4"),
    )
