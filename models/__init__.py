"""Model zoo: plain PyTorch modules (:class:`nrqc.training.SeqNet`) in four variants.

variant 'float'       ReLU everywhere, float weights;
        'bam'         binary activation maps: Heaviside after every conv, int8 weights in
                      every conv; the first conv reads the log-mel features quantized to
                      int8 (first_layer="int8", the default; "float" keeps the float first
                      layer of Nilsson et al. 2024); the dense head stays full precision;
        'reparam'     float, every hidden width (and the VAD's input mel bands) learned by
                      noise reparameterization (Gómez & Bäckström);
        'bam-reparam' both at once.
"""
from __future__ import annotations

from nrqc.models.zoo import ARCHS, VARIANTS, build, default_arch

__all__ = ["ARCHS", "VARIANTS", "build", "default_arch"]
