"""The Cortex-M kernels' parameters, declared in one place: what a tuner enumerates (`SPACE`),
the defaults (measured, below), and the configuration a compile applies (`use`).

A configuration maps a kernel key (`key(op)`: the operator and its static parameters, the same
for every model with that layer shape) to {knob: value}; keys without an entry use the
defaults. `nrqc tune --target cortex-m4` can measure candidates with the QEMU instruction
count (nrqc.cortex_m.microbench runs one kernel call) and hand its choices to `use` before
`nrqc compile`; the compile report says which configuration each layer ran with.
"""
from __future__ import annotations

import hashlib
import json

# knob -> (allowed values, default, what it changes)
SPACE: dict[str, dict[str, tuple]] = {
    "binary_conv": {
        # where the nibble tables live: built per channel block in the arena (RAM: Q x 16 x
        # pairs_per_block words) or all of them precomputed in flash (Q x 16 x Co/2 words)
        "table": (("arena", "flash"), "arena", "nibble-table placement"),
        # output-channel pairs per table block: more pairs, fewer index computations per MAC,
        # more registers and a larger arena table
        "pairs_per_block": ((1, 2, 4, 8), 4, "output-channel pairs accumulated together"),
    },
    "int8_conv": {
        # the SMLAD first layer of a 1-D stride-1 conv: output pixels per int8 weight word
        # (targets/kernels/strategies/cortex_m_smlad.py); 0 stores int16 pairs instead (twice
        # the weight flash, 13/16 instructions per MAC against (3 + 3 TB) / (4 TB) + loop)
        "time_block": ((0, 4, 5, 6), 6, "output pixels per sign-extended weight word (0: int16 pairs)"),
    },
    "float_conv": {
        # a float conv (+ bias, ReLU): nrqc's register-blocked C (nrqc_f32_conv) or TVM's C
        # output; the tuner measures both per layer by the QEMU instruction count
        "kernel": (("nrqc", "tvm"), "nrqc", "nrqc_f32_conv or TVM's C kernel"),
    },
    "float_maxpool": {
        "kernel": (("nrqc", "tvm"), "nrqc", "nrqc_f32_maxpool or TVM's C kernel"),
    },
    "binary_conv1x1_float": {
        "out_block": ((4, 8, 16), 16, "float accumulators kept in registers per bit walk"),
    },
}

_CONFIG: dict[str, dict] = {}


def key(op: dict) -> str:
    """A kernel's tuning key: its operator description without the choices a back end makes."""
    text = json.dumps(op, sort_keys=True)
    return f"{op['op']}:{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def defaults(op_name: str) -> dict:
    return {k: v[1] for k, v in SPACE.get(op_name, {}).items()}


def choices(op_name: str) -> dict[str, tuple]:
    """Every value each knob may take (what a tuner enumerates)."""
    return {k: v[0] for k, v in SPACE.get(op_name, {}).items()}


def use(config: dict[str, dict] | None) -> None:
    """Apply a tuned configuration (kernel key -> {knob: value}) to later compiles; None clears it."""
    _CONFIG.clear()
    for k, knobs in (config or {}).items():
        op_name = k.split(":", 1)[0]
        allowed = choices(op_name)
        for name, value in knobs.items():
            if name not in allowed or value not in allowed[name]:
                raise ValueError(f"cortex-m knob {op_name}.{name}={value!r}: allowed {allowed.get(name)}")
        _CONFIG[k] = dict(knobs)


def for_kernel(op: dict) -> dict:
    """The knob values a kernel is built with: the defaults, overridden by `use`."""
    return {**defaults(op["op"]), **_CONFIG.get(key(op), {})}
