"""Measuring tuning candidates for a Pi without a Pi: the emulated board's cycle estimate.

A MetaSchedule runner (``EmulatedRunner``) for targets that have an emulated board
(``target.backend.emulator``) when no ``--rpc-tracker`` is given: each candidate's
cross-linked library is called once under ``qemu -cpu`` the target's core, and its cost is
the llvm-mca cycle estimate of the blocks it executed (``nrqc.emulator.kernel_count``)
divided by the target's clock (``clock_ghz``), recorded as the candidate's run time, so
the database has the same form a board-measured tune writes and ``nrqc compile --db``
applies it the same way. The estimate is deterministic: one measurement per candidate, and
the verification at the end of each task needs one round, not five.
"""
from __future__ import annotations

from nrqc.errors import NrqcError

MEASURE = ("estimated cycles (llvm-mca of the blocks one call executes on the emulated board, qemu -cpu {cpu}) "
           "/ {ghz:g} GHz")


def emulated_cpu(target) -> str | None:
    """The qemu core the target's emulated board runs, or None when it has no emulated board."""
    if target.backend.emulator is None or target.backend.runs_on_host:
        return None
    from nrqc.emulator.board import qemu_cpu_for

    try:
        return qemu_cpu_for(target.tvm_target)
    except NrqcError:
        return None


def make_emulated_runner(target, log=lambda m: None):
    """(runner, description of the measure) for a target with an emulated board."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner, RunnerFuture, RunnerResult

    from nrqc.emulator.kernel_count import count_kernels

    cpu = emulated_cpu(target)
    if cpu is None:
        raise NrqcError(f"{target.name} has no emulated board: tune through boards with --rpc-tracker HOST:PORT")
    ghz = float(target.figures["clock_ghz"].value)

    @derived_object
    class EmulatedRunner(PyRunner):
        def run(self, runner_inputs):
            libs = [str(r.artifact_path) for r in runner_inputs]
            args = [[(str(a.dtype), tuple(int(d) for d in a.shape)) for a in r.args_info] for r in runner_inputs]
            counted = count_kernels(libs, args, cpu, estimate_cycles=True, log=log)
            futures = []
            for c in counted:
                res = (RunnerResult(None, f"emulated run failed: {c}") if isinstance(c, str) else
                       RunnerResult([c["cycles"] / (ghz * 1e9)], None))
                futures.append(RunnerFuture(f_done=lambda: True, f_result=lambda res=res: res))
            return futures

    return EmulatedRunner(), MEASURE.format(cpu=cpu, ghz=ghz)
