"""Target facts the schedules need: float lanes per vector register, register count."""
from __future__ import annotations

import dataclasses
import functools
import json


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


def _target_dict(target) -> dict:
    if isinstance(target, dict):
        return dict(target)
    if hasattr(target, "tvm_target"):  # nrqc TargetDescription
        return dict(target.tvm_target)
    # tvm.target.Target
    return json.loads(json.dumps({k: (list(v) if isinstance(v, (list, tuple)) else v)
                                  for k, v in _target_attrs(target).items()}, default=str))


def _target_attrs(target) -> dict:
    out = {"kind": str(target.kind.name)}
    for key in ("mcpu", "mtriple", "mattr"):
        if key in target.attrs:
            v = target.attrs[key]
            out[key] = [str(x) for x in v] if key == "mattr" else str(v)
    return out


@functools.lru_cache(maxsize=32)
def _spec_for(key: str) -> VectorSpec:
    import tvm

    d = json.loads(key)
    triple = str(d.get("mtriple", ""))
    if d.get("kind") != "llvm":
        return VectorSpec("scalar", 4, 16)
    if triple.startswith(("aarch64", "arm64")):
        return VectorSpec("neon", 4, 32)
    t = tvm.target.Target(d)
    has = lambda f: bool(tvm.target.codegen.target_has_features(f, t))  # noqa: E731
    if has("avx512f"):
        return VectorSpec("avx512", 16, 32)
    if has("avx2"):
        return VectorSpec("avx2", 8, 16)
    return VectorSpec("sse", 4, 16)


def vector_spec(target) -> VectorSpec:
    """VectorSpec of a TargetDescription, a target JSON dict or a tvm.target.Target."""
    d = _target_dict(target)
    key = json.dumps({k: d[k] for k in ("kind", "mcpu", "mtriple", "mattr") if k in d}, sort_keys=True)
    return _spec_for(key)
