"""Bootstrap intervals against numpy references: the same resamples by hand, the normal
approximation of a mean, coverage on synthetic data, and paired differences."""
import numpy as np
import pytest

from nrqc.training import metrics as M
from nrqc.training.bootstrap import (bootstrap_ci, paired_difference_ci, paired_task_differences,
                                     resample_indices, task_intervals)


def test_interval_of_a_mean_is_the_percentiles_of_the_resampled_means():
    x = np.random.default_rng(5).normal(3.0, 2.0, 400)
    point, lo, hi = bootstrap_ci(np.mean, x, resamples=2000, seed=7)
    idx = np.random.default_rng(7).integers(0, 400, size=(2000, 400))  # the documented draw
    ref = np.percentile(x[idx].mean(axis=1), [2.5, 97.5])
    assert point == pytest.approx(x.mean()) and [lo, hi] == pytest.approx(ref)
    # and the normal approximation x̄ ± 1.96 s/√n agrees to a few percent of its width
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert lo == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.1 * half)


def test_coverage_of_the_true_mean_and_correlation():
    rng = np.random.default_rng(11)
    hits_mean = hits_r = 0
    trials = 80
    rho = 0.6
    cov = [[1, rho], [rho, 1]]
    for t in range(trials):
        x = rng.exponential(1.0, 60)  # skewed: mean 1
        _, lo, hi = bootstrap_ci(np.mean, x, resamples=300, seed=t)
        hits_mean += lo <= 1.0 <= hi
        a, b = rng.multivariate_normal([0, 0], cov, 100).T
        _, lo, hi = bootstrap_ci(M.pearson, a, b, resamples=300, seed=t)
        hits_r += lo <= rho <= hi
    # nominal 95 %: 80 trials give a binomial sd of 2.4 pt; percentile intervals run a little short
    assert 0.85 <= hits_mean / trials <= 1.0
    assert 0.85 <= hits_r / trials <= 1.0


def test_paired_difference_of_identical_predictors_is_zero():
    rng = np.random.default_rng(2)
    y = rng.normal(3, 1, 200)
    p = y + rng.normal(0, 0.5, 200)
    assert paired_difference_ci(M.pearson, p, p, y) == (0.0, 0.0, 0.0)
    d = paired_task_differences("quality", [p], [p], y, resamples=200)
    assert all(v["diff"] == 0 and v["ci"] == [0, 0] for v in d.values())


def test_paired_difference_separates_what_unpaired_intervals_do_not():
    rng = np.random.default_rng(3)
    y = rng.normal(3, 1, 200)
    shared = rng.normal(0, 0.6, 200)  # errors both models make (hard clips)
    a = y + shared + rng.normal(0, 0.15, 200)
    b = y + shared + rng.normal(0, 0.45, 200)
    ra, rb = bootstrap_ci(M.pearson, a, y), bootstrap_ci(M.pearson, b, y)
    assert ra[1] < rb[2]  # the two intervals overlap...
    diff, lo, hi = paired_difference_ci(M.pearson, a, b, y)
    assert diff == pytest.approx(M.pearson(a, y) - M.pearson(b, y)) and 0 < lo < diff < hi  # ...the paired one does not reach 0


def test_vad_intervals_resample_whole_windows():
    rng = np.random.default_rng(4)
    y = (rng.random((30, 50)) < 0.5).astype(np.float32)  # 30 windows × 50 frames
    s = y + rng.normal(0, 0.8, y.shape)
    ci = task_intervals("vad", s, y, resamples=200, seed=9)
    idx = resample_indices(30, 200, 9)
    eers = [M.eer(s[i].ravel(), y[i].ravel()) for i in idx]
    assert ci["eer"] == pytest.approx(list(np.percentile(eers, [2.5, 97.5])))
    assert ci["eer"][0] < M.eer(s, y) < ci["eer"][1]
    assert set(ci) == {"f1", "auc", "eer", "accuracy"}


def test_undefined_resamples_are_dropped_and_too_few_examples_refused():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0], np.float32)  # one positive: many resamples lack it
    ci = task_intervals("antispoof", np.linspace(1, 0, 8), y, resamples=300)
    assert not np.isnan(ci["eer"]).any()
    with pytest.raises(ValueError, match="at least 2"):
        resample_indices(1)


def test_rankdata_matches_brute_force_average_ranks():
    x = np.random.default_rng(6).integers(0, 7, 60)
    ref = [np.sum(x < v) + (np.sum(x == v) + 1) / 2 for v in x]
    assert M.rankdata(x).tolist() == pytest.approx(ref)


def test_one_example_gives_undefined_intervals_not_an_error():
    ci = task_intervals("quality", np.array([3.0]), np.array([2.5]))
    assert set(ci) == {"pearson", "spearman", "mse"} and all(np.isnan(v).all() for v in ci.values())


def test_seed_mean_difference_averages_the_metric_over_seeds():
    rng = np.random.default_rng(8)
    y = rng.normal(3, 1, 120)
    a = [y + rng.normal(0, 0.3, 120) for _ in range(3)]
    b = [y + rng.normal(0, 0.6, 120) for _ in range(2)]
    d = paired_task_differences("quality", a, b, y, resamples=300, seed=1)
    ref = np.mean([M.pearson(p, y) for p in a]) - np.mean([M.pearson(p, y) for p in b])
    assert d["pearson"]["diff"] == pytest.approx(ref)
    idx = resample_indices(120, 300, 1)
    reps = [np.mean([M.mse(p[i], y[i]) for p in a]) - np.mean([M.mse(p[i], y[i]) for p in b]) for i in idx]
    assert d["mse"]["ci"] == pytest.approx(list(np.percentile(reps, [2.5, 97.5])))
    assert d["pearson"]["ci"][0] > 0
