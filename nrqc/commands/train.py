"""`nrqc train {quality,vad,antispoof,synthetic}`: train a zoo model, writing
OUT/checkpoint.pt (the model to export) and OUT/metrics.json."""
from __future__ import annotations

import click

TASKS = ("quality", "vad", "antispoof", "synthetic")


@click.command("train")
@click.argument("task", type=click.Choice(TASKS))
@click.option("--variant", type=click.Choice(["float", "bam", "reparam", "bam-reparam"]), default="bam",
              show_default=True, help="bam: binary activation maps + int8 weights; reparam: learned widths.")
@click.option("--arch", default=None,
              help="Model of the zoo (quality: bam4 [default] or dnsmos; vad: vad_tiny [default], vad_gru or vad_crnn; "
                   "antispoof: antispoof_cnn; synthetic: synthetic_mlp).")
@click.option("--complexity-weight", "alpha", type=float, default=None,
              help="α in task + α·MACs(K)/MACs(full) (reparam variants; default 0.05 for them).")
@click.option("--budget-macs", type=float, default=None, help="Hold MACs per input window under this budget instead.")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Epochs (default per task: a few minutes on 2 cores).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Corpus folder: an nrqc corpus, or a real corpus (MOS CSV / ASVspoof protocol / VAD labels). "
                   "An existing empty folder gets a synthesized corpus; a missing one is an error. "
                   "Default: synthesize one into OUT/data.")
@click.option("--samples", type=click.IntRange(8), default=None, help="How many examples to synthesize.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Run folder [runs/TASK].")
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option("--lr", type=float, default=None, help="Learning rate of the weights.")
@click.option("--lr-k", type=float, default=0.05, show_default=True, help="Learning rate of the widths K.")
@click.option("--patience", type=click.IntRange(1), default=5, show_default=True,
              help="Early stopping (quality): epochs without a better validation Pearson.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--seeds", type=click.IntRange(1), default=1, show_default=True,
              help="Train seeds SEED..SEED+N-1 on one corpus into OUT/seed<k>; OUT/metrics.json gets "
                   "mean and spread over them.")
@click.option("--init", "init", type=click.Path(dir_okay=False), default=None,
              help="Warm start: copy the weights of this checkpoint (same architecture, e.g. the float model "
                   "for a bam run) before training.")
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default="constant", show_default=True,
              help="Learning rate of the weights per epoch: constant, or cosine decay to 0 over --epochs.")
@click.option("--pooled-calibration", type=click.Choice(["median", "spread"]), default="median", show_default=True,
              help="Thresholds of the binary layer before the global max-pool: each channel's bit on for half "
                   "the clips, or for spread fractions with dead/saturated channels re-set after every epoch.")
@click.option("--first-layer", type=click.Choice(["int8", "float"]), default=None,
              help="First layer of the bam variants: int8 (int8 input features, calibrated per-tensor scale, and "
                   "int8 per-channel weights: an all-integer model) [default for bam, bam-reparam], or float "
                   "(float weights on float features).")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue OUT/last.pt if it exists.")
def command(task, variant, arch, alpha, budget_macs, epochs, data_dir, samples, out_dir, batch_size, lr, lr_k,
            patience, seed, seeds, init, lr_schedule, pooled_calibration, first_layer, resume):
    """Train a model of the zoo on TASK and report task metrics and complexity."""
    from nrqc.errors import NrqcError
    from nrqc.training.trainer import TrainConfig, train

    if alpha is not None and budget_macs is not None:
        raise NrqcError("give either --complexity-weight or --budget-macs, not both")
    reparam = variant.endswith("reparam")
    if (alpha or budget_macs is not None) and not reparam:
        raise NrqcError(f"--complexity-weight/--budget-macs need --variant reparam or bam-reparam, not '{variant}'")
    if alpha is None and budget_macs is None and reparam:
        alpha = 0.05
    if alpha is not None and alpha < 0:
        raise NrqcError("--complexity-weight must be >= 0")
    if arch is not None:
        from nrqc.models import ARCHS

        if arch not in ARCHS:
            raise NrqcError(f"--arch '{arch}' is not in the zoo ({', '.join(ARCHS)})")
    cfg = TrainConfig(task=task, variant=variant, arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, lr_k=lr_k,
                      complexity_weight=alpha or 0.0, budget_macs=budget_macs, patience=patience, seed=seed,
                      samples=samples, init=init, lr_schedule=lr_schedule,
                      pooled_calibration=pooled_calibration, first_layer=first_layer)
    out_dir = out_dir or f"runs/{task}"
    if seeds > 1:
        from nrqc.training.seeds import train_seeds

        s = train_seeds(cfg, seeds, out_dir, data_dir, resume=resume)
        for r in s["per_seed"]:
            click.echo(f"seed {r['seed']} ({r['run']}, checkpoint from epoch {r['best_epoch']}): "
                       f"{_with_intervals(r['test'], r['test_ci'])}")
        spread = " ".join(f"{k} {v['mean']:.4f} ± {v['std']:.4f} [{v['min']:.4f}, {v['max']:.4f}]"
                          for k, v in s["test"].items())
        click.echo(f"trained {task} ({s['arch']}, {variant}) with {seeds} seeds; test mean ± std [min, max]: {spread}")
        click.echo(f"  wrote {out_dir}/seed<k>/checkpoint.pt and {out_dir}/metrics.json")
        return
    r = train(cfg, out_dir, data_dir, resume=resume)
    c = r["complexity"]
    widths = " ".join(f"{k}={v}" for k, v in c["widths"].items())
    click.echo(f"trained {task} ({r['arch']}, {variant}) for {r['epochs_run']} epochs in {r['train_seconds']} s"
               f"{' (stopped early)' if r['stopped_early'] else ''}; checkpoint from epoch {r['best_epoch']}")
    b = r["bootstrap"]
    click.echo(f"  test ({b['examples']} {b['unit']}s, [95 % bootstrap interval]): {_with_intervals(r['test'], r['test_ci'])}")
    if "input_quant" in r:
        q = r["input_quant"]
        click.echo(f"  first layer int8: input int8, scale {q['scale']:.6g}, zero point 0 ({q['calibration']})")
    click.echo(f"  complexity: {c['macs']:,.0f} MACs per window (of {r['full_macs']:,.0f})"
               f"{', %.3f MFLOP/s' % c['mflops_per_s'] if 'mflops_per_s' in c else ''}, {c['params']:,.0f} params, "
               f"{c['bytes']:,.0f} bytes{', widths ' + widths if widths else ''}")
    if "binary_units" in r:
        click.echo("  binary units on validation (always on / always off): " + "; ".join(
            f"{k} {v['always_on']:.0%}/{v['always_off']:.0%}"
            + (f" (pooled bit constant-on {v['pooled_always_on']:.0%})" if "pooled_always_on" in v else "")
            for k, v in r["binary_units"].items()))
    click.echo(f"  wrote {out_dir}/checkpoint.pt and {out_dir}/metrics.json")


def _with_intervals(test: dict, ci: dict) -> str:
    return " ".join(f"{k} {v:.4f} [{ci[k][0]:.4f}, {ci[k][1]:.4f}]" for k, v in test.items())
