"""Per-layer choice of the int8-input conv strategy (``strategies.INT8_INPUT_REGISTRY``):
timed on the layer's real shape where the target runs here, else the strategies' op-count
estimates decide; as ``select`` does for the binary layers, and recorded the same way."""
from __future__ import annotations

import functools
import time

import numpy as np

from nrqc.targets.kernels import int8_conv as ic
from nrqc.targets.kernels import select, strategies

# An int8 first layer is a small share of a model's MACs but a large share of its time:
# timed from a quarter of the binary layers' threshold.
MEASURE_MIN_MACS = select.MEASURE_MIN_MACS // 4


def cost_model(g: ic.Int8ConvGeom, target) -> dict:
    return {s.NAME: s.cost(g, target) for s in strategies.int8_input_for_layer(g, target)}


def _measure(g: ic.Int8ConvGeom, s, target, repeat=5) -> float:
    import tvm

    from nrqc.targets.kernels.binary_ops import as_kernel

    c = g.conv
    rng = np.random.default_rng(0)
    wq = rng.integers(-127, 128, (c.c_out, c.cg, c.kh, c.kw)).astype(np.int8)
    lib = tvm.tirx.build(as_kernel(s.build(g, "pack", target), "k"), target=target.tvm())
    x = (rng.standard_normal(g.src_shape) * 40).astype(g.src_dtype) if g.src_dtype == "float32" else \
        rng.integers(np.iinfo(g.src_dtype).min, np.iinfo(g.src_dtype).max + 1, g.src_shape).astype(g.src_dtype)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for a in [x, *s.weight_args(g, wq), np.ones(c.c_out, np.int32),
                                                  np.zeros(c.c_out, np.int32),
                                                  np.zeros((c.n, c.ho, c.wo, c.words_out), np.uint32)]]
    lib["k"](*args)
    ts = []
    for _ in range(repeat):
        # CPU time of this thread, as select.py: wall time on a loaded host counts the waits
        # for a core and let int8_generic win over int8_avx2 (in thread CPU time 1.5x slower
        # on the DNSMOS-like first layer, haswell build on Zen 4)
        t0 = time.thread_time()
        lib["k"](*args)
        ts.append(time.thread_time() - t0)
    return float(np.median(ts)) * 1e3


@functools.lru_cache(maxsize=128)
def _choose_cached(g: ic.Int8ConvGeom, target_name: str, mcpu: str | None, measure: bool, why_not: str):
    from nrqc.targets import get_target

    target = get_target(target_name, mcpu)
    est = cost_model(g, target)
    cycles = {k: round(v) for k, v in est.items()}
    if measure and len(est) > 1:
        try:
            ms = {s.NAME: round(_measure(g, s, target), 4) for s in strategies.int8_input_for_layer(g, target)}
            return {"strategy": min(ms, key=ms.get), "method": "measured on this host (median of 5, ms)",
                    "candidates_ms": ms, "cost_model_cycles": cycles}
        except Exception as e:  # measurement is an optimization; the cost model still decides
            why = f"measurement failed: {str(e).splitlines()[0][:120]}"
    elif len(est) == 1:
        why = "the only strategy for this layer"
    else:
        why = why_not
    return {"strategy": min(est, key=est.get),
            "method": f"cost model: estimates from peak figures or measured rates ({why})",
            "cost_model_cycles": cycles}


def choose(g: ic.Int8ConvGeom, target) -> dict:
    """{"strategy", "method", ...} for one int8-input layer on `target`."""
    c = g.conv
    macs = c.n * c.ho * c.wo * c.c_out * c.kh * c.kw * c.cg
    runs = target.backend.runs_on_host and select.runs_here(target)
    measure = runs and macs >= MEASURE_MIN_MACS
    why_not = "target cannot run here" if not runs else f"layer under {MEASURE_MIN_MACS:,} MACs, too small to time"
    mcpu = target.tvm_target.get("mcpu") if target.name == "x86" else None
    choice = dict(_choose_cached(g, target.name, mcpu, bool(measure), why_not))
    s = strategies.int8_input_lookup(choice["strategy"])
    if hasattr(s, "knobs"):  # a strategy with tunable parameters records them (the tuner reads the key)
        choice.update(s.knobs(g))
    return choice
