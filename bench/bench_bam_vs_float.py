"""Binary activation maps + int8 weights (bam) against the float model of the same
architecture, N seeds, one corpus, 95 % bootstrap intervals (issue 20).

    python bench/bench_bam_vs_float.py --task quality --samples 800 --epochs 12 --seeds 3 --out /tmp/bvf_q
    python bench/bench_bam_vs_float.py --task vad --samples 2000 --seeds 3 --out /tmp/bvf_v
    python bench/bench_bam_vs_float.py --task antispoof --samples 2000 --seeds 3 --out /tmp/bvf_a
    [--data DIR] [--bam-recipe scratch|warm] [--lr-schedule constant|cosine] [--json out.json]

For each seed k: `nrqc train TASK --variant float --seed k` into OUT/float/seed<k>, then
`--variant bam --seed k` into OUT/bam/seed<k> on the same corpus (the first float run
synthesizes it, or --data); `--bam-recipe warm` starts bam seed k from float seed k's
checkpoint (`--init`).  Runs resume, so a rerun only evaluates.  Printed (and --json):
each run's test metrics with intervals, mean ± std over seeds, and the paired bootstrap of
float − bam (the metric averaged over seeds, both models resampled on the same test
examples) for the task's headline metrics: quality Pearson; VAD frame EER and AUC;
anti-spoofing EER.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from nrqc.training.bootstrap import paired_task_differences
from nrqc.training.seeds import spread
from nrqc.training.trainer import TrainConfig, train

HEADLINE = {"quality": ("pearson", "spearman", "mse"), "vad": ("eer", "auc"), "antispoof": ("eer", "auc")}


def _fmt(v: float, key: str) -> str:
    return f"{100 * v:.2f} %" if key == "eer" else f"{v:.3f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=sorted(HEADLINE), default="quality")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data", default=None)
    ap.add_argument("--bam-recipe", choices=["scratch", "warm"], default="scratch")
    ap.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    ap.add_argument("--out", required=True)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    out = Path(a.out)
    data = a.data
    runs = {"float": [], "bam": []}
    t0 = time.time()
    for seed in range(a.seeds):
        fdir = out / "float" / f"seed{seed}"
        common = dict(epochs=a.epochs, seed=seed, lr_schedule=a.lr_schedule)
        runs["float"].append(train(TrainConfig(a.task, "float", samples=a.samples if data is None else None, **common),
                                   fdir, data, progress=False))
        if data is None:
            data = str(fdir / "data")  # every other run trains on this corpus
        init = str(fdir / "checkpoint.pt") if a.bam_recipe == "warm" else None
        runs["bam"].append(train(TrainConfig(a.task, "bam", init=init, **common), out / "bam" / f"seed{seed}",
                                 data, progress=False))
    keys = HEADLINE[a.task]
    preds = {v: [np.load(Path(r["bootstrap"]["predictions"]))["pred"] for r in rs] for v, rs in runs.items()}
    label = np.load(Path(runs["float"][0]["bootstrap"]["predictions"]))["label"]
    report = {"task": a.task, "corpus": runs["float"][0]["data"], "seeds": a.seeds, "bam_recipe": a.bam_recipe,
              "lr_schedule": a.lr_schedule, "epochs": runs["float"][0]["config"]["epochs"],
              "wall_s": round(time.time() - t0),
              "runs": {v: [{"seed": r["config"]["seed"], "best_epoch": r["best_epoch"], "epochs_run": r["epochs_run"],
                            "test": {k: r["test"][k] for k in keys}, "test_ci": {k: r["test_ci"][k] for k in keys},
                            **({"binary_units": r["binary_units"]} if "binary_units" in r else {})}
                           for r in rs] for v, rs in runs.items()},
              "spread": {v: {k: spread([r["test"][k] for r in rs]) for k in keys} for v, rs in runs.items()},
              "float_minus_bam": {k: d for k, d in paired_task_differences(a.task, preds["float"], preds["bam"],
                                                                           label).items() if k in keys}}
    print(f"{a.task}: {report['corpus']['splits']} examples (train/val/test), {a.seeds} seed(s), "
          f"{report['epochs']} epochs, bam {a.bam_recipe}, lr {a.lr_schedule}, {report['wall_s']} s")
    for v, rs in report["runs"].items():
        for r in rs:
            cells = ", ".join(f"{k} {_fmt(r['test'][k], k)} [{_fmt(r['test_ci'][k][0], k)}, {_fmt(r['test_ci'][k][1], k)}]"
                              for k in keys)
            print(f"  {v:5s} seed {r['seed']}: {cells} (best epoch {r['best_epoch']} of {r['epochs_run']})")
        print(f"  {v:5s} mean ± std: " + ", ".join(f"{k} {_fmt(s['mean'], k)} ± {_fmt(s['std'], k)}"
                                                  for k, s in report["spread"][v].items()))
    print("  float − bam (seed mean, paired bootstrap): " + ", ".join(
        f"{k} {_fmt(d['diff'], k)} [{_fmt(d['ci'][0], k)}, {_fmt(d['ci'][1], k)}]"
        for k, d in report["float_minus_bam"].items()))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1, default=float))
    return report


if __name__ == "__main__":
    main()
