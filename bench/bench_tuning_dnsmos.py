"""DNSMOS model_v8, batch 1, one thread: nrqc tuned / nrqc untuned / plain TVM / onnxruntime.

    python bench/bench_tuning_dnsmos.py --db DIR            # DIR from `nrqc tune ... --db DIR`
    python bench/bench_tuning_dnsmos.py --tune-trials 200   # tune first (into --db), timed

All four run in the same process, interleaved round by round (the machine is shared and
noisy), and each figure is the median over rounds of the median of a round. "untuned" is
shipped schedules only (NRQC_NO_DEFAULT_DB=1: not even the default database); "tuned" is
`nrqc compile --db DIR`. The tuning time is the total recorded in DIR's progress.json
(all runs of `nrqc tune` into DIR, resumed or not).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["TVM_NUM_THREADS"] = "1"  # before the TVM runtime starts its thread pool
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
from nrqc.shared_data import dnsmos_model  # noqa: E402

MODEL = dnsmos_model()


def nrqc(*args, env=None):
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "nrqc", *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if p.returncode:
        sys.exit(f"nrqc {' '.join(map(str, args))} failed:\n{p.stderr[-3000:]}")
    return p, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(MODEL))
    ap.add_argument("--db", default=None, help="tuning database (default: a temporary one with --tune-trials)")
    ap.add_argument("--tune-trials", type=int, default=0, help="run `nrqc tune --trials N --db DB` first")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=5, help="runs per round")
    a = ap.parse_args()

    import numpy as np
    import onnxruntime as ort
    import tvm
    from tvm import relax

    work = Path(tempfile.mkdtemp(prefix="nrqc-bench-"))
    db = Path(a.db) if a.db else work / "db"
    if a.tune_trials:
        _, secs = nrqc("tune", a.model, "--trials", a.tune_trials, "--db", db, env={"TVM_NUM_THREADS": "1"})
        print(f"tuning: nrqc tune --trials {a.tune_trials}: {secs:.0f} s wall")
    tuned_seconds = None
    for prog in db.glob("*/progress.json"):
        tuned_seconds = json.loads(prog.read_text()).get("tuning_seconds_total")
    nrqc("compile", a.model, "-o", work / "untuned", env={"NRQC_NO_DEFAULT_DB": "1"})
    nrqc("compile", a.model, "-o", work / "default")
    have_tuned = db.is_dir()
    if have_tuned:
        nrqc("compile", a.model, "-o", work / "tuned", "--db", db)

    from nrqc.onnx_model import import_relax, load_model
    from nrqc.runtime import ArtifactSession
    from nrqc.targets import get_target

    m = load_model(a.model, {})
    x = np.random.default_rng(0).standard_normal(m.inputs[0].shape).astype(np.float32)
    name = m.inputs[0].name

    runners = {}
    for label, d in (("nrqc tuned", work / "tuned"), ("nrqc untuned (shipped schedules)", work / "untuned"),
                     ("nrqc default (shipped + default db)", work / "default")):
        if d.is_dir():
            s = ArtifactSession(d)
            args = s.to_device({name: x})
            runners[label] = (lambda s=s, args=args: s.vm["main"](*args))
    target = get_target("x86")
    t0 = time.perf_counter()
    ex = tvm.compile(import_relax(m), target=target.tvm())
    plain_build = time.perf_counter() - t0
    vm = relax.VirtualMachine(ex, tvm.cpu())
    xt = tvm.runtime.tensor(x, tvm.cpu())
    runners["plain TVM (tvm.compile, stock pipeline)"] = lambda: vm["main"](xt)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    runners["onnxruntime 1 thread"] = lambda: sess.run(None, {name: x})

    # plain TVM is ~50x slower: fewer runs so the benchmark ends
    per_round = {k: [] for k in runners}
    for f in runners.values():
        f()  # warm up
    for r in range(a.rounds):
        for k, f in runners.items():
            n = 1 if k.startswith("plain") and r % 3 else a.runs if not k.startswith("plain") else 2
            ts = []
            for _ in range(n):
                t = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t)
            per_round[k].append(statistics.median(ts))
    ort_ms = statistics.median(per_round["onnxruntime 1 thread"]) * 1e3
    print(f"\nDNSMOS model_v8 ({'x'.join(map(str, m.inputs[0].shape))}), batch 1, 1 thread, "
          f"{a.rounds} rounds x {a.runs} runs (median of round medians); host load {os.getloadavg()[0]:.1f}")
    print(f"{'':44s}{'ms':>10s}{'vs onnxruntime':>16s}")
    for k, v in per_round.items():
        ms = statistics.median(v) * 1e3
        print(f"{k:44s}{ms:10.2f}{ms / ort_ms:15.2f}x")
    print(f"tuning time (database {db}): "
          + (f"{tuned_seconds:.0f} s" if tuned_seconds is not None else "no tuning database"))
    print(f"plain TVM build: {plain_build:.1f} s")


if __name__ == "__main__":
    main()
