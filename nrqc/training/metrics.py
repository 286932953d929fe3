"""Task metrics in numpy: correlation for speech quality, F1/AUC for VAD, EER for spoofing."""
from __future__ import annotations

import numpy as np


def pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else 0.0


def rankdata(x) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (vectorized: the bootstrap calls it
    thousands of times on 10^4 VAD frames)."""
    x = np.asarray(x).reshape(-1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of the last member of each tie group
    return (last - (counts - 1) / 2.0)[inverse].astype(np.float64)


def spearman(a, b) -> float:
    return pearson(rankdata(a), rankdata(b))


def mse(a, b) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def f1(scores, labels, threshold: float = 0.0) -> float:
    """F1 of the positive class for `scores > threshold` (logits: threshold 0 = p 0.5)."""
    pred = np.asarray(scores).reshape(-1) > threshold
    lab = np.asarray(labels).reshape(-1).astype(bool)
    tp = float((pred & lab).sum())
    denom = pred.sum() + lab.sum()
    return 2 * tp / denom if denom > 0 else 1.0


def auc(scores, labels) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties ½."""
    s = np.asarray(scores, np.float64).reshape(-1)
    lab = np.asarray(labels).reshape(-1).astype(bool)
    npos, nneg = lab.sum(), (~lab).sum()
    if npos == 0 or nneg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[lab].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def eer(scores, labels) -> float:
    """Equal error rate with positives = bona fide / speech (label 1, high scores).  Sweeps
    the acceptance threshold over every score (accept when score >= t); returns the mean
    of FAR and FRR where they are closest."""
    s = np.asarray(scores, np.float64).reshape(-1)
    lab = np.asarray(labels).reshape(-1).astype(bool)
    if lab.all() or not lab.any():
        return float("nan")
    thr = np.concatenate([np.unique(s), [np.inf]])
    # counts of scores strictly below each threshold, per class (sorted search: O(n log n))
    neg, pos = np.sort(s[~lab]), np.sort(s[lab])
    far = 1 - np.searchsorted(neg, thr, side="left") / len(neg)  # negatives accepted
    frr = np.searchsorted(pos, thr, side="left") / len(pos)  # positives rejected
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2)


def task_metrics(task: str, pred, y) -> dict:
    """Every metric `nrqc train` reports for TASK, from predictions and labels of the same
    shape ([N] scores, or [N, frames] for VAD: frame metrics over every frame)."""
    pred = np.asarray(pred, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    if task in ("quality", "synthetic"):
        m = {"pearson": pearson(pred, y), "spearman": spearman(pred, y), "mse": mse(pred, y)}
        if task == "synthetic":
            m["r2"] = 1 - m["mse"] / float(np.var(y))
        return m
    if task == "vad":
        return {"f1": f1(pred, y), "auc": auc(pred, y), "eer": eer(pred, y),
                "accuracy": float(((pred > 0) == (y > 0.5)).mean())}
    return {"eer": eer(pred, y), "auc": auc(pred, y)}
