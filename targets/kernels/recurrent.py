"""The recurrence kernel of an ONNX LSTM / GRU / RNN direction, built for a target.

One PrimFunc per direction runs the whole layer: first the input projection of every time
step (one matrix product, [T*B, I] x [I, G*H], hoisted out of the recurrence), then per
step the recurrent product ([H] x [H, G*H]), the gate activations and the state update,
writing Y[t] and keeping the cell state in place. No allocation or copy per step: the
scratch (projections, gate pre-activations, the previous hidden state) is allocated once.

The products are register-blocked GEMVs over a packed weight layout [N/BW, K, BW]: a block
of BW output columns is accumulated over the whole K in BW lanes that stay in registers
(BW = 8 vectors of the target's float lanes where it has 32 SIMD registers, 4 where it has
16; 4 scalars on a scalar target), then written once. Weights are float32, or int8/uint8
with a float scale and zero point per output column (per tensor, per direction or per gate
row, as DequantizeLinear writes them): they stay 8-bit in the kernel (4x less memory), are
widened to float in the product (int8 x float, float accumulation), and the column's
`scale * (acc - zero * sum(x))` finishes it, so a zero point costs one multiply per column,
not one per weight.

`RecurrentSpec` (nrqc/onnx_recurrent.py) is what the import records; `recurrent_kernel(spec, lanes, registers)`
builds the PrimFunc and `pack_weights` the layout its parameters take.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from nrqc.onnx_recurrent import GATES, RecurrentSpec

def block_width(spec: RecurrentSpec, lanes: int, registers: int) -> int:
    """Output columns one GEMV block accumulates in registers: 8 vectors where the target
    has 32 SIMD registers, 4 where it has 16, 4 scalars on a scalar target; no wider than
    the layer's G*H columns rounded up to whole vectors (a small layer pads little)."""
    widest = lanes * (8 if registers >= 32 else 4) if lanes > 1 else 4
    need = -(-GATES[spec.op] * spec.hidden // max(lanes, 1)) * max(lanes, 1)
    return min(widest, need)


@dataclasses.dataclass
class QuantMatrix:
    """A [K, N] weight matrix (the transposed ONNX W or R of one direction): values in
    their storage dtype, and per output column the scale and zero point (1 and 0 for
    float weights)."""

    values: np.ndarray
    scale: np.ndarray
    zero: np.ndarray

    def columns(self, lo: int, hi: int) -> "QuantMatrix":
        return QuantMatrix(self.values[:, lo:hi], self.scale[lo:hi], self.zero[lo:hi])


def pack_weights(m: QuantMatrix, bw: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values [N/BW, K, BW], scale [N/BW*BW], zero [N/BW*BW]), columns padded with zeros."""
    k, n = m.values.shape
    nb = -(-n // bw)
    values = np.zeros((k, nb * bw), m.values.dtype)
    values[:, :n] = m.values
    scale, zero = np.zeros(nb * bw, np.float32), np.zeros(nb * bw, np.float32)
    scale[:n], zero[:n] = m.scale, m.zero
    return np.ascontiguousarray(values.reshape(k, nb, bw).transpose(1, 0, 2)), scale, zero


def kernel_matrices(spec: RecurrentSpec, w: QuantMatrix, r: QuantMatrix) -> list[QuantMatrix]:
    """The three products the kernel runs: the input projection, the recurrent product
    from h, and (GRU without linear_before_reset) the candidate's product from r (.) h,
    a one-column dummy otherwise."""
    h = spec.hidden
    if spec.op == "GRU" and not spec.lbr:
        return [w, r.columns(0, 2 * h), r.columns(2 * h, 3 * h)]
    dummy = QuantMatrix(np.zeros((1, 1), r.values.dtype), np.zeros(1, np.float32), np.zeros(1, np.float32))
    return [w, r, dummy]


def exp_poly(x):
    """exp(x) for float32 x without a libm call, so a gate loop vectorizes: x = n ln2 + r
    (Cody-Waite split of ln2, |r| <= ln2/2), e^r by its Taylor series to r^7 (truncation
    below 6e-9 relative), times 2^n built in the exponent bits. x is clamped to
    [-87.3, 88.3], where 2^n stays a normal float (exp saturates there anyway)."""
    from tvm import tirx

    f32 = "float32"
    x = tirx.max(tirx.min(x, tirx.const(88.3, f32)), tirx.const(-87.3, f32))
    n = tirx.floor(x * tirx.const(1.4426950408889634, f32) + tirx.const(0.5, f32))
    r = x - n * tirx.const(0.693145751953125, f32) - n * tirx.const(1.428606765330187e-06, f32)
    p = tirx.const(1.0 / 5040, f32)
    for k in (720, 120, 24, 6, 2, 1, 1):
        p = p * r + tirx.const(1.0 / k, f32)
    scale = tirx.reinterpret(f32, tirx.shift_left(tirx.Cast("int32", n) + 127, tirx.const(23, "int32")))
    return p * scale


def _activation(name: str, clip, dtype: str):
    """The gate activation as an expression: sigmoid 1 / (1 + e^-x), tanh 1 - 2 / (e^2x + 1)
    (absolute error ~1e-7 near 0, where tanh(x) ~ x), ReLU; clip first when the node has it."""
    from tvm import tirx

    one = tirx.const(1, dtype)

    def f(x, clipped=True):
        if clip is not None and clipped:
            x = tirx.max(tirx.min(x, tirx.const(clip, dtype)), tirx.const(-clip, dtype))
        if name == "Sigmoid":
            return one / (one + exp_poly(-x))
        if name == "Tanh":
            return one - tirx.const(2, dtype) / (exp_poly(x * tirx.const(2, dtype)) + one)
        return tirx.max(x, tirx.const(0, dtype))

    return f


def recurrent_kernel(spec: RecurrentSpec, lanes: int, registers: int):
    """The PrimFunc of one direction: (X [T, B, I], then per product (values [NB, K, BW],
    scale [NB*BW], zero [NB*BW]) for the input projection, R and R_h, bias [G*H padded],
    Rb_h [H], P [3H], H0 [B, H], C0 [B, H]) -> (Y [T, B, H], C_last [B, H])."""
    from tvm import tirx
    from tvm.script import tirx as T

    op, H, steps, batch, I = spec.op, spec.hidden, spec.steps, spec.batch, spec.inputs
    dtype = "float32"
    g = GATES[op]
    gh = g * H
    bw = block_width(spec, lanes, registers)
    lane_loop = T.vectorized if lanes > 1 else T.unroll
    # the gate loops run in vectors of the target's lanes when H splits into them
    gl = lanes if lanes > 1 and H % lanes == 0 else 1
    gate_loop = T.vectorized if gl > 1 else T.serial
    f = _activation(spec.acts[0], spec.clip, dtype)
    gg = _activation(spec.acts[1], spec.clip, dtype) if len(spec.acts) > 1 else None
    hh = _activation(spec.acts[2], spec.clip, dtype) if len(spec.acts) > 2 else None
    one = tirx.const(1, dtype)

    gru_split = op == "GRU" and not spec.lbr
    n_r = 2 * H if gru_split else gh  # columns of the product from h
    n_rh = H if gru_split else 1
    nb_w, nb_r, nb_rh = -(-gh // bw), -(-n_r // bw), -(-n_rh // bw)
    k_rh = H if gru_split else 1
    wq, rq = spec.w_dtype != "float32", spec.r_dtype != "float32"
    width = max(I, H)

    def time(s):
        return steps - 1 - s if spec.reverse else s

    def widen(v, quant):
        return T.Cast(dtype, v) if quant else v

    def finish(acc, q, S, Z, vsum, quant):  # the column's scale and zero point
        return S[q] * (acc - Z[q] * vsum) if quant else acc

    def forget(i_g, pre_f):
        return one - i_g if spec.input_forget else f(pre_f)

    def reset_times(r_g, acc_h, rbh, hp_j):  # GRU: r (.) (h R_h^T + Rb_h), or r (.) h
        return r_g * (acc_h + rbh) if spec.lbr else r_g * hp_j

    def candidate_in(rh_j, acc_h):
        return acc_h if gru_split else rh_j

    def gemv(quant, nb, k_len):
        # out[q] = finish(sum_k v[k] * M[q // BW, k, q % BW]); acc: BW lanes in registers
        @T.macro
        def body(v, M, S, Z, out, acc, vs):
            vs[0] = T.float32(0)
            if quant:
                for k in range(k_len):
                    vs[0] = vs[0] + v[k]
            for n in range(nb):
                for i in lane_loop(bw):
                    acc[i] = T.float32(0)
                for k in range(k_len):
                    for i in lane_loop(bw):
                        acc[i] = acc[i] + v[k] * widen(M[n, k, i], quant)
                for i in lane_loop(bw):
                    out[n * bw + i] = finish(acc[i], n * bw + i, S, Z, vs[0], quant)

        return body

    proj = gemv(wq, nb_w, I)
    rec = gemv(rq, nb_r, H)
    rec_h = gemv(rq, nb_rh, k_rh)

    @T.macro
    def lstm_gates(XW, row, a, P, Y, CL, rh, Rbh, b, t):
        # two passes without let-bound temporaries (the vectorizer got those wrong): the
        # cell state, then h from it; gate order i, o, f, c; peepholes i, o, f
        for jo in range(H // gl):
            for ji in gate_loop(gl):
                CL[b, jo * gl + ji] = (
                    forget(f(XW[row, jo * gl + ji] + a[jo * gl + ji] + P[jo * gl + ji] * CL[b, jo * gl + ji]),
                           XW[row, 2 * H + jo * gl + ji] + a[2 * H + jo * gl + ji]
                           + P[2 * H + jo * gl + ji] * CL[b, jo * gl + ji]) * CL[b, jo * gl + ji]
                    + f(XW[row, jo * gl + ji] + a[jo * gl + ji] + P[jo * gl + ji] * CL[b, jo * gl + ji])
                    * gg(XW[row, 3 * H + jo * gl + ji] + a[3 * H + jo * gl + ji]))
        for jo in range(H // gl):
            for ji in gate_loop(gl):
                Y[t, b, jo * gl + ji] = (f(XW[row, H + jo * gl + ji] + a[H + jo * gl + ji]
                                           + P[H + jo * gl + ji] * CL[b, jo * gl + ji])
                                         * hh(CL[b, jo * gl + ji], False))

    @T.macro
    def gru_gates(XW, row, a, P, Y, CL, rh, Rbh, b, t, hp, Mh, Sh, Zh, ah, acc, vs, zb):
        for jo in range(H // gl):
            for ji in gate_loop(gl):
                rh[jo * gl + ji] = reset_times(f(XW[row, H + jo * gl + ji] + a[H + jo * gl + ji]),
                                               a[2 * H + jo * gl + ji], Rbh[jo * gl + ji], hp[jo * gl + ji])
                zb[jo * gl + ji] = f(XW[row, jo * gl + ji] + a[jo * gl + ji])
        if gru_split:
            rec_h(rh, Mh, Sh, Zh, ah, acc, vs)
        for jo in range(H // gl):
            for ji in gate_loop(gl):
                Y[t, b, jo * gl + ji] = ((one - zb[jo * gl + ji])
                                         * gg(XW[row, 2 * H + jo * gl + ji]
                                              + candidate_in(rh[jo * gl + ji], ah[jo * gl + ji]))
                                         + zb[jo * gl + ji] * hp[jo * gl + ji])

    @T.macro
    def rnn_gates(XW, row, a, Y, b, t):
        for jo in range(H // gl):
            for ji in gate_loop(gl):
                Y[t, b, jo * gl + ji] = f(XW[row, jo * gl + ji] + a[jo * gl + ji])

    @T.prim_func(s_tir=False)
    def kernel(X: T.Buffer((steps, batch, I), dtype),
               W: T.Buffer((nb_w, I, bw), spec.w_dtype), Ws: T.Buffer((nb_w * bw,), dtype),
               Wz: T.Buffer((nb_w * bw,), dtype), Bias: T.Buffer((nb_w * bw,), dtype),
               R: T.Buffer((nb_r, H, bw), spec.r_dtype), Rs: T.Buffer((nb_r * bw,), dtype),
               Rz: T.Buffer((nb_r * bw,), dtype),
               Rh: T.Buffer((nb_rh, k_rh, bw), spec.r_dtype), Rhs: T.Buffer((nb_rh * bw,), dtype),
               Rhz: T.Buffer((nb_rh * bw,), dtype),
               Rbh: T.Buffer((H,), dtype), P: T.Buffer((3 * H,), dtype), H0: T.Buffer((batch, H), dtype),
               C0: T.Buffer((batch, H), dtype), Y: T.Buffer((steps, batch, H), dtype),
               CL: T.Buffer((batch, H), dtype)):
        XW = T.alloc_buffer((steps * batch, nb_w * bw), dtype)
        pw = T.alloc_buffer((nb_w * bw,), dtype)
        a = T.alloc_buffer((nb_r * bw,), dtype)
        ah = T.alloc_buffer((nb_rh * bw,), dtype)
        v = T.alloc_buffer((width,), dtype)
        hp = T.alloc_buffer((H,), dtype)
        rh = T.alloc_buffer((H,), dtype)
        zb = T.alloc_buffer((H,), dtype)
        acc = T.alloc_buffer((bw,), dtype, scope="local")
        vs = T.alloc_buffer((1,), dtype, scope="local")
        # the input projection of every step, hoisted out of the recurrence
        for s in range(steps):
            for b in range(batch):
                for k in range(I):
                    v[k] = X[s, b, k]
                proj(v, W, Ws, Wz, pw, acc, vs)
                for q in range(nb_w * bw):
                    XW[s * batch + b, q] = pw[q] + Bias[q]
        for b in range(batch):
            for j in range(H):
                hp[j] = H0[b, j]
                CL[b, j] = C0[b, j]
            for s in range(steps):
                rec(hp, R, Rs, Rz, a, acc, vs)
                if op == "LSTM":
                    lstm_gates(XW, time(s) * batch + b, a, P, Y, CL, rh, Rbh, b, time(s))
                elif op == "GRU":
                    gru_gates(XW, time(s) * batch + b, a, P, Y, CL, rh, Rbh, b, time(s), hp, Rh, Rhs, Rhz, ah,
                              acc, vs, zb)
                else:
                    rnn_gates(XW, time(s) * batch + b, a, Y, b, time(s))
                for j in range(H):
                    hp[j] = Y[time(s), b, j]
    # opaque: FuseOps leaves it alone (a hand-written kernel, see tvm-0.27 notes)
    return kernel.without_attr("global_symbol").with_attrs({"op_pattern": 8, "tirx.noalias": True})
