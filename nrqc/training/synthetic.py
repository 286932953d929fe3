"""The synthetic case study: a task whose best widths are known by construction.

Inputs x ~ N(0, I) with N = 16 features; the target is a fixed random teacher network that
reads only the first k = 6 features through h = 4 ReLU units, plus a little noise:
y = v·relu(W x[:k] + c) + ε.  A reparameterized student (16 → 32 → 1) should learn an input
width near k (the other features carry nothing) and a hidden width near h once the
complexity term makes every unit pay for itself.
"""
from __future__ import annotations

import numpy as np

N_FEATURES, K_TRUE, H_TRUE = 16, 6, 4


def make_synthetic(count: int, seed: int = 0, k: int = K_TRUE, h: int = H_TRUE, n: int = N_FEATURES,
                   noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    teacher = np.random.default_rng(1234)  # the same teacher for every seed
    w = teacher.standard_normal((h, k)) / np.sqrt(k)
    c = teacher.uniform(-0.2, 0.2, h)
    v = teacher.choice([-1.0, 1.0], h) * teacher.uniform(0.8, 1.2, h)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, n)).astype(np.float32)
    y = np.maximum(x[:, :k] @ w.T + c, 0) @ v + noise * rng.standard_normal(count)
    return x, y.astype(np.float32)
