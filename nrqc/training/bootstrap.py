"""95 % percentile-bootstrap intervals for test metrics, and for the difference of two models.

The unit resampled is the test *example* (a clip; for VAD a window of frames, whose frames
are not independent): B resamples of the N examples with replacement, the metric on each,
and the 2.5 / 97.5 percentiles of the B values.  A paired difference resamples the same
examples for both models, so what the two share (the hard and the easy clips) cancels;
it is the interval to read when asking whether model A beats model B on one test set.
Resamples on which a metric is undefined (AUC/EER of a one-class resample) are dropped.
"""
from __future__ import annotations

import numpy as np

from nrqc.training.metrics import task_metrics

RESAMPLES = 1000
LEVEL = 0.95


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """[resamples, n] example indices drawn with replacement (fixed seed: reproducible)."""
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 examples, not {n}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """(lo, hi) percentiles of the defined (non-NaN) replicate values; NaN if none are."""
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_ci(metric, *arrays, resamples: int = RESAMPLES, level: float = LEVEL,
                 seed: int = 0) -> tuple[float, float, float]:
    """(metric on all examples, lo, hi); ``metric(*arrays)`` with every array indexed by
    example on axis 0."""
    arrays = [np.asarray(a) for a in arrays]
    point = float(metric(*arrays))
    reps = [metric(*(a[i] for a in arrays)) for i in resample_indices(len(arrays[0]), resamples, seed)]
    return (point, *percentile_interval(reps, level))


def _paired(pred_a, pred_b, y):
    pa, pb, yy = np.asarray(pred_a), np.asarray(pred_b), np.asarray(y)
    if not (len(pa) == len(pb) == len(yy)):
        raise ValueError(f"paired bootstrap needs the same examples: {len(pa)}, {len(pb)}, {len(yy)}")
    return pa, pb, yy


def paired_difference_ci(metric, pred_a, pred_b, y, resamples: int = RESAMPLES, level: float = LEVEL,
                         seed: int = 0) -> tuple[float, float, float]:
    """metric(A) − metric(B) on the same examples, with the interval of the difference."""
    pa, pb, yy = _paired(pred_a, pred_b, y)
    return bootstrap_ci(lambda a, b, t: metric(a, t) - metric(b, t), pa, pb, yy,
                        resamples=resamples, level=level, seed=seed)


def task_intervals(task: str, pred, y, resamples: int = RESAMPLES, level: float = LEVEL,
                   seed: int = 0) -> dict:
    """{metric: [lo, hi]} for every metric of TASK (one pass over the resamples); NaN
    intervals for a test set of one example (nothing to resample)."""
    pred, y = np.asarray(pred), np.asarray(y)
    if len(pred) < 2:
        return {k: [float("nan"), float("nan")] for k in task_metrics(task, pred, y)}
    reps: dict[str, list] = {}
    for i in resample_indices(len(pred), resamples, seed):
        for k, v in task_metrics(task, pred[i], y[i]).items():
            reps.setdefault(k, []).append(v)
    return {k: list(percentile_interval(v, level)) for k, v in reps.items()}


def _seed_mean_metrics(task: str, runs, y) -> dict:
    """Every metric of TASK averaged over the runs (seeds) predicting the same examples."""
    per_run = [task_metrics(task, p, y) for p in runs]
    return {k: float(np.mean([m[k] for m in per_run])) for k in per_run[0]}


def paired_task_differences(task: str, runs_a, runs_b, y, resamples: int = RESAMPLES, level: float = LEVEL,
                            seed: int = 0) -> dict:
    """{metric: {"diff": A − B, "ci": [lo, hi]}} for every metric of TASK, A and B each a
    list of prediction arrays (one per seed) on the same examples; the metric of a model is
    its mean over seeds, the resamples are shared by every run of both models."""
    runs_a = [np.asarray(p) for p in runs_a]
    runs_b = [np.asarray(p) for p in runs_b]
    yy = np.asarray(y)
    for pa in runs_a:
        for pb in runs_b:
            _paired(pa, pb, yy)
    ma, mb = _seed_mean_metrics(task, runs_a, yy), _seed_mean_metrics(task, runs_b, yy)
    reps: dict[str, list] = {}
    for i in resample_indices(len(yy), resamples, seed):
        ra = _seed_mean_metrics(task, [p[i] for p in runs_a], yy[i])
        rb = _seed_mean_metrics(task, [p[i] for p in runs_b], yy[i])
        for k in ra:
            reps.setdefault(k, []).append(ra[k] - rb[k])
    return {k: {"diff": ma[k] - mb[k], "ci": list(percentile_interval(v, level))} for k, v in reps.items()}
