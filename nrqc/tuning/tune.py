"""`nrqc tune`: MetaSchedule over every kernel `nrqc compile` builds, XGBoost cost model.

Tasks are the fused PrimFuncs after the compile pipeline's fusion steps (so binary
operators from `nrqc.passes.binary_steps()` are tuned too), before any schedule: the same
functions the compile-time database step looks up. Each task is tuned in turn with its
share of the trial budget (by FLOPs x calls); after every measured batch the records are
in the JSON database and `progress.json` says how many trials each task has had, so an
interrupted run resumes where it stopped: finished tasks are skipped, a partly tuned task
gets its remaining trials (the evolutionary search restarts from the best records).

The shipped schedule of each task (`nrqc.targets.schedules`) is measured first and
committed as a record too, so the database's best for a task is never worse than what an
untuned compile gives.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import types
from pathlib import Path


@dataclasses.dataclass
class Task:
    name: str
    func: object  # PrimFunc (unscheduled)
    calls: int
    flops: float
    # nrqc's own kernels: their hand schedule (the baseline; it has no trace to record)
    shipped: object = None

    @property
    def weight(self) -> float:
        return self.calls * max(self.flops, 1.0)


def extract_tasks(model_path, target, shapes=None, log=print):
    """(tasks, LoadedModel) for a model: the unique fused kernels the compile will build."""
    import tvm_ffi
    from tvm import tirx

    from nrqc.layer_table import build_layer_table
    from nrqc.onnx_model import import_relax, load_model
    from nrqc.pipeline import LEGALIZE_FUSE, CompileContext, build_pipeline, run_pipeline
    from nrqc.targets.kernels.binary_ops import is_hand_written, kernel_workload
    from nrqc.tuning.database import workload_mod

    m = load_model(model_path, shapes or {})
    ctx = CompileContext(target=target, onnx_model=m.shaped, layers=build_layer_table(m.shaped),
                         options={"source_model": str(m.path)})
    mod = run_pipeline(import_relax(m), ctx, build_pipeline(through=LEGALIZE_FUSE))
    # the kernels the compile schedules: conv -> max-pool pairs merged first (schedule slot)
    from nrqc.passes.schedule_shipped import fuse_for_schedules
    from nrqc.pipeline import _main_calls

    with target.tvm():
        mod = fuse_for_schedules(mod, ctx)
    calls: dict[str, int] = {}
    for k, _ in _main_calls(mod):
        calls[k] = calls.get(k, 0) + 1
    tasks: list[Task] = []
    seen: dict[int, Task] = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc) or gv.name_hint not in calls:
            continue
        if is_hand_written(func):
            log(f"  {gv.name_hint}: written directly in TIR (AMX tiles), not a tuning task")
            continue
        hand = func if kernel_workload(func) is not None else None
        func = kernel_workload(func) or func
        h = tvm_ffi.structural_hash(workload_mod(func))
        if h in seen:
            seen[h].calls += calls[gv.name_hint]
            continue
        try:
            from tvm.s_tir.analysis import estimate_tir_flops

            flops = float(estimate_tir_flops(workload_mod(func)))
        except Exception:  # noqa: BLE001 - opaque kernels
            flops = 1.0
        t = Task(gv.name_hint, func, calls[gv.name_hint], flops, shipped=hand)
        seen[h] = t
        tasks.append(t)
    tasks.sort(key=lambda t: -t.weight)
    return tasks, m


def split_trials(tasks: list[Task], trials: int, min_per_task: int = 8) -> dict[str, int]:
    """Trials per task: proportional to FLOPs x calls, at least min_per_task (and never
    more trials than the total)."""
    if not tasks:
        return {}
    total_w = sum(t.weight for t in tasks)
    out = {}
    for t in tasks:
        share = trials * t.weight / total_w if total_w else trials / len(tasks)
        out[t.name] = int(max(min(min_per_task, trials), round(share)))
    return out


@contextlib.contextmanager
def _without_tensor_intrin_import():
    """TuneContext imports tvm.s_tir.tensor_intrin (30-100 s here) for tensorization rules
    we do not use (the explicit LLVM rules below name no intrinsics)."""
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        yield
        return
    sys.modules[name] = types.ModuleType(name)
    try:
        yield
    finally:
        if isinstance(sys.modules.get(name), types.ModuleType) and not hasattr(sys.modules[name], "__file__"):
            del sys.modules[name]


def _tune_context(task: Task, target, seed: int):
    from tvm.s_tir import meta_schedule as ms

    from nrqc.tuning.database import workload_mod

    space = ms.space_generator.PostOrderApply(
        sch_rules=ms.schedule_rule.ScheduleRule.create("llvm"),
        postprocs=ms.postproc.Postproc.create("llvm"),
        mutator_probs=ms.mutator.Mutator.create("llvm"),
    )
    with _without_tensor_intrin_import():
        return ms.TuneContext(mod=workload_mod(task.func), target=target.tvm(), space_generator=space,
                              search_strategy=ms.search_strategy.EvolutionarySearch(),
                              task_name=task.name, rand_state=seed, num_threads=1)


def _best_secs(db, task: Task) -> float | None:
    from nrqc.tuning.database import workload_mod

    wl_mod = workload_mod(task.func)
    if not db.has_workload(wl_mod):
        return None
    recs = db.get_top_k(db.commit_workload(wl_mod), 1)
    if not recs or not recs[0].run_secs:
        return None
    return float(sum(float(s) for s in recs[0].run_secs) / len(recs[0].run_secs))


def _shipped_schedule(task: Task, target):
    """The shipped rule's schedule of a task (an s_tir.Schedule), or None if no rule fits."""
    from tvm import s_tir

    from nrqc.targets.schedules import vector_spec
    from nrqc.targets.schedules.rules import RULES
    from nrqc.tuning.database import workload_mod

    if task.shipped is not None:
        return None  # nrqc's own kernel: its hand schedule is `task.shipped` itself
    wl_mod = workload_mod(task.func)
    spec = vector_spec(target)
    for _name, rule in RULES:
        sch = s_tir.Schedule(wl_mod)
        try:
            if rule(sch, spec):
                return sch
        except Exception:  # noqa: BLE001 - rule does not fit
            continue
    return None


