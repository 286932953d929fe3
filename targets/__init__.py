"""Hardware target descriptions: one module per target, collected in a registry.

A description is everything the compiler and the profiler need to know about a target:
the TVM target JSON, how to compile/link for it, how to emulate it, and the hardware
figures (peak throughput, clock, memory) that a profile compares against, each with
where the figure comes from.
"""
from __future__ import annotations

import functools
import json

from nrqc.errors import NrqcError


from nrqc.targets.description import (BareMetalC, BackendSpec, Capabilities, CrossLibrary, Figure,  # noqa: F401
                                      HostLibrary, TargetDescription)


def _registry() -> dict[str, TargetDescription]:
    from nrqc.targets import arm_cpu, arm_cpu_a76, armv7, cortex_m, x86

    out: dict[str, TargetDescription] = {}
    for desc in (x86.describe(), arm_cpu.describe(), arm_cpu_a76.describe(), armv7.describe(),
                 *cortex_m.describe_all()):
        out[desc.name] = desc
    return out


def _mattr(tvm_target: dict) -> tuple[str, ...]:
    m = tvm_target.get("mattr") or ()
    return tuple(str(a) for a in ([m] if isinstance(m, str) else m))


@functools.lru_cache(maxsize=64)
def _caps_for_key(key: str) -> Capabilities:
    from nrqc.targets import arm_cpu, armv7, cortex_m, x86

    t = json.loads(key)
    if t.get("kind") == "c":
        known = {d.tvm_target.get("mcpu"): d.caps for d in cortex_m.describe_all()}
        # C of an unnamed CPU: scalar code, no ISA feature to decide on
        return known.get(t.get("mcpu"), Capabilities("c", frozenset(), 0, 16))
    triple = str(t.get("mtriple", ""))
    if triple.startswith(("aarch64", "arm64")):
        return arm_cpu.capabilities(_mattr(t))
    if triple.startswith(("arm", "thumb")):
        return armv7.capabilities(_mattr(t))
    return x86.mcpu_capabilities(t.get("mcpu"), _mattr(t))


def caps_for_tvm_target(tvm_target) -> Capabilities:
    """Capabilities of a bare TVM target (a JSON dict or a tvm.target.Target) given where a
    description is expected: the same per-target logic as the descriptions, computed once
    per (kind, mcpu, mtriple, mattr)."""
    if not isinstance(tvm_target, dict):
        tvm_target = {"kind": str(tvm_target.kind.name),
                      **{k: ([str(a) for a in tvm_target.attrs[k]] if k == "mattr" else str(tvm_target.attrs[k]))
                         for k in ("mcpu", "mtriple", "mattr") if k in tvm_target.attrs}}
    key = {k: tvm_target[k] for k in ("kind", "mcpu", "mtriple") if k in tvm_target}
    return _caps_for_key(json.dumps({**key, "mattr": list(_mattr(tvm_target))}, sort_keys=True))


def capabilities_of(target) -> Capabilities:
    """`target.caps` of a description; built from a TVM target dict / tvm.target.Target."""
    caps = getattr(target, "caps", None)
    return caps if caps is not None else caps_for_tvm_target(target)


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
