"""Builder and runners for MetaSchedule.

The stock LocalBuilder's default build imports `tvm.s_tir.tensor_intrin` in every worker
(30-50 s on these machines, beyond its 30 s timeout): `build_plain` calls the plain TIR
build instead. `export_so` links a shared library (as the target's back end does), which
both the local runner and an RPC server (`python -m tvm.exec.rpc_server`) load.
"""
from __future__ import annotations

import functools


def build_plain(mod, target, _params=None):
    """MetaSchedule f_build: the plain TIR build, no tensor intrinsics import."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    funcs = {}
    for gv, f in mod.functions.items():
        if f.attrs is None or "global_symbol" not in f.attrs:
            f = f.with_attr("global_symbol", gv.name_hint)
        funcs[gv] = f
    return tvm.tirx.build(tvm.IRModule(funcs), target=target)


def export_so(rt_mod, backend) -> str:
    """MetaSchedule f_export: a .so in a fresh temporary directory, linked as the target's
    back end links its artifacts (nrqc.backends)."""
    import os
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="nrqc-ms-"), "tvm_tmp_mod.so")
    backend.export_library(rt_mod, path)
    return path


def make_builder(target, timeout_sec: float = 120.0, max_workers: int | None = None):
    from tvm.s_tir import meta_schedule as ms

    from nrqc.backends import backend_for

    return ms.builder.LocalBuilder(
        f_build=build_plain,
        f_export=functools.partial(export_so, backend=backend_for(target)),
        timeout_sec=timeout_sec,
        max_workers=max_workers or 1,
    )


def evaluator_config(number: int = 3, repeat: int = 3, min_repeat_ms: int = 40):
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.EvaluatorConfig(number=number, repeat=repeat, min_repeat_ms=min_repeat_ms,
                                     enable_cpu_cache_flush=False)


def make_local_runner(timeout_sec: float = 60.0):
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.LocalRunner(timeout_sec=timeout_sec, evaluator_config=evaluator_config())


def tracker_devices(host: str, port: int, key: str) -> int:
    """How many servers with this key the tracker knows (free + busy)."""
    from tvm import rpc

    summary = rpc.connect_tracker(host, port).summary()
    n = 0
    for server in summary.get("server_info", []):
        k = str(server.get("key", ""))
        # server keys look like "server:KEY" (or "KEY" on older trackers)
        if k.split(":", 1)[-1] == key or k == key:
            n += 1
    if n == 0:
        q = summary.get("queue_info", {}).get(key, {})
        n = int(q.get("free", 0)) + int(q.get("pending", 0))
    return n


def make_rpc_runner(tracker: str, key: str, timeout_sec: float = 120.0, devices: int | None = None):
    """An RPCRunner measuring on every device registered under `key`, in parallel."""
    from tvm.s_tir import meta_schedule as ms

    host, _, port = tracker.rpartition(":")
    if not host or not port.isdigit():
        from nrqc.errors import NrqcError

        raise NrqcError(f"--rpc-tracker must be HOST:PORT, got '{tracker}'")
    n = devices if devices is not None else tracker_devices(host, int(port), key)
    if n == 0:
        from nrqc.errors import NrqcError

        raise NrqcError(f"the RPC tracker {tracker} has no device registered with key '{key}'")
    cfg = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=key,
                              session_timeout_sec=int(timeout_sec))
    return ms.runner.RPCRunner(rpc_config=cfg, evaluator_config=evaluator_config(), max_workers=n), n