def _measure_shipped(task: Task, target, db, builder, runner, log) -> float | None:
    """Measure the shipped schedule of a task and commit it as a tuning record."""
    from tvm.s_tir import meta_schedule as ms

    from nrqc.tuning.database import workload_mod

    wl_mod = workload_mod(task.func)
    sch = _shipped_schedule(task, target)
    if sch is None and task.shipped is None:
        return None
    tvm_target = target.tvm()
    shipped_mod = sch.mod if sch is not None else workload_mod(task.shipped)
    (b,) = builder.build([ms.builder.BuilderInput(shipped_mod, tvm_target)])
    if b.error_msg:
        log(f"  shipped schedule of {task.name} failed to build: {b.error_msg.splitlines()[-1]}")
        return None
    args_info = ms.arg_info.ArgInfo.from_prim_func(shipped_mod["main"])
    (fut,) = runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", args_info)])
    res = fut.result()
    if res.error_msg:
        log(f"  shipped schedule of {task.name} failed to run: {res.error_msg.splitlines()[-1]}")
        return None
    secs = [float(s) for s in res.run_secs]
    if sch is None:  # a hand schedule has no trace: measured as the baseline, not recorded
        return sum(secs) / len(secs)
    wl = db.commit_workload(wl_mod)
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, wl, secs, tvm_target,
                                                     ms.arg_info.ArgInfo.from_prim_func(wl_mod["main"])))
    return sum(secs) / len(secs)


def choose_verified(medians: dict, shipped, margin: float):
    """The key of the fastest median; the shipped one unless another beats it by `margin`."""
    best = min(medians, key=medians.get)
    if shipped is not None and shipped in medians and best != shipped and medians[best] >= margin * medians[shipped]:
        return shipped
    return best


