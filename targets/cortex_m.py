"""Cortex-M4 / Cortex-M7 microcontrollers: bare-metal C from TVM's C codegen."""
from __future__ import annotations

from nrqc.targets.description import BareMetalC, Capabilities, Figure, TargetDescription

_GCC_FLAGS = {
    "cortex-m4": ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
    "cortex-m7": ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
}

_QEMU_MACHINE = {"cortex-m4": "mps2-an386", "cortex-m7": "mps2-an500"}


def gcc_flags(name: str) -> tuple[str, ...]:
    return _GCC_FLAGS[name]


def describe_all() -> list[TargetDescription]:
    m4 = TargetDescription(
        name="cortex-m4",
        summary="Arm Cortex-M4F (ARMv7E-M, DSP + single-precision FPU), e.g. STM32F4; 256 KB flash / 64 KB RAM budget",
        aliases=("m4",),
        tvm_target={"kind": "c", "mcpu": "cortex-m4"},
        # ARMv7E-M: DSP extension (SMLAD, SADD8, ...) on 32-bit general registers, no SIMD registers.
        caps=Capabilities("armv7e-m", frozenset({"dsp", "fpu"}), 0, 13),
        backend=BareMetalC(emulator=("qemu-system-arm", "-M", _QEMU_MACHINE["cortex-m4"], "-nographic", "-semihosting"),
                           gcc_flags=_GCC_FLAGS["cortex-m4"]),
        figures={
            "peak_int8_macs_per_cycle": Figure(2, "int8 MAC/cycle",
                                               "SMLAD: two 16x16 MACs per cycle (Cortex-M4 Technical Reference Manual)"),
            "peak_fp32_flops_per_cycle": Figure(2, "fp32 FLOP/cycle", "VFMA.F32: 1 per cycle (Cortex-M4 TRM)"),
            "peak_popcount_bits_per_cycle": Figure(32 / 12, "popcount bits/cycle",
                                                   "no popcount instruction: ~12-instruction SWAR popcount per 32-bit word"),
            "clock_ghz": Figure(0.168, "GHz", "STM32F407 datasheet (168 MHz)"),
            "flash_bytes": Figure(256 * 1024, "bytes", "nrqc budget for a small M4 part (STM32F401RC: 256 KB flash)"),
            "ram_bytes": Figure(64 * 1024, "bytes", "nrqc budget for a small M4 part (STM32F401RC: 64 KB SRAM)"),
        },
        notes=("emulated by qemu-system-arm -M mps2-an386 (Cortex-M4)",),
    )
    m7 = TargetDescription(
        name="cortex-m7",
        summary="Arm Cortex-M7F (ARMv7E-M, dual-issue, double-precision FPU), e.g. STM32H7; 2 MB flash / 1 MB RAM",
        aliases=("m7",),
        tvm_target={"kind": "c", "mcpu": "cortex-m7"},
        # ARMv7E-M: DSP extension (SMLAD, SADD8, ...) on 32-bit general registers, no SIMD registers.
        caps=Capabilities("armv7e-m", frozenset({"dsp", "fpu", "dual_issue"}), 0, 13),
        backend=BareMetalC(emulator=("qemu-system-arm", "-M", _QEMU_MACHINE["cortex-m7"], "-nographic", "-semihosting"),
                           gcc_flags=_GCC_FLAGS["cortex-m7"]),
        figures={
            "peak_int8_macs_per_cycle": Figure(4, "int8 MAC/cycle",
                                               "dual-issue SMLAD: 2 x two 16x16 MACs per cycle (Cortex-M7 TRM)"),
            "peak_fp32_flops_per_cycle": Figure(2, "fp32 FLOP/cycle", "VFMA.F32: 1 per cycle (Cortex-M7 TRM)"),
            "peak_popcount_bits_per_cycle": Figure(32 / 6, "popcount bits/cycle",
                                                   "no popcount instruction: SWAR popcount, dual-issued"),
            "clock_ghz": Figure(0.48, "GHz", "STM32H743 datasheet (480 MHz)"),
            "flash_bytes": Figure(2 * 1024 * 1024, "bytes", "STM32H743 datasheet (2 MB flash)"),
            "ram_bytes": Figure(1024 * 1024, "bytes", "STM32H743 datasheet (1 MB SRAM)"),
        },
        notes=("emulated by qemu-system-arm -M mps2-an500 (Cortex-M7)",),
    )
    return [m4, m7]
