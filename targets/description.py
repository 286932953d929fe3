"""What a hardware target is, as data: its TVM target, its capabilities (typed, computed
once when the description is made) and its back end (how a build for it is produced,
run and measured).

Nothing outside `targets/` parses target strings or tests a back-end name: the rest of
nrqc reads `desc.caps` and hands `desc.backend` to `nrqc.backends`.
"""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Figure:
    """A hardware number and where it comes from (datasheet, ISA manual, measurement)."""

    value: float
    unit: str
    source: str


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """ISA facts the passes, kernel strategies and schedules decide on.

    isa: instruction-set family, "x86" | "aarch64" | "armv7" | "armv7e-m" (bare-metal C).
    features: ISA feature names, /proc/cpuinfo spelling on x86 ("avx2", "avx512_vnni",
      "avx512vbmi", "amx_int8", ...), "neon" / "dotprod" / "i8mm" on Arm, "dsp" / "fpu" on
      Cortex-M.
    vector_bits: width of a SIMD register the code generator uses (0: scalar C).
    vector_registers: architectural SIMD registers (general registers on a scalar target).
    """

    isa: str
    features: frozenset[str]
    vector_bits: int
    vector_registers: int

    def has(self, *features: str) -> bool:
        return all(f in self.features for f in features)

    @property
    def scalar(self) -> bool:
        """No SIMD registers: kernels go through TVM's C code generator as plain loops
        (bare-metal Cortex-M), with layouts that suit scalar code."""
        return self.vector_bits == 0

    @property
    def float_lanes(self) -> int:
        return max(self.vector_bits // 32, 1)

    def to_json(self) -> dict[str, Any]:
        return {"isa": self.isa, "features": sorted(self.features), "vector_bits": self.vector_bits,
                "vector_registers": self.vector_registers}


# ---------------------------------------------------------------------------- back ends
# A back end says how a build is produced and where it runs; `nrqc.backends` holds the
# code for each (chosen by the spec's type, never by a string).


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    name: str  # recorded in the manifest ("target_kind")

    @property
    def runs_on_host(self) -> bool:
        """Its builds can be loaded by this process (given the ISA is present)."""
        return False


@dataclasses.dataclass(frozen=True)
class HostLibrary(BackendSpec):
    """An LLVM shared library for this machine's architecture, loaded by the TVM runtime here."""

    name: str = "host"

    @property
    def runs_on_host(self) -> bool:
        return True


@dataclasses.dataclass(frozen=True)
class CrossLibrary(BackendSpec):
    """A cross-compiled Linux shared library, run on a board over TVM RPC or on the emulated
    board (`emulator` is None when no runtime exists to emulate)."""

    name: str = "linux-cross"
    cross_compiler: str = ""
    emulator: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class BareMetalC(BackendSpec):
    """C source from TVM's C code generator plus a static arena, linked into firmware."""

    name: str = "bare-metal"
    cross_compiler: str = "arm-none-eabi-gcc"
    emulator: tuple[str, ...] | None = None
    gcc_flags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class TargetDescription:
    name: str
    summary: str
    tvm_target: dict[str, Any]
    caps: Capabilities
    backend: BackendSpec
    aliases: tuple[str, ...] = ()
    # Peak throughputs per cycle, clock, memory limits, each with its source.
    figures: dict[str, Figure] = dataclasses.field(default_factory=dict)
    # Free-form facts for people (board names, toolchain packages); code reads `caps`.
    notes: tuple[str, ...] = ()

    # -- transitional accessors (kept while the callers move to `backend` / `caps`)
    @property
    def kind(self) -> str:
        return self.backend.name

    @property
    def cross_compiler(self) -> str | None:
        return getattr(self.backend, "cross_compiler", None) or None

    @property
    def emulator(self) -> tuple[str, ...] | None:
        return getattr(self.backend, "emulator", None)

    def tvm(self):
        import tvm

        return tvm.target.Target(dict(self.tvm_target))

    def figure(self, key: str) -> float | None:
        f = self.figures.get(key)
        return None if f is None else f.value

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "kind": self.backend.name,
                "tvm_target": self.tvm_target, "aliases": list(self.aliases),
                "capabilities": self.caps.to_json(),
                "backend": {k: (list(v) if isinstance(v, tuple) else v)
                            for k, v in dataclasses.asdict(self.backend).items()},
                "cross_compiler": self.cross_compiler, "emulator": list(self.emulator) if self.emulator else None,
                "figures": {k: dataclasses.asdict(f) for k, f in self.figures.items()},
                "notes": list(self.notes)}