def _verify_task(task: Task, target, db, selected, builder, runner, log, *, top_k: int = 3, rounds: int = 5,
                 margin: float = 0.98) -> dict:
    """Re-measure the shipped schedule against the best `top_k` records, interleaved over
    `rounds` rounds, and commit the winner (by median) to the `selected` database.

    A tuning record's time is one measurement taken while the search ran; on a shared
    machine a burst of load inflates some and flatters others (a shipped conv2+pool of
    DNSMOS once measured 10.7 ms in the search, 4.8 ms in the model), so the database's
    top-1 alone picks slower kernels. A candidate replaces the shipped schedule only if its
    median is below `margin` x the shipped median."""
    import statistics

    import tvm_ffi
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from nrqc.tuning.database import workload_mod

    wl_mod = workload_mod(task.func)
    tvm_target = target.tvm()
    cands: list[tuple[str, object]] = []  # (label, trace)
    shipped = _shipped_schedule(task, target)
    if shipped is not None:
        cands.append(("shipped", shipped.trace))
    if db.has_workload(wl_mod):
        for i, rec in enumerate(db.get_top_k(db.commit_workload(wl_mod), top_k + 1)):
            cands.append((f"record {i + 1}", rec.trace))
    mods, labels, traces = [], [], []
    if task.shipped is not None:  # a hand schedule: compared as built, no trace
        mods.append(workload_mod(task.shipped))
        labels.append("shipped")
        traces.append(None)
    for label, trace in cands:
        sch = s_tir.Schedule(wl_mod)
        try:
            trace.apply_to_schedule(sch, remove_postproc=False)
        except Exception:  # noqa: BLE001 - a record that no longer replays
            continue
        if any(tvm_ffi.structural_equal(sch.mod, m) for m in mods):  # the shipped record itself
            continue
        mods.append(sch.mod)
        labels.append(label)
        traces.append(sch.trace)
        if len(mods) > top_k:
            break
    if not mods:
        return {"choice": None}
    built = builder.build([ms.builder.BuilderInput(m, tvm_target) for m in mods])
    ok = [i for i, b in enumerate(built) if not b.error_msg]
    times: dict[int, list[float]] = {i: [] for i in ok}
    args_info = ms.arg_info.ArgInfo.from_prim_func(wl_mod["main"])
    for _ in range(rounds):
        futs = runner.run([ms.runner.RunnerInput(built[i].artifact_path, "cpu", args_info) for i in ok])
        for i, fut in zip(ok, futs):
            res = fut.result()
            if res.error_msg is None and res.run_secs:
                times[i].append(sum(float(x) for x in res.run_secs) / len(res.run_secs))
    med = {i: statistics.median(t) for i, t in times.items() if t}
    if not med:
        return {"choice": None}
    ship = next((i for i in med if labels[i] == "shipped"), None)
    best = choose_verified(med, ship, margin)
    if traces[best] is not None:  # a kept hand schedule needs no record: compile builds it by default
        wl = selected.commit_workload(wl_mod)
        selected.commit_tuning_record(ms.database.TuningRecord(traces[best], wl, [med[best]], tvm_target,
                                                               args_info))
    out = {"choice": labels[best], "ms": med[best] * 1e3,
           "shipped_ms": None if ship is None else med[ship] * 1e3,
           "candidates_ms": {labels[i]: round(v * 1e3, 4) for i, v in med.items()}, "rounds": rounds}
    log(f"    verified ({rounds} interleaved rounds, medians): "
        + ", ".join(f"{labels[i]} {v * 1e3:.3f} ms" for i, v in sorted(med.items(), key=lambda kv: kv[1]))
        + f" -> {labels[best]}")
    return out


