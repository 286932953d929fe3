"""`nrqc tune`: MetaSchedule-tune every kernel of a model into a database for `nrqc compile --db`."""
from __future__ import annotations

import click


@click.command("tune")
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--target", "-t", "target", default="x86", show_default=True, help="Target name (see `nrqc targets`).")
@click.option("--trials", default=256, show_default=True, type=click.IntRange(1),
              help="Measured trials in total, shared among tasks by FLOPs (each task gets at least --min-trials).")
@click.option("--min-trials", default=8, show_default=True, type=click.IntRange(1), help="Trials per task at least.")
@click.option("--db", required=True, type=click.Path(), help="Database directory (created; a rerun resumes it).")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=D1,D2,...", help="Static shape of an input.")
@click.option("--rpc-tracker", default=None, metavar="HOST:PORT", help="Measure on boards registered with this tracker.")
@click.option("--device-key", default=None, metavar="KEY", help="Tracker key of the boards [default: target name].")
@click.option("--trials-per-batch", default=16, show_default=True, type=click.IntRange(1),
              help="Candidates measured per search round.")
@click.option("--minutes", default=None, type=click.FloatRange(min=0.5),
              help="Wall-clock budget: stop each task's search when its share of the time is spent.")
@click.option("--seed", default=0, show_default=True)
def command(model, target, trials, min_trials, db, shapes, rpc_tracker, device_key, trials_per_batch, minutes, seed):
    """Tune MODEL (ONNX) for a target with MetaSchedule (XGBoost cost model); a Cortex-M target
    searches nrqc's kernel knobs by QEMU instruction count instead. A Pi target without
    --rpc-tracker measures candidates on the emulated board (estimated cycles).

    Progress (tasks done, best latency so far, time left) is printed after every measured
    batch; stop with Ctrl-C at any time and rerun the same command to resume."""
    from nrqc.onnx_model import parse_shape_options
    from nrqc.targets import get_target
    from nrqc.tuning.tune import tune_model

    desc = get_target(target)
    if device_key and not rpc_tracker:
        raise click.UsageError("--device-key needs --rpc-tracker")
    from nrqc.targets import BareMetalC

    if isinstance(desc.backend, BareMetalC):  # microcontroller: nrqc's kernel knobs, QEMU instruction count
        if rpc_tracker:
            raise click.UsageError(f"--rpc-tracker: {desc.name} is bare metal; its candidates run in QEMU")
        from nrqc.tuning.cortex_m_tune import tune_cortex_m

        tune_cortex_m(model, desc, db, shapes=parse_shape_options(shapes), log=lambda msg: click.echo(msg, err=True))
        return
    try:
        tune_model(model, desc, trials, db, shapes=parse_shape_options(shapes), rpc_tracker=rpc_tracker,
                   device_key=device_key, num_trials_per_iter=trials_per_batch, min_trials_per_task=min_trials,
                   seed=seed, minutes=minutes, log=lambda msg: click.echo(msg, err=True))
    except KeyboardInterrupt:
        click.echo(f"nrqc tune: stopped; the records measured so far are in {db}: rerun the same command "
                   f"to resume", err=True)
        raise SystemExit(130) from None
