"""Float vs BAM with a float first layer vs all-integer BAM, N seeds per task, one corpus per
task, 95 % bootstrap intervals (issue 15 item 4; issue 20).

One command reproduces the table of docs/training.md (issue 15 item 4):

    python bench/bench_bam_vs_float.py --tasks quality,vad --samples quality=2000,vad=3000 \\
        --epochs quality=15,vad=60 --seeds 3 --out /tmp/bvf15 --json /tmp/bvf15.json

and the reduced size of the figures labelled "reduced" in docs/training.md (5.7 min of
CPU; 38 min wall on 2 cores shared with other jobs at load 9-14):

    nice python bench/bench_bam_vs_float.py --tasks vad,quality --samples quality=120,vad=400 \\
        --epochs quality=5,vad=20 --seeds 3 --out /tmp/bvf15r --json /tmp/bvf15r.json

Options: [--variants float,bam-float-first,bam] [--data TASK=DIR,...] [--bam-recipe
scratch|warm] [--lr-schedule constant|cosine].  `--samples`/`--epochs` take one number
for every task or TASK=N pairs.

Per task and seed k: `nrqc train TASK --variant float --seed k` into OUT/TASK/float/seed<k>
(the first float run synthesizes the corpus, or --data), then on the same corpus `--variant
bam --first-layer float` (bam-float-first: today's float first layer on float features)
and `--variant bam` (the default all-integer first layer: int8 input and weights) into
OUT/TASK/<variant>/seed<k>; `--bam-recipe warm` starts every bam run of seed k from float
seed k's checkpoint.  Runs resume, so a rerun only evaluates.  Printed (and --json): each
run's test metrics with intervals, mean ± std over seeds, and paired bootstraps (the metric
averaged over seeds, both models resampled on the same test examples) of float − each bam
variant and of bam-float-first − bam (what the int8 first layer costs), for quality
Pearson/Spearman/MSE and VAD frame EER/AUC (anti-spoofing EER/AUC on request).  Issue 15's
goal: the all-integer BAM within 0.02 Pearson and 0.5 pt EER of float.
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
# variant name -> (zoo variant, --first-layer)
VARIANTS = {"float": ("float", None), "bam-float-first": ("bam", "float"), "bam": ("bam", "int8")}
TITLES = {"float": "float", "bam-float-first": "bam, float first layer", "bam": "bam, all-integer"}
# Issue 15's goal for the all-integer model against float: (metric, largest allowed loss).
GOAL = {"quality": ("pearson", 0.02), "vad": ("eer", 0.005)}


def _fmt(v: float, key: str) -> str:
    return f"{100 * v:.2f} %" if key == "eer" else f"{v:.3f}"


def _per_task(text: str | None, tasks: list[str], kind=int) -> dict:
    """'800' -> the same for every task; 'quality=800,vad=3000' -> per task (others None)."""
    if text is None:
        return {t: None for t in tasks}
    if "=" not in text:
        return {t: kind(text) for t in tasks}
    pairs = dict(p.split("=", 1) for p in text.split(","))
    unknown = set(pairs) - set(HEADLINE)
    if unknown:
        raise SystemExit(f"unknown task(s) {', '.join(sorted(unknown))} in '{text}'")
    return {t: (kind(pairs[t]) if t in pairs else None) for t in tasks}


def run_task(task: str, variants: list[str], seeds: int, out: Path, samples, epochs, data, recipe, lr_schedule) -> dict:
    runs = {v: [] for v in variants}
    t0 = time.time()
    for seed in range(seeds):
        common = dict(epochs=epochs, seed=seed, lr_schedule=lr_schedule)
        fdir = out / "float" / f"seed{seed}"
        for v in variants:
            zoo_variant, first = VARIANTS[v]
            if v == "float":
                cfg = TrainConfig(task, "float", samples=samples if data is None else None, **common)
            else:
                init = str(fdir / "checkpoint.pt") if recipe == "warm" else None
                cfg = TrainConfig(task, zoo_variant, first_layer=first, init=init,
                                  samples=samples if data is None else None, **common)
            runs[v].append(train(cfg, out / v / f"seed{seed}", data, progress=False))
            if data is None:
                data = str(out / v / f"seed{seed}" / "data")  # every other run trains on this corpus
    keys = HEADLINE[task]
    preds = {v: [np.load(Path(r["bootstrap"]["predictions"]))["pred"] for r in rs] for v, rs in runs.items()}
    first = runs[variants[0]][0]
    label = np.load(Path(first["bootstrap"]["predictions"]))["label"]
    pairs = [(a, b) for a, b in (("float", "bam-float-first"), ("float", "bam"), ("bam-float-first", "bam"))
             if a in runs and b in runs]
    return {"task": task, "corpus": first["data"], "seeds": seeds, "bam_recipe": recipe, "lr_schedule": lr_schedule,
            "epochs": first["config"]["epochs"], "wall_s": round(time.time() - t0),
            "runs": {v: [{"seed": r["config"]["seed"], "best_epoch": r["best_epoch"], "epochs_run": r["epochs_run"],
                          "first_layer": r.get("first_layer"), "input_scale": (r.get("input_quant") or {}).get("scale"),
                          "test": {k: r["test"][k] for k in keys}, "test_ci": {k: r["test_ci"][k] for k in keys},
                          **({"binary_units": r["binary_units"]} if "binary_units" in r else {})}
                         for r in rs] for v, rs in runs.items()},
            "spread": {v: {k: spread([r["test"][k] for r in rs]) for k in keys} for v, rs in runs.items()},
            "paired": {f"{a} − {b}": {k: d for k, d in paired_task_differences(task, preds[a], preds[b], label).items()
                                       if k in keys} for a, b in pairs}}


def print_report(rep: dict) -> None:
    task, keys = rep["task"], HEADLINE[rep["task"]]
    print(f"\n{task}: {rep['corpus']['splits']} examples (train/val/test), {rep['seeds']} seed(s), "
          f"{rep['epochs']} epochs, bam {rep['bam_recipe']}, lr {rep['lr_schedule']}, {rep['wall_s']} s")
    for v, rs in rep["runs"].items():
        for r in rs:
            cells = ", ".join(f"{k} {_fmt(r['test'][k], k)} [{_fmt(r['test_ci'][k][0], k)}, {_fmt(r['test_ci'][k][1], k)}]"
                              for k in keys)
            print(f"  {TITLES[v]:<23} seed {r['seed']}: {cells} (best epoch {r['best_epoch']} of {r['epochs_run']})")
        print(f"  {TITLES[v]:<23} mean ± std: " + ", ".join(f"{k} {_fmt(s['mean'], k)} ± {_fmt(s['std'], k)}"
                                                          for k, s in rep["spread"][v].items()))
    for name, diffs in rep["paired"].items():
        print(f"  {name} (seed mean, paired bootstrap): " + ", ".join(
            f"{k} {_fmt(d['diff'], k)} [{_fmt(d['ci'][0], k)}, {_fmt(d['ci'][1], k)}]" for k, d in diffs.items()))
    goal = GOAL.get(task)
    d = rep["paired"].get("float − bam", {}).get(goal[0]) if goal else None
    if d is not None:
        # loss of the all-integer model: float − bam for Pearson, bam − float for EER
        loss, worst = (d["diff"], d["ci"][1]) if goal[0] != "eer" else (-d["diff"], -d["ci"][0])
        print(f"  goal (all-integer within {_fmt(goal[1], goal[0])} {goal[0]} of float): loss {_fmt(loss, goal[0])}, "
              f"upper end of its interval {_fmt(worst, goal[0])}: "
              f"{'met' if worst <= goal[1] else 'met by the point estimate only' if loss <= goal[1] else 'MISSED'}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", "--task", default="quality,vad", help="comma list of quality, vad, antispoof")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--samples", default=None, help="N, or TASK=N,... (examples to synthesize)")
    ap.add_argument("--epochs", default=None, help="N, or TASK=N,... (default: the task's)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data", default=None, help="DIR (one task) or TASK=DIR,...: an existing corpus")
    ap.add_argument("--bam-recipe", choices=["scratch", "warm"], default="scratch")
    ap.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    ap.add_argument("--out", required=True)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    tasks = [t for t in a.tasks.split(",") if t]
    variants = [v for v in a.variants.split(",") if v]
    bad = [t for t in tasks if t not in HEADLINE] + [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown task or variant: {', '.join(bad)}")
    samples, epochs = _per_task(a.samples, tasks), _per_task(a.epochs, tasks)
    data = _per_task(a.data, tasks, str) if a.data and "=" in a.data else {t: a.data for t in tasks}
    reports = {}
    for task in tasks:
        reports[task] = run_task(task, variants, a.seeds, Path(a.out) / task, samples[task], epochs[task],
                                 data[task], a.bam_recipe, a.lr_schedule)
        print_report(reports[task])
        if a.json:  # after every task, so a long run keeps what it has
            Path(a.json).write_text(json.dumps(reports, indent=1, default=float))
    return reports


if __name__ == "__main__":
    main()