def _progress_callback(state: dict, log):
    from tvm.s_tir import meta_schedule as ms
    from tvm.ir.utils import derived_object

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            ok = []
            for r in runner_results:
                if r.error_msg is None and r.run_secs:
                    ok.append(sum(float(s) for s in r.run_secs) / len(r.run_secs))
            state["trials_task"] += len(runner_results)
            state["trials_all"] += len(runner_results)
            if ok:
                best = min(ok)
                if state["best"] is None or best < state["best"]:
                    state["best"] = best
            state["save"]()
            elapsed = time.perf_counter() - state["t0"]
            done_here = state["trials_all"] - state["trials_at_start"]
            left = state["trials_planned"] - state["trials_all"]
            eta = elapsed / done_here * left if done_here else float("nan")
            if state.get("deadline") is not None:  # --minutes: the clock ends the run first
                eta = min(eta, max(state["deadline"] - time.perf_counter(), 0.0))
            best = state["best"]
            # One live line on a terminal; in a log about ten lines for the whole run
            # (nrqc.progress), not two per measured batch.
            state["bar"].update(len(runner_results), note=(
                f"[{state['task_index']}/{state['n_tasks']} tasks] {state['task']}: "
                f"{state['trials_task']}/{state['budget']} trials, "
                + (f"best {best * 1e3:.3f} ms" if best is not None else "no valid trial yet")
                + f"; {elapsed:.0f} s elapsed, ~{eta:.0f} s left"))

    return Progress()


class _TimeBudget:
    """`--minutes`: shares the wall clock among tasks by their trial shares and predicts
    from measured batch times whether the next batch still fits, keeping back the time the
    remaining tasks need outside the search (baseline measurement and verification, as
    measured so far)."""

    def __init__(self, minutes: float):
        self.end = time.perf_counter() + 60.0 * minutes
        self.fixed: list[float] = []  # seconds per task outside the search
        self.rate: dict[str, tuple[float, int]] = {}  # task -> (search seconds, trials)

    def reserve(self, tasks_left: int) -> float:
        per_task = sum(self.fixed) / len(self.fixed) if self.fixed else 45.0
        return per_task * tasks_left

    def task_end(self, remaining: int, later: int, tasks_left: int) -> float:
        now = time.perf_counter()
        return now + max(self.end - now - self.reserve(tasks_left), 0.0) * remaining / max(remaining + later, 1)

    def _per_trial(self, task: str) -> float:
        secs, n = self.rate.get(task, (0.0, 0))
        if n:
            return secs / n
        tot = [v for v in self.rate.values() if v[1]]
        return sum(v[0] for v in tot) / sum(v[1] for v in tot) if tot else 0.0

    def batch_fits(self, task: str, n: int, task_end: float, tasks_left: int) -> bool:
        """A task's first batch may use any search time left overall; later ones its share."""
        limit = task_end if self.rate.get(task, (0.0, 0))[1] else self.end - self.reserve(tasks_left)
        return time.perf_counter() + self._per_trial(task) * n <= limit

    def record_batch(self, task: str, secs: float, trials: int) -> None:
        s0, n0 = self.rate.get(task, (0.0, 0))
        self.rate[task] = (s0 + secs, n0 + trials)


