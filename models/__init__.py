"""Model zoo: plain PyTorch modules (:class:`nrqc.training.SeqNet`) in four variants.

variant 'float'       ReLU everywhere, float weights;
        'bam'         binary activation maps: Heaviside after every conv, int8 weights in
                      every conv fed by a binary map; the first conv (it sees log-mel) and
                      the dense head stay full precision (Nilsson et al. 2024);
        'reparam'     float, every hidden width (and the VAD's input mel bands) learned by
                      noise reparameterization (Gómez & Bäckström);
        'bam-reparam' both at once.
"""
from __future__ import annotations

from nrqc.models.zoo import ARCHS, VARIANTS, build, default_arch

__all__ = ["ARCHS", "VARIANTS", "build", "default_arch"]
