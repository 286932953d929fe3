"""Training library for resource-efficient speech models.

Two published methods, usable in any PyTorch model:

- noise reparameterization of widths (Gómez & Bäckström, arXiv 2601.13704):
  :class:`DynamicWidth` gates units in a fixed order with a learned, continuous K;
  :mod:`nrqc.training.complexity` gives MACs / parameters / bytes as a differentiable
  polynomial in the Ks, so ``task + alpha * complexity`` trains the widths;
- binary activation maps with QAT (Nilsson et al., Interspeech 2024):
  :class:`Heaviside` with the SuperSpike surrogate gradient (per-layer beta) and
  :func:`fake_quant_int8` (symmetric, per-output-channel, straight-through).

:class:`SeqNet` strings :class:`Block`, :class:`GRUBlock` and :class:`Residual` layers into a
model the complexity model, the slicer and the exporter understand.
"""
from nrqc.training.surrogate import Heaviside, heaviside, sign_spike, superspike_grad
from nrqc.training.quant import fake_quant_int8, quantize_int8
from nrqc.training.reparam import DynamicWidth
from nrqc.training.recurrent import GatedGRU, GRUBlock
from nrqc.training.net import Block, GlobalMaxPool, MaxPool, Residual, SeqNet

__all__ = [
    "Heaviside", "heaviside", "sign_spike", "superspike_grad",
    "fake_quant_int8", "quantize_int8", "DynamicWidth",
    "Block", "GlobalMaxPool", "MaxPool", "Residual", "SeqNet", "GatedGRU", "GRUBlock",
]
