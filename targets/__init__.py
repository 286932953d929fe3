"""Hardware target descriptions: one module per target, collected in a registry.

A description is everything the compiler and the profiler need to know about a target:
the TVM target JSON, how to compile/link for it, how to emulate it, and the hardware
figures (peak throughput, clock, memory) that a profile compares against, each with
where the figure comes from.
"""
from __future__ import annotations

from nrqc.errors import NrqcError


from nrqc.targets.description import (BareMetalC, BackendSpec, Capabilities, CrossLibrary, Figure,  # noqa: F401
                                      HostLibrary, TargetDescription)


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
