"""int8 fake-quantization with a straight-through estimator: weights and input features.

Weights: symmetric, per output channel, scale_c = max|W_c| / 127 and
W_q = clamp(round(W / scale), −127, 127).  Symmetric with a zero point of 0 so that the
exported `DequantizeLinear(W_q, scale, 0)` reproduces exactly the weights used in
training, and so that negating a channel (BatchNorm folding with γ < 0) stays
representable.

Input features (the all-integer first layer, docs/bam-onnx-contract.md section 7): one
per-tensor scale s_in, zero point 0, q = clamp(round_half_even(x / s_in), −128, 127),
exactly ONNX `QuantizeLinear` (torch.round rounds half to even, the division is float32),
so the exported `QuantizeLinear → DequantizeLinear` computes what training computed.
s_in is calibrated on the training features (:class:`InputQuant`), not learned: see
docs/training.md ("All-integer first layer").
"""
from __future__ import annotations

import numpy as np
import torch

QMAX = 127


def _scale(w: torch.Tensor, axis: int) -> torch.Tensor:
    dims = [d for d in range(w.dim()) if d != axis % w.dim()]
    amax = w.detach().abs().amax(dim=dims, keepdim=True) if dims else w.detach().abs()
    # An all-zero channel would divide by zero; any positive scale represents it exactly.
    return torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))


def channel_scale(w: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Per-channel symmetric scale max|W_c| / 127, shape [w.shape[axis]]."""
    return _scale(w, axis).reshape(-1)


def _broadcast_scale(w: torch.Tensor, axis: int, scale: torch.Tensor | None) -> torch.Tensor:
    """The per-channel scale shaped to broadcast against w: the given one, or max|W_c|/127."""
    if scale is None:
        return _scale(w, axis)
    shape = [1] * w.dim()
    shape[axis % w.dim()] = -1
    return scale.detach().reshape(shape)


def quantize_int8(w: torch.Tensor, axis: int = 0, scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_q int8, scale float32 of shape [w.shape[axis]])."""
    s = _broadcast_scale(w, axis, scale)
    q = torch.clamp(torch.round(w.detach() / s), -QMAX, QMAX).to(torch.int8)
    return q, s.reshape(-1).to(torch.float32)


def fake_quant_int8(w: torch.Tensor, axis: int = 0, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Forward: dequantized int8 weights. Backward: identity (straight-through).

    ``scale`` (shape [w.shape[axis]]) overrides the per-channel max, e.g. to take the max
    over the input channels a pruned model keeps, so that training and export agree.
    """
    s = _broadcast_scale(w, axis, scale)
    wq = torch.clamp(torch.round(w / s), -QMAX, QMAX) * s
    return w + (wq - w).detach()


INPUT_QMIN, INPUT_QMAX = -128, 127
# Calibration: s_in = P(|x|) / 127 at this percentile of the training features.  Below 100
# so that a few outliers (a clipped burst) do not coarsen every other feature's step.
INPUT_PERCENTILE = 99.99
# At most this many feature values enter the percentile (a deterministic stride over
# them): np.percentile of 10^7 values is exact to far below one quantization step.
_CALIBRATION_VALUES = 10_000_000


def fake_quant_input(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Forward: s·clamp(round(x / s), −128, 127). Backward: identity (a learned input
    width's K still gets its gradient through the quantized features)."""
    xq = torch.clamp(torch.round(x / scale), INPUT_QMIN, INPUT_QMAX) * scale
    return x + (xq - x).detach()


def input_scale(x: torch.Tensor, percentile: float = INPUT_PERCENTILE) -> float:
    """float32 s_in = P_percentile(|x|) / 127 over the given features."""
    a = np.abs(x.detach().reshape(-1).cpu().numpy())
    if a.size > _CALIBRATION_VALUES:
        step = -(-a.size // _CALIBRATION_VALUES)  # ceil
        a = a[::step]
    amax = float(np.percentile(a, percentile)) if a.size else 0.0
    return float(np.float32(amax / INPUT_QMAX)) if amax > 0 else 1.0


# Before calibration: ±4 standard units of the log-mel frontend ((ln − mean) / std, whose
# silence floor is −1.95), so that an untrained zoo model runs and exports as it is.
DEFAULT_INPUT_SCALE = float(np.float32(4.0 / INPUT_QMAX))


class InputQuant(torch.nn.Module):
    """Per-tensor int8 quantization of the model input. ``scale`` is a buffer (saved in
    the state dict, hence in checkpoints): DEFAULT_INPUT_SCALE until :meth:`calibrate`
    sets it from training features."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(DEFAULT_INPUT_SCALE))

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> float:
        """Set s_in from features x (already cut to the bands the model keeps)."""
        self.scale.fill_(input_scale(x))
        return float(self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quant_input(x, self.scale)

    def extra_repr(self):
        return f"int8, scale={float(self.scale):.6g}"
