"""Per-layer choice of the binary x int8 strategy: measure or estimate, choose, cache.

On a target that runs here (a host library this CPU can execute) every strategy the
registry offers for the layer (``strategies.for_layer``) is built and timed on the layer's
real shape (median of a few runs, random packed input): the fastest wins. Elsewhere, or
for a layer too small to time, each strategy's op-count estimate over the target's figures
decides. Both the numbers and the method go to the manifest.
"""
from __future__ import annotations

import functools
import time

import numpy as np

from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import build, pixelwise, strategies
from nrqc.targets.kernels import packing as pk

MEASURE_MIN_MACS = 2_000_000  # below this a layer runs in microseconds: timing it is noise


def _candidates(g: bo.ConvGeom, target, encoding: str | None = None) -> tuple:
    """int8 strategies (encoding None), or the +-1-weight strategies that compute on this
    input encoding ("01": AND, "pm1": XNOR; each module's ENCODING)."""
    if encoding is None:
        return strategies.for_layer(g, target)
    return tuple(s for s in strategies.for_layer(g, target, "binary") if s.ENCODING == encoding)


def strategies_for(g: bo.ConvGeom, target, encoding: str | None = None) -> tuple[str, ...]:
    """The int8 strategies (or, with an input encoding, the +-1-weight ones) that exist for
    this layer on this target."""
    return tuple(s.NAME for s in _candidates(g, target, encoding))


def cost_model(g: bo.ConvGeom, target, encoding: str | None = None) -> dict:
    """Cycles estimated per strategy: op counts over the target's peak figures, or (aarch64)
    llvm-mca cycles per unit of work measured on the Pi's core (strategies/neon_unpacked.py)."""
    return {s.NAME: s.cost(g, target) for s in _candidates(g, target, encoding)}


def _measure(g, strategy, target, repeat=5, weights="int8") -> float:
    import tvm

    rng = np.random.default_rng(0)
    if weights == "binary":
        wq = np.where(rng.random((g.c_out, g.cg, g.kh, g.kw)) < 0.5, -1, 1).astype(np.int8)
    else:
        wq = rng.integers(-128, 128, (g.c_out, g.cg, g.kh, g.kw)).astype(np.int8)
    func, wargs = build.build_conv(g, weights, strategy, "pack", wq, target)
    lib = tvm.tirx.build(func, target=target.tvm())
    x = pk.pack_channels(rng.random((g.n, g.h, g.w, g.c_in)) < 0.4)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for a in [x, *wargs, np.ones(g.c_out, np.int32), np.zeros(g.c_out, np.int32),
                                                  np.zeros((g.n, g.ho, g.wo, g.words_out), np.uint32)]]
    lib(*args)
    ts = []
    for _ in range(repeat):
        # CPU time of this thread (the kernel runs in it, single-threaded): on a shared host
        # wall time also counts waits for a core, which made close candidates swap places
        t0 = time.thread_time()
        lib(*args)
        ts.append(time.thread_time() - t0)
    return float(np.median(ts)) * 1e3


@functools.lru_cache(maxsize=256)
def _choose_cached(g: bo.ConvGeom, target_name: str, mcpu: str | None, on_host: bool, measure: bool,
                   encoding: str | None = None):
    from nrqc.targets import get_target

    # mcpu: an x86 build for a named CPU is not the host's description (other strategies)
    target = get_target(target_name, mcpu)
    est = cost_model(g, target, encoding)
    if len(est) == 1:
        return {"strategy": next(iter(est)), "method": "the only kernel for this layer on this target"}
    weights = "int8" if encoding is None else "binary"
    if measure:
        try:
            ms = {s: round(_measure(g, s, target, weights=weights), 4) for s in strategies_for(g, target, encoding)}
            best = min(ms, key=ms.get)
            return {"strategy": best, "method": "measured on this host (median of 5, ms)", "candidates_ms": ms,
                    "cost_model_cycles": {k: round(v) for k, v in est.items()}}
        except Exception as e:  # measurement is an optimization; the cost model still decides
            err = str(e).splitlines()[0][:120]
            best = min(est, key=est.get)
            return {"strategy": best, "method": f"cost model (measurement failed: {err})",
                    "cost_model_cycles": {k: round(v) for k, v in est.items()}}
    best = min(est, key=est.get)
    why = ("target cannot run here" if not on_host or not runs_here(target)
           else f"layer under {MEASURE_MIN_MACS:,} MACs, too small to time")
    return {"strategy": best, "method": f"cost model: estimates from peak figures or measured rates ({why})",
            "cost_model_cycles": {k: round(v) for k, v in est.items()}}


def choose_int8_strategy(g: bo.ConvGeom, target, measure: bool | None = None, encoding: str | None = None) -> dict:
    """The int8-weight strategy of a layer; with `encoding` ("01" or "pm1", the packed
    input's), the +-1-weight one among those computing on that encoding."""
    macs = g.n * g.ho * g.wo * g.c_out * g.kh * g.kw * g.cg
    on_host = target is None or target.backend.runs_on_host
    if measure is None:
        # Only where this CPU can run the target's code: a build for a newer x86 CPU
        # (--mcpu) would die of SIGILL while being timed.
        measure = target is not None and on_host and macs >= MEASURE_MIN_MACS and runs_here(target)
    try:
        name = target.name
    except AttributeError:
        name = "x86"
    mcpu = target.tvm_target.get("mcpu") if name == "x86" and target is not None else None
    return dict(_choose_cached(g, name, mcpu, on_host, bool(measure), encoding))


def runs_here(target) -> bool:
    """This host's CPU has every ISA feature the (x86) target's code may use."""
    from nrqc.targets import x86

    return pixelwise.target_family(target) != "x86" or not x86.missing_here(x86.required_flags(target))

