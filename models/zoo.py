"""Builders for the zoo models. Every builder returns a :class:`SeqNet` whose ``meta``
records task, arch, variant, input shape and output meaning (it is saved in checkpoints
and drives the exporter)."""
from __future__ import annotations

from nrqc.training.net import Block, GlobalMaxPool, MaxPool, SeqNet
from nrqc.training.recurrent import GRUBlock
from nrqc.training.reparam import DynamicWidth

VARIANTS = ("float", "bam", "reparam", "bam-reparam")
FIRST_LAYERS = ("int8", "float")


def default_first_layer(variant: str) -> str:
    """BAM variants are all-integer by default (int8 input features, int8 first-layer
    weights); the others keep a float first layer."""
    return "int8" if variant.startswith("bam") else "float"


class _Spec:
    """Turns a variant name into the per-layer choices."""

    def __init__(self, variant: str, beta: float, bn: bool | None, first_layer: str | None = None):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        self.bam = variant.startswith("bam")
        self.reparam = variant.endswith("reparam")
        self.first_layer = first_layer or default_first_layer(variant)
        if self.first_layer not in FIRST_LAYERS:
            raise ValueError(f"first_layer must be one of {', '.join(FIRST_LAYERS)}, not {self.first_layer!r}")
        if self.first_layer == "int8" and not self.bam:
            raise ValueError(f"first_layer 'int8' needs a BAM variant (bam, bam-reparam), not {variant!r}")
        # BAM feature layers get BatchNorm by default (it folds into the thresholds at
        # export): without it, channels of the last binary layer drift to always-on or
        # always-off after the global max-pool and the head sees a constant vector (measured
        # on the quality task: validation Pearson 0.00 without, 0.5 after 4 epochs with).
        self.beta, self.bn = beta, (self.bam if bn is None else bn)
        self.gates: dict[str, DynamicWidth] = {}

    def gate(self, name: str, n: int, k_min: float = 2.0, dim: int = 1) -> str | None:
        if not self.reparam:
            return None
        self.gates[name] = DynamicWidth(n, k_min=k_min, dim=dim)
        return name

    def feature_block(self, kind, c_in, c_out, first: bool, gate: str | None, kernel=3) -> Block:
        """A feature-extracting conv: binary activation in BAM models, int8 weights when
        its input is a binary map (every conv but the first) and, with first_layer
        'int8', in the first one too (its input is then the int8 features)."""
        weight = "int8" if self.bam and (not first or self.first_layer == "int8") else "float"
        act = "heaviside" if self.bam else "relu"
        return Block(kind, c_in, c_out, kernel, weight=weight, act=act, bn=self.bn, beta=self.beta,
                     gate=self.gate(gate, c_out) if gate else None)

    @property
    def quantize_input(self) -> bool:
        """The all-integer first layer reads int8 features (SeqNet's input quantizer)."""
        return self.first_layer == "int8"

    def meta(self, **meta) -> dict:
        return {**meta, "first_layer": self.first_layer}

    def head_block(self, kind, c_in, c_out, gate: str | None, last: bool = False, kernel=1,
                   binary: bool = False) -> Block:
        """Head layer. Full precision (float weights, ReLU; no activation on the output), as
        in the paper's model, or with `binary` in BAM models: fed by a binary vector (the
        global max of a binary map is one), so int8 weights, and a binary activation on its
        hidden outputs too; the whole head then runs as int8 sums with 1-bit activations in
        between. Measured on the synthesized quality task (bam4, 400 clips, 8 epochs, same
        data): test Pearson 0.67 binary head vs 0.89 float head; weights 48.5 vs 72.7 kB."""
        binary = binary and self.bam
        act = "none" if last else ("heaviside" if binary else "relu")
        return Block(kind, c_in, c_out, kernel, weight="int8" if binary else "float", act=act,
                     bn=self.bn if binary and not last else False, beta=self.beta,
                     gate=self.gate(gate, c_out) if gate and not last else None)


def _head_kind(head_kind: str) -> bool:
    if head_kind not in ("float", "binary"):
        raise ValueError(f"head_kind must be 'float' or 'binary', not {head_kind!r}")
    return head_kind == "binary"


