"""Pass 2: fold bias / BatchNorm / weight scale / threshold into integer thresholds.

One job: for every planned layer with integer weights and a Heaviside/Sign head, turn
``M_c * (s_c * acc) + K_c  (>|>=)  T_c`` (acc = the exact integer sum; for an int8-input
layer s_c = s_in * s_w,c and acc = sum (q - zp) * w) into
``sigma_c * acc >= t_c`` with sigma in {-1, 0, +1} and t an int32, and check that an
int32 accumulator cannot overflow for the layer's fan-in.

With a = M*s and q = (T - K) / a:
  a > 0, '>' : acc >= floor(q) + 1        a > 0, '>=': acc >= ceil(q)
  a < 0, '>' : -acc >= 1 - ceil(q)        a < 0, '>=': -acc >= -floor(q)
  a = 0      : constant bit (K > T), sigma = 0, t = 0 (always 1) or 1 (always 0)
A flipped comparison (pre < T) is the same with a, T negated. Sign(pre - T) is taken as
pre > T (+1) else -1; ONNX's Sign gives 0 exactly at pre == T (documented deviation).
"""
from __future__ import annotations

import numpy as np

from nrqc.targets.kernels.int8_conv import MAX_WEIGHT_SUM

INT32_MAX = 2 ** 31 - 1


def integer_threshold(a: np.ndarray, b: np.ndarray, strict: bool) -> tuple[np.ndarray, np.ndarray]:
    """sigma, t with (a*acc > b) [strict] or (a*acc >= b)  <=>  sigma*acc >= t, acc integer."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    sigma = np.sign(a).astype(np.int64)
    t = np.zeros_like(sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(a != 0, b / np.where(a != 0, a, 1), 0.0)
    # An infinite threshold (a channel that is always or never on, e.g. after a Q/DQ of the
    # layer output saturates) stays beyond any int32 accumulator, and stays an integer.
    q = np.clip(q, -2.0 ** 53, 2.0 ** 53)
    pos, neg, zero = a > 0, a < 0, a == 0
    if strict:
        t[pos] = np.floor(q[pos]) + 1
        t[neg] = 1 - np.ceil(q[neg])
        const_true = 0 > b
    else:
        t[pos] = np.ceil(q[pos])
        t[neg] = -np.floor(q[neg])
        const_true = 0 >= b
    t[zero] = np.where(const_true[zero], 0, 1)
    return sigma, t


def accumulator_bound(plan) -> int:
    """Worst-case |acc| over all {0,1}/{-1,+1} inputs: sum of |w| of the worst channel; for
    an int8-input layer times the largest |q - zp| of its input type."""
    w = plan.wq.astype(np.int64)
    rows = w.reshape(plan.c_out, -1) if plan.kind != "matmul" else w.T.reshape(plan.c_out, -1)
    return int(np.abs(rows).sum(1).max()) * input_magnitude(plan)


def input_magnitude(plan) -> int:
    """max |q - zp| of an int8-input layer's input (1 for a binary map)."""
    iq = plan.input_quant
    if iq is None:
        return 1
    info = np.iinfo(iq.q_dtype)
    return max(abs(int(info.min) - iq.zero_point), abs(int(info.max) - iq.zero_point))


def weight_scale(plan) -> np.ndarray:
    """y = scale_c * acc: the weight scale, times the input scale for an int8-input layer."""
    s = plan.scale.astype(np.float64)
    return s * np.float64(np.float32(plan.input_quant.scale)) if plan.input_quant is not None else s


def min_signed_bits(v: int) -> int:
    return int(v).bit_length() + 1


def fold_thresholds(mod, ctx):
    for p in ctx.binary.plan:
        if p.weights not in ("int8", "binary") or p.wq is None:
            continue
        bound = accumulator_bound(p)
        need = min_signed_bits(bound)
        p.accumulator = {"dtype": "int32", "worst_case_abs": bound, "bits_needed": need,
                                 "int16_enough": need <= 16}
        if need > 32:
            p.reason = f"worst-case accumulator {bound} needs {need} bits (> int32)"
            continue
        if p.input_quant is not None and bound // input_magnitude(p) > MAX_WEIGHT_SUM:
            p.reason = (f"sum of |w| {bound // input_magnitude(p)} of a channel above {MAX_WEIGHT_SUM} "
                        "(the int8 kernels' int32 accumulator with the zero-point correction)")
            continue
        if p.head is None:
            continue
        m, k = p.affine
        a = m * weight_scale(p)
        b = p.head.threshold - k
        if p.head.flipped:
            a, b = -a, -b
        sigma, t = integer_threshold(a, b, p.head.strict)
        t = np.clip(t, -INT32_MAX, INT32_MAX)  # |acc| <= bound < 2^31: clipping keeps the result
        p.sigma, p.t = sigma.astype(np.int32), t.astype(np.int32)
        p.negative_scale_channels = int((sigma < 0).sum())
        p.constant_channels = int((sigma == 0).sum())
    return mod
