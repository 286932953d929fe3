"""Several seeds of one training run: the spread a single run cannot show.

`nrqc train ... --seeds N` trains seeds S, S+1, …, S+N−1 (S = --seed) into OUT/seed<k>,
all on one corpus (the first run's OUT/seed<S>/data, synthesized or read once), so only
the initialization and the batch order differ (the synthetic task draws its data from
the seed too).  OUT/metrics.json then holds every seed's
test metrics with their bootstrap intervals, and per metric the mean, the sample standard
deviation (ddof 1), the minimum and the maximum over seeds.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from nrqc.training.trainer import TrainConfig, _write_json, train


def spread(values) -> dict:
    """mean, sample std (0 for one value), min, max of a list of numbers."""
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def train_seeds(cfg: TrainConfig, seeds: int, out_dir: str | Path, data_dir: str | Path | None = None,
                resume: bool = True, progress: bool = True) -> dict:
    out = Path(out_dir)
    runs = []
    for k in range(seeds):
        seed = cfg.seed + k
        run_dir = out / f"seed{seed}"
        runs.append(train(replace(cfg, seed=seed, build_kwargs=dict(cfg.build_kwargs)), run_dir,
                          data_dir, resume=resume, progress=progress))
        # Every later seed trains on the first one's corpus: --data if it is (now) an nrqc
        # corpus, else what the first run synthesized or read into its cache.
        if k == 0 and cfg.task != "synthetic" and not (data_dir and (Path(data_dir) / "manifest.json").is_file()):
            data_dir = run_dir / "data"
    first = runs[0]
    result = {"task": first["task"], "arch": first["arch"], "variant": first["variant"],
              "seeds": [r["config"]["seed"] for r in runs], "data": first["data"],
              "per_seed": [{"seed": r["config"]["seed"], "run": str(out / f"seed{r['config']['seed']}"),
                            "best_epoch": r["best_epoch"], "epochs_run": r["epochs_run"],
                            "test": r["test"], "test_ci": r["test_ci"],
                            **({"binary_units": r["binary_units"]} if "binary_units" in r else {})}
                           for r in runs],
              "test": {k: spread([r["test"][k] for r in runs]) for k in first["test"]}}
    _write_json(out / "metrics.json", result)
    return result
