"""Target facts the schedules need: float lanes per vector register, register count."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class VectorSpec:
    isa: str  # "avx512", "avx2", "sse", "neon"
    lanes: int  # float32 lanes per vector register
    registers: int  # architectural vector registers

    @property
    def acc_budget(self) -> int:
        """Vector accumulators a register tile may hold (the rest: weights, broadcasts)."""
        # measured on Zen 4 (AVX-512): 2x16 lanes x 10 columns beats 12 (spills) and 6.
        return 20 if self.registers >= 32 else 12


def spec_of_caps(caps) -> VectorSpec:
    """The schedules' view of a target's capabilities."""
    if caps.vector_bits == 0:
        # C code: no vector registers; the rules' split factors stay at 4 (as measured on
        # Cortex-M builds before capabilities existed)
        return VectorSpec("scalar", 4, 16)
    if caps.isa == "aarch64":
        return VectorSpec("neon", caps.float_lanes, caps.vector_registers)
    if caps.isa == "armv7":
        # AArch32 NEON (16 q registers); a name of its own, so passes that were checked on
        # aarch64 NEON only (Winograd) keep away from it
        return VectorSpec("neon32", caps.float_lanes, caps.vector_registers)
    return VectorSpec({512: "avx512", 256: "avx2"}.get(caps.vector_bits, "sse"), caps.float_lanes,
                      caps.vector_registers)


def vector_spec(target) -> VectorSpec:
    """VectorSpec of a TargetDescription, a target JSON dict or a tvm.target.Target."""
    from nrqc.targets import capabilities_of

    return spec_of_caps(capabilities_of(target))