def tune_model(model_path, target, trials: int, db_dir, *, shapes=None, rpc_tracker=None, device_key=None,
               num_trials_per_iter: int = 16, min_trials_per_task: int = 8, seed: int = 0, log=print,
               only_tasks: list[str] | None = None, minutes: float | None = None) -> dict:
    """Tune every task of a model; returns the summary written to progress.json.

    With `minutes`, the run ends within that wall-clock budget: each task searches in
    batches until its share of the time left (by its trial share) is spent, and the
    re-measurement of the winners is reserved time at the end of each task."""
    from tvm.s_tir import meta_schedule as ms

    from nrqc.tuning.build import make_builder, make_local_runner, make_rpc_runner
    from nrqc.tuning.database import (open_for_target, open_selected, read_progress, target_dir,
                                      write_progress)

    t_start = time.perf_counter()
    tasks, m = extract_tasks(model_path, target, shapes, log=log)
    if only_tasks:
        tasks = [t for t in tasks if t.name in only_tasks]
    db, why = open_for_target(db_dir, target, create=True)
    if db is None:
        from nrqc.errors import NrqcError

        raise NrqcError(f"cannot use database {db_dir}: {why}")
    sub = target_dir(db_dir, target)
    selected = open_selected(sub, create=True)
    progress = read_progress(sub)
    progress.setdefault("tasks", {})
    progress["model"] = str(Path(model_path).resolve())
    progress["target"] = target.name
    budgets = split_trials(tasks, trials, min_trials_per_task)
    from nrqc.tuning.emulated import emulated_cpu, make_emulated_runner

    if not target.backend.runs_on_host and not rpc_tracker and emulated_cpu(target) is None:
        from nrqc.errors import NrqcError

        raise NrqcError(f"{target.name} kernels cannot run here and it has no emulated board: tune through "
                        f"boards with --rpc-tracker HOST:PORT --device-key KEY")
    builder = make_builder(target)
    rounds = 5  # timed measurements vary: the verification re-measures, interleaved
    if rpc_tracker:
        runner, n_dev = make_rpc_runner(rpc_tracker, device_key or target.name)
        log(f"measuring on {n_dev} device(s) with key '{device_key or target.name}' via tracker {rpc_tracker}")
        progress["measure"] = f"board latency via tracker {rpc_tracker}"
    elif target.backend.runs_on_host:
        runner = make_local_runner()
        log("measuring on this host (local runner)")
        progress["measure"] = "latency on this host"
    else:
        runner, measure = make_emulated_runner(target, log=log)
        rounds = 1  # deterministic: a second measurement gives the same number
        log(f"no board: measuring on the emulated board by {measure} (deterministic, one measurement each)")
        progress["measure"] = measure
    log(f"{len(tasks)} tasks, {trials} trials ({', '.join(f'{t.name}: {budgets[t.name]}' for t in tasks)}); "
        f"database {sub}")

    done_before = sum(min(progress["tasks"].get(t.name, {}).get("trials", 0), budgets[t.name]) for t in tasks)
    planned = sum(budgets.values())
    state = {"t0": time.perf_counter(), "trials_all": done_before, "trials_at_start": done_before,
             "trials_planned": planned, "n_tasks": len(tasks)}

    def save():
        rec = progress["tasks"].setdefault(state["task"], {})
        rec["trials"] = state["trials_task"]
        rec["budget"] = state["budget"]
        rec["best_ms"] = None if state["best"] is None else state["best"] * 1e3
        write_progress(sub, progress)

    state["save"] = save
    from nrqc.progress import Progress

    state["bar"] = bar = Progress("trials", planned)
    bar.n = done_before  # a resumed run continues its count
    log = bar.around(log)
    clock = None if minutes is None else _TimeBudget(minutes)
    state["deadline"] = None if clock is None else clock.end
    short_of_time: list[str] = []
    cost_model = ms.cost_model.XGBModel(num_tuning_cores=1)
    for i, task in enumerate(tasks, 1):
        rec = progress["tasks"].setdefault(task.name, {})
        rec.update({"calls": task.calls, "flops": task.flops})
        budget = budgets[task.name]
        have = int(rec.get("trials", 0))
        state.update(task=task.name, task_index=i, budget=budget, trials_task=have)
        t_fixed = time.perf_counter()
        if "shipped_ms" not in rec:
            shipped = _measure_shipped(task, target, db, builder, runner, log)
            rec["shipped_ms"] = None if shipped is None else shipped * 1e3
            write_progress(sub, progress)
        best = _best_secs(db, task)
        state["best"] = best
        if have >= budget:
            log(f"  [{i}/{len(tasks)} tasks] {task.name}: done before ({have} trials, best "
                f"{best * 1e3:.3f} ms), skipped" if best else f"  [{i}/{len(tasks)}] {task.name}: done before, skipped")
            if not rec.get("verified"):
                rec["verified"] = _verify_task(task, target, db, selected, builder, runner, log, rounds=rounds)
                write_progress(sub, progress)
            continue
        remaining = budget - have
        t_fixed = time.perf_counter() - t_fixed
        task_end = None
        if clock is not None:
            later = sum(max(budgets[t.name] - int(progress["tasks"].get(t.name, {}).get("trials", 0)), 0)
                        for t in tasks[i:])
            task_end = clock.task_end(remaining, later, len(tasks) - i + 1)
        log(f"  [{i}/{len(tasks)} tasks] {task.name}: {task.calls} call(s), {task.flops / 1e6:.1f} MFLOP, "
            f"tuning {remaining} trials (shipped schedule: "
            f"{rec['shipped_ms']:.3f} ms)" if rec.get("shipped_ms") else
            f"  [{i}/{len(tasks)} tasks] {task.name}: tuning {remaining} trials")
        if task_end is not None:
            log(f"    time share: {max(task_end - time.perf_counter(), 0):.0f} s of search")
        ctx = _tune_context(task, target, seed + i)
        exhausted = False
        while state["trials_task"] < budget:
            # under a time budget, one batch per call so the clock is checked between batches
            n = budget - state["trials_task"] if clock is None else min(num_trials_per_iter,
                                                                         budget - state["trials_task"])
            if clock is not None and not clock.batch_fits(task.name, n, task_end, len(tasks) - i + 1):
                short_of_time.append(task.name)
                log(f"    time share spent after {state['trials_task']}/{budget} trials")
                break
            before, t_batch = state["trials_task"], time.perf_counter()
            ms.tune.tune_tasks(
                tasks=[ctx], task_weights=[1.0], work_dir=str(sub / "logs"),
                max_trials_global=n, max_trials_per_task=n, num_trials_per_iter=min(num_trials_per_iter, n),
                builder=builder, runner=runner, database=db, cost_model=cost_model,
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                   _progress_callback(state, log)],
                task_scheduler="round-robin",
            )
            if clock is not None:
                clock.record_batch(task.name, time.perf_counter() - t_batch, state["trials_task"] - before)
            if state["trials_task"] == before or clock is None:
                exhausted = state["trials_task"] < budget
                break
        # Search space exhausted before the budget: the task counts as done.
        if exhausted or task.name not in short_of_time:
            rec["trials"] = max(int(progress["tasks"][task.name].get("trials", 0)), budget)
        best = _best_secs(db, task)
        rec["best_ms"] = None if best is None else best * 1e3
        t_verify = time.perf_counter()
        rec["verified"] = _verify_task(task, target, db, selected, builder, runner, log, rounds=rounds)
        write_progress(sub, progress)
        if clock is not None:
            clock.fixed.append(t_fixed + time.perf_counter() - t_verify)
    bar.close(f"trials: {state['trials_all']}/{planned} in {time.perf_counter() - state['t0']:.0f} s")
    progress["tuning_seconds_total"] = round(progress.get("tuning_seconds_total", 0.0)
                                             + time.perf_counter() - t_start, 1)
    write_progress(sub, progress)
    ver = [progress["tasks"][t.name].get("verified") or {} for t in tasks]
    tot_sel = sum((v.get("ms") or 0.0) * t.calls for v, t in zip(ver, tasks))
    tot_ship = sum((v.get("shipped_ms") or v.get("ms") or 0.0) * t.calls for v, t in zip(ver, tasks))
    n_tuned = sum(1 for v in ver if v.get("choice") not in (None, "shipped"))
    if short_of_time:
        progress["short_of_time"] = short_of_time
        write_progress(sub, progress)
        log(f"time budget of {minutes:g} min: {len(short_of_time)} task(s) searched fewer trials than planned "
            f"({', '.join(short_of_time)}); rerun to resume them")
    log(f"tuned {len(tasks)} tasks: {n_tuned} use a tuned schedule, the others keep the shipped one; "
        f"sum of verified kernel times {tot_sel:.3f} ms (shipped schedules {tot_ship:.3f} ms); "
        f"{progress['tuning_seconds_total']:.0f} s tuning in total; database {sub}")
    return progress