def quality_bam4(variant="float", frames=200, bands=64, channels=(32, 32, 32, 64), head=64,
                 beta=5.0, bn=None, head_kind="float", first_layer=None) -> SeqNet:
    """The BAM paper's speech-quality CNN: four 3×3 convs (32, 32, 32, 64), each followed by
    the activation and a 2×2 max-pool, a global max-pool and a dense head 64→64→64→1.
    head_kind="binary" (BAM variants): the head too has int8 weights and binary hidden
    activations (see `_Spec.head_block` for what that costs in quality)."""
    s = _Spec(variant, beta, bn, first_layer)
    binary = _head_kind(head_kind)
    layers, c_in = [], 1
    for i, c in enumerate(channels):
        layers += [s.feature_block("conv2d", c_in, c, i == 0, f"conv{i + 1}"), MaxPool("conv2d", 2)]
        c_in = c
    layers += [GlobalMaxPool(),
               s.head_block("linear", c_in, head, "dense1", binary=binary),
               s.head_block("linear", head, head, "dense2", binary=binary),
               s.head_block("linear", head, 1, None, last=True, binary=binary)]
    return SeqNet(layers, s.gates, "image", None, False,
                  s.meta(task="quality", arch="bam4", variant=variant, frames=frames, bands=bands,
                         output="MOS-like quality score [1, 1]"), s.quantize_input)


def quality_dnsmos(variant="float", frames=200, bands=64, beta=5.0, bn=None, head_kind="float",
                   first_layer=None) -> SeqNet:
    """The DNSMOS P.808 architecture (model_v8.onnx): conv 1→32 + pool, 32→32 + pool,
    32→32, 32→32 + pool, 32→64, global max-pool, dense 64→64→64→1.  The published model
    reads 900 frames × 120 bands; the default here is a shorter, narrower input.
    head_kind as in :func:`quality_bam4`."""
    s = _Spec(variant, beta, bn, first_layer)
    binary = _head_kind(head_kind)
    plan = [(1, 32, True), (32, 32, True), (32, 32, False), (32, 32, True), (32, 64, False)]
    layers = []
    for i, (ci, co, pool) in enumerate(plan):
        layers.append(s.feature_block("conv2d", ci, co, i == 0, f"conv{i + 1}"))
        if pool:
            layers.append(MaxPool("conv2d", 2))
    layers += [GlobalMaxPool(),
               s.head_block("linear", 64, 64, "dense1", binary=binary),
               s.head_block("linear", 64, 64, "dense2", binary=binary),
               s.head_block("linear", 64, 1, None, last=True, binary=binary)]
    return SeqNet(layers, s.gates, "image", None, False,
                  s.meta(task="quality", arch="dnsmos", variant=variant, frames=frames, bands=bands,
                         output="MOS-like quality score [1, 1]"), s.quantize_input)


def _band_gate(s, bands: int):
    """Reparameterized VAD variants learn how many input mel bands they need (lowest first)."""
    if not s.reparam:
        return None
    s.gates["bands"] = DynamicWidth(bands, k_min=4, dim=-1)
    return "bands"


def vad_tiny(variant="float", frames=100, bands=80, channels=32, beta=5.0, bn=None, first_layer=None,
             head_kind="float") -> SeqNet:
    """Frame-level VAD for a Cortex-M: 1-D convs over time with the mel bands as channels
    (3 taps each), a 1×1 full-precision head, one logit per frame.  About 14 k parameters
    (≈ 14 kB with int8 weights), ≈ 14 k MACs per 10 ms frame.  The reparameterized
    variants learn how many of the 80 mel bands they need (lowest bands first).
    head_kind="binary" (BAM variants): the 1×1 head too has int8 weights and a binary
    hidden layer, as in :func:`quality_bam4` (no float map is left between the layers)."""
    s = _Spec(variant, beta, bn, first_layer)
    binary = _head_kind(head_kind)
    in_gate = _band_gate(s, bands)
    layers = [s.feature_block("conv1d", bands, channels, True, "conv1"),
              s.feature_block("conv1d", channels, channels, False, "conv2"),
              s.feature_block("conv1d", channels, channels, False, "conv3"),
              s.head_block("conv1d", channels, 16, "head1", binary=binary),
              s.head_block("conv1d", 16, 1, None, last=True, binary=binary)]
    return SeqNet(layers, s.gates, "bands_as_channels", in_gate, True,
                  s.meta(task="vad", arch="vad_tiny", variant=variant, frames=frames, bands=bands,
                         output="speech logit per frame [1, frames]"), s.quantize_input)


def _conv_gru_vad(arch, variant, frames, bands, channels, hidden, beta, bn, first_layer) -> SeqNet:
    """3-tap convs over time (bands as channels), a GRU over the frames, a 1×1 head."""
    s = _Spec(variant, beta, bn, first_layer)
    in_gate = _band_gate(s, bands)
    layers, c_in = [], bands
    for i, c in enumerate(channels):
        layers.append(s.feature_block("conv1d", c_in, c, i == 0, f"conv{i + 1}"))
        c_in = c
    layers += [GRUBlock(c_in, hidden, s.gate("gru", hidden)),
               s.head_block("conv1d", hidden, 16, "head1"),
               s.head_block("conv1d", 16, 1, None, last=True)]
    return SeqNet(layers, s.gates, "bands_as_channels", in_gate, True,
                  s.meta(task="vad", arch=arch, variant=variant, frames=frames, bands=bands,
                         output="speech logit per frame [1, frames]"), s.quantize_input)


