"""Hardware target descriptions: one module per target, collected in a registry.

A description is everything the compiler and the profiler need to know about a target:
the TVM target JSON, how to compile/link for it, how to emulate it, and the hardware
figures (peak throughput, clock, memory) that a profile compares against, each with
where the figure comes from.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from nrqc.errors import NrqcError


@dataclasses.dataclass(frozen=True)
class Figure:
    """A hardware number and where it comes from (datasheet, ISA manual, measurement)."""

    value: float
    unit: str
    source: str


@dataclasses.dataclass(frozen=True)
class TargetDescription:
    name: str
    summary: str
    # "host" (runs here), "linux-cross" (a cross-compiled shared library), "bare-metal" (C).
    kind: str
    tvm_target: dict[str, Any]
    aliases: tuple[str, ...] = ()
    # Cross compiler used as export_library's fcompile; None builds with the host compiler.
    cross_compiler: str | None = None
    # Command prefix that runs a binary of this target here, if an emulator exists.
    emulator: tuple[str, ...] | None = None
    # Peak throughputs per cycle, clock, memory limits, each with its source.
    figures: dict[str, Figure] = dataclasses.field(default_factory=dict)
    # Free-form facts (ISA features, board names).
    notes: tuple[str, ...] = ()

    def tvm(self):
        import tvm

        return tvm.target.Target(dict(self.tvm_target))

    def figure(self, key: str) -> float | None:
        f = self.figures.get(key)
        return None if f is None else f.value

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["aliases"] = list(self.aliases)
        d["emulator"] = list(self.emulator) if self.emulator else None
        d["notes"] = list(self.notes)
        return d


def _registry() -> dict[str, TargetDescription]:
    from nrqc.targets import arm_cpu, armv7, cortex_m, x86

    out: dict[str, TargetDescription] = {}
    for desc in (x86.describe(), arm_cpu.describe(), armv7.describe(), *cortex_m.describe_all()):
        out[desc.name] = desc
    return out


def all_targets() -> list[TargetDescription]:
    return list(_registry().values())


def get_target(name: str, mcpu: str | None = None) -> TargetDescription:
    """Look a target up by name or alias; unknown names list the valid ones. `mcpu` names
    the x86 CPU to build for (default: this host's)."""
    reg = _registry()
    for desc in reg.values():
        if name == desc.name or name in desc.aliases:
            if mcpu is not None:
                if desc.name != "x86":
                    raise NrqcError(f"--mcpu {mcpu}: only the x86 target takes a CPU name ({desc.name} builds for "
                                    f"{desc.tvm_target.get('mcpu', 'its fixed CPU')})")
                from nrqc.targets import x86

                return x86.describe(mcpu)
            return desc
    valid = ", ".join(f"{d.name}" + (f" ({'/'.join(d.aliases)})" if d.aliases else "") for d in reg.values())
    raise NrqcError(f"unknown target '{name}': valid targets are {valid}")
