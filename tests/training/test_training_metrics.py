"""Task metrics against independent references (numpy, brute force, hand counts)."""
import itertools

import numpy as np
import pytest

from nrqc.training import metrics as M


def test_pearson_spearman_mse():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(50), rng.standard_normal(50)
    assert M.pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert M.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert M.spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone, not linear
    assert M.rankdata([3, 1, 3, 2]).tolist() == [3.5, 1.0, 3.5, 2.0]  # ties share the average rank
    assert M.mse([1, 2], [1, 4]) == pytest.approx(2.0)


def test_auc_matches_pair_count():
    rng = np.random.default_rng(1)
    s = np.round(rng.standard_normal(40), 1)  # with ties
    y = rng.integers(0, 2, 40)
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p, n in itertools.product(s[y == 1], s[y == 0])]
    assert M.auc(s, y) == pytest.approx(np.mean(pairs))


def test_f1_and_eer_by_hand():
    # scores > 0 predicted positive: tp 2, fp 1, fn 1 -> F1 = 4 / (4 + 2)
    assert M.f1([1.0, 2.0, 0.5, -1.0, -2.0], [1, 1, 0, 1, 0]) == pytest.approx(4 / 6)
    # bona fide 0.9 0.8 0.3, spoof 0.7 0.2 0.1: at threshold 0.7 one of three each side is wrong
    assert M.eer([0.9, 0.8, 0.3, 0.7, 0.2, 0.1], [1, 1, 1, 0, 0, 0]) == pytest.approx(1 / 3)
    assert M.eer([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 0.0


def test_eer_matches_brute_force_sweep():
    rng = np.random.default_rng(3)
    s = np.round(rng.standard_normal(300), 2)
    y = (rng.random(300) < 0.4).astype(int)
    s[y == 1] += 1.0
    best = None
    for t in np.concatenate([np.unique(s), [np.inf]]):
        far = ((s >= t) & (y == 0)).sum() / (y == 0).sum()
        frr = ((s < t) & (y == 1)).sum() / (y == 1).sum()
        if best is None or abs(far - frr) < best[0]:
            best = (abs(far - frr), (far + frr) / 2)
    assert M.eer(s, y) == pytest.approx(best[1])