def vad_gru(variant="float", frames=100, bands=80, channels=32, hidden=32, beta=5.0, bn=None,
            first_layer=None) -> SeqNet:
    """Recurrent frame-level VAD: a 3-tap conv over time (bands as channels), a GRU over
    the frames, a 1×1 full-precision head, one logit per frame.  The GRU is full precision
    in every variant (BAM: it reads the first conv's binary map); the reparameterized
    variants learn the input bands, the conv width and the GRU's hidden size (gated inside
    the recurrence, sliced to a dense GRU at export)."""
    return _conv_gru_vad("vad_gru", variant, frames, bands, (channels,), hidden, beta, bn, first_layer)


def vad_crnn(variant="float", frames=100, bands=80, channels=(32, 32), hidden=32, beta=5.0, bn=None,
             first_layer=None) -> SeqNet:
    """CRNN VAD in the shape Gómez & Bäckström train with noise reparameterization: a conv
    front end over time (bands as channels, 3 taps per conv; binary maps with int8 weights
    in the BAM variants, the first conv reading int8 features), a GRU over the frames and a
    1×1 full-precision head, one logit per frame.  Unlike :func:`vad_gru` the front end has
    a second binary conv, so the GRU reads a binary map computed from a binary map.  The
    reparameterized variants learn the input bands, each conv's width, the GRU's hidden size
    (gated inside the recurrence, sliced to a dense GRU at export) and the head's width."""
    return _conv_gru_vad("vad_crnn", variant, frames, bands, tuple(channels), hidden, beta, bn, first_layer)


def antispoof_cnn(variant="float", frames=200, bands=64, channels=(16, 32, 32), head=32, beta=5.0,
                  bn=None, first_layer=None) -> SeqNet:
    """Bona fide vs spoofed speech: three 3×3 convs with 2×2 max-pools, a global max-pool
    and a dense head; the output is a bona-fide logit."""
    s = _Spec(variant, beta, bn, first_layer)
    layers, c_in = [], 1
    for i, c in enumerate(channels):
        layers += [s.feature_block("conv2d", c_in, c, i == 0, f"conv{i + 1}"), MaxPool("conv2d", 2)]
        c_in = c
    layers += [GlobalMaxPool(), s.head_block("linear", c_in, head, "dense1"),
               s.head_block("linear", head, 1, None, last=True)]
    return SeqNet(layers, s.gates, "image", None, False,
                  s.meta(task="antispoof", arch="antispoof_cnn", variant=variant, frames=frames, bands=bands,
                         output="bona fide logit [1, 1]"), s.quantize_input)


def synthetic_mlp(variant="float", features=16, hidden=32, beta=5.0, bn=None, first_layer=None) -> SeqNet:
    """The case study: a dense model whose input features and hidden units are gated; the
    synthetic task makes only the first k features informative, so the learned input width
    should settle near k."""
    s = _Spec(variant, beta, bn, first_layer)
    in_gate = None
    if s.reparam:
        s.gates["features"] = DynamicWidth(features, k_min=1, dim=-1)
        in_gate = "features"
    layers = [s.feature_block("linear", features, hidden, True, "hidden"),
              s.head_block("linear", hidden, 1, None, last=True)]
    return SeqNet(layers, s.gates, "features", in_gate, False,
                  s.meta(task="synthetic", arch="synthetic_mlp", variant=variant, features=features,
                         output="regression target [1, 1]"), s.quantize_input)


ARCHS = {
    "bam4": quality_bam4, "dnsmos": quality_dnsmos, "vad_tiny": vad_tiny, "vad_gru": vad_gru, "vad_crnn": vad_crnn,
    "antispoof_cnn": antispoof_cnn, "synthetic_mlp": synthetic_mlp,
}
_DEFAULT_ARCH = {"quality": "bam4", "vad": "vad_tiny", "antispoof": "antispoof_cnn", "synthetic": "synthetic_mlp"}


def default_arch(task: str) -> str:
    return _DEFAULT_ARCH[task]


def build(arch: str, variant: str = "float", **kwargs) -> SeqNet:
    """Build a zoo model by arch name (or by task name, which picks the default arch)."""
    arch = _DEFAULT_ARCH.get(arch, arch)
    if arch not in ARCHS:
        raise ValueError(f"unknown model {arch!r}; choose from {', '.join(ARCHS)}")
    return ARCHS[arch](variant=variant, **kwargs)
