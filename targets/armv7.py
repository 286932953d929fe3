"""32-bit Raspberry Pi OS (armhf): ARMv7-A Cortex-A72 in AArch32 state, NEON + VFPv4. Compile only.

There is no official armv7l wheel of apache-tvm / apache-tvm-ffi on PyPI, so neither a
Pi on 32-bit OS nor an emulator here has a TVM runtime without building it from source
(DEPLOY.md gives the commands). The 64-bit OS and ``arm_cpu`` are the supported path.
"""
from __future__ import annotations

from nrqc.targets.description import Capabilities, CrossLibrary, Figure, TargetDescription


def capabilities(mattr: tuple[str, ...] = ()) -> Capabilities:
    """ARMv7-A in AArch32 state: NEON and VFPv4 when mattr enables them; 16 128-bit q registers."""
    feats = frozenset(a[1:] for a in mattr if a.startswith("+") and a[1:] in ("neon", "vfp4"))
    return Capabilities("armv7", feats, 128 if "neon" in feats else 0, 16)


def describe() -> TargetDescription:
    mattr = ("+neon", "+vfp4")
    return TargetDescription(
        name="armv7",
        summary="Raspberry Pi 2/3/4 on 32-bit Raspberry Pi OS (armhf: ARMv7-A, NEON, VFPv4); compile only, "
                "the TVM runtime must be built on the Pi",
        caps=capabilities(mattr),
        # qemu-arm-static exists, but there is no armv7 TVM runtime to run in it
        backend=CrossLibrary(cross_compiler="arm-linux-gnueabihf-g++", emulator=None),
        aliases=("armhf", "rpi-32"),
        # 32-bit Raspberry Pi OS is built for ARMv7-A + NEON + VFPv4, hard float. mcpu is the
        # oldest such Pi core (Pi 2's Cortex-A7), so the library runs on every Pi with that OS
        # (A53/A72 in AArch32 state execute ARMv7-A code); the figures below are a Pi 4's A72.
        tvm_target={"kind": "llvm", "mtriple": "armv7l-linux-gnueabihf", "mcpu": "cortex-a7",
                    "mattr": list(mattr), "mfloat-abi": "hard", "num-cores": 4},
        figures={
            "peak_int8_macs_per_cycle": Figure(16, "int8 MAC/cycle",
                                               "vmlal.s8 q: 8 MACs per instruction, 2 NEON pipes (Arm Cortex-A72 "
                                               "Software Optimization Guide; AArch32 NEON has the same units)"),
            "peak_fp32_flops_per_cycle": Figure(8, "fp32 FLOP/cycle",
                                                "vfma.f32 q: 4 lanes x 2 FLOP, 1 per cycle sustained (A72 SWOG)"),
            "peak_popcount_bits_per_cycle": Figure(256, "popcount bits/cycle",
                                                   "vcnt.8 q: 128 bits per instruction, 2 NEON pipes (A72 SWOG)"),
            "clock_ghz": Figure(1.5, "GHz", "Raspberry Pi 4 Model B product brief (BCM2711, 1.5 GHz)"),
            "ram_bytes": Figure(1 << 30, "bytes", "smallest Raspberry Pi 4 (1 GB); a 32-bit process addresses "
                                                  "at most 3 GB"),
            "l2_bytes": Figure(1 << 20, "bytes", "BCM2711: 1 MB shared L2 (Raspberry Pi documentation)"),
        },
        notes=("cross-compiled with arm-linux-gnueabihf-g++ (Debian gcc-arm-linux-gnueabihf)",
               "no official armv7l TVM wheel: build the TVM runtime from source on the Pi (see DEPLOY.md)"),
    )
