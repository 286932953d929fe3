"""A sequential network of reparameterizable, binarizable layers.

:class:`SeqNet` is what the model zoo is built from and what the complexity model, the
slicer and the ONNX exporter understand: an input layout, an optional learned number of
input bands, then :class:`Block` (conv1d / conv2d / linear, optional BatchNorm, an
activation, optional learned width), :class:`~nrqc.training.recurrent.GRUBlock` (a GRU
over frames), :class:`Residual` (two blocks + skip add), :class:`MaxPool` and
:class:`GlobalMaxPool` layers.  Widths live in ``net.gates`` (a ModuleDict of
:class:`DynamicWidth`) and blocks refer to them by name, so several blocks can share one K.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nrqc.training.quant import InputQuant, channel_scale, fake_quant_int8
from nrqc.training.recurrent import GRUBlock
from nrqc.training.reparam import DynamicWidth
from nrqc.training.surrogate import Heaviside

LAYOUTS = {
    # [B, frames, bands] -> [B, 1, frames, bands]: 2-D convs over the spectrogram image.
    "image": "[B, frames, bands] as NCHW [B, 1, frames, bands]",
    # [B, frames, bands] -> [B, bands, frames]: 1-D convs over time, bands are channels.
    "bands_as_channels": "[B, frames, bands] transposed to NCL [B, bands, frames]",
    # [B, features]: dense models.
    "features": "[B, features]",
}


class Block(nn.Module):
    """conv/linear → (BatchNorm) → activation → (width gate).

    weight: 'float' or 'int8' (fake-quantized, symmetric per output channel, STE).
    act: 'relu', 'heaviside' ({0,1}), 'sign' ({−1,+1}) or 'none'.
    gate: name of the :class:`DynamicWidth` in ``SeqNet.gates`` over this block's outputs.
    """

    def __init__(self, kind: str, c_in: int, c_out: int, kernel: int = 3, padding: int | None = None,
                 weight: str = "float", act: str = "relu", bn: bool = False, beta: float = 5.0,
                 gate: str | None = None):
        super().__init__()
        if kind not in ("conv1d", "conv2d", "linear"):
            raise ValueError(f"Block kind must be conv1d, conv2d or linear, not {kind!r}")
        if weight not in ("float", "int8"):
            raise ValueError(f"Block weight must be 'float' or 'int8', not {weight!r}")
        if act not in ("relu", "heaviside", "sign", "none"):
            raise ValueError(f"Block act must be relu, heaviside, sign or none, not {act!r}")
        self.kind, self.c_in, self.c_out, self.weight_mode, self.act, self.gate = kind, c_in, c_out, weight, act, gate
        self.kernel = 1 if kind == "linear" else int(kernel)
        self.padding = self.kernel // 2 if padding is None else int(padding)
        if kind == "conv2d":
            self.layer = nn.Conv2d(c_in, c_out, self.kernel, padding=self.padding)
        elif kind == "conv1d":
            self.layer = nn.Conv1d(c_in, c_out, self.kernel, padding=self.padding)
        else:
            self.layer = nn.Linear(c_in, c_out)
        self.bn = None
        if bn:
            self.bn = nn.BatchNorm2d(c_out) if kind == "conv2d" else nn.BatchNorm1d(c_out)
        self.binary = Heaviside(beta, "binary" if act == "heaviside" else "sign") if act in ("heaviside", "sign") else None

    @property
    def kernel_size(self) -> int:
        """Number of taps per input channel (k for conv1d, k² for conv2d, 1 for linear)."""
        return {"conv1d": self.kernel, "conv2d": self.kernel ** 2, "linear": 1}[self.kind]

    def quant_scale(self, in_kept: int | None) -> torch.Tensor:
        """Per-output scale from the weights of the input channels the pruned model keeps,
        so the exported int8 weights are exactly those used here."""
        w = self.layer.weight
        return channel_scale(w[:, :in_kept] if in_kept is not None else w, axis=0)

    def effective_weight(self, in_kept: int | None = None) -> torch.Tensor:
        w = self.layer.weight
        if self.weight_mode == "int8":
            w = fake_quant_int8(w, axis=0, scale=self.quant_scale(in_kept))
        return w

    def pre_activation(self, x: torch.Tensor, in_kept: int | None = None) -> torch.Tensor:
        w, b = self.effective_weight(in_kept), self.layer.bias
        if self.kind == "conv2d":
            y = F.conv2d(x, w, b, padding=self.padding)
        elif self.kind == "conv1d":
            y = F.conv1d(x, w, b, padding=self.padding)
        else:
            y = F.linear(x, w, b)
        return self.bn(y) if self.bn is not None else y

    def forward(self, x, gate: DynamicWidth | None = None, in_kept: int | None = None):
        y = self.pre_activation(x, in_kept)
        if self.act == "relu":
            y = F.relu(y)
        elif self.binary is not None:
            y = self.binary(y)
        return gate(y) if gate is not None else y

    def extra_repr(self):
        return f"{self.kind}, weight={self.weight_mode}, act={self.act}, gate={self.gate}"


class MaxPool(nn.Module):
    def __init__(self, kind: str, k: int = 2):
        super().__init__()
        self.kind, self.k = kind, int(k)

    def forward(self, x):
        return F.max_pool2d(x, self.k) if self.kind == "conv2d" else F.max_pool1d(x, self.k)


class GlobalMaxPool(nn.Module):
    """Max over every spatial axis: [B, C, ...] -> [B, C]."""

    def forward(self, x):
        return x.flatten(2).amax(dim=2)


class Residual(nn.Module):
    """y = act(x + second(first(x))): two blocks and a skip connection.

    The sum is only sliceable if both sides keep the same channels, so ``second`` must
    name the same gate as the layer feeding the residual (one shared K over the residual
    stream; both None without learned widths); ``first`` may have its own gate.  Padding
    must keep the spatial size.  Used with float (ReLU) blocks: the sum of two binary maps
    is not binary.
    """

    def __init__(self, first: Block, second: Block, act: str = "relu"):
        super().__init__()
        if act not in ("relu", "none"):
            raise ValueError(f"Residual act must be relu or none, not {act!r}")
        if second.c_out != first.c_in or second.c_in != first.c_out:
            raise ValueError(f"Residual blocks must map {first.c_in} -> {first.c_out} -> {first.c_in} channels")
        self.body = nn.ModuleList([first, second])
        self.act = act

    @property
    def gate(self) -> str | None:
        return self.body[1].gate

    def forward(self, x, gates: list, kept: list):
        """gates / kept: the output gate module and the input width kept of each body block."""
        y = self.body[0](x, gates[0], kept[0])
        y = self.body[1](y, gates[1], kept[1]) + x
        return F.relu(y) if self.act == "relu" else y


_WEIGHTED = (Block, GRUBlock)


class SeqNet(nn.Module):
    """Sequential model: (input band gate) → (int8 input quantizer) → layout → layers.
    ``meta`` records the task, variant, input frames/bands and what the output means; it
    travels in checkpoints.  ``quantize_input``: the all-integer first layer's per-tensor
    int8 input (:class:`~nrqc.training.quant.InputQuant`, after the band gate, so its scale
    covers the bands the model keeps)."""

    def __init__(self, layers: list[nn.Module], gates: dict[str, DynamicWidth] | None = None,
                 layout: str = "image", input_gate: str | None = None, squeeze_output: bool = False,
                 meta: dict | None = None, quantize_input: bool = False):
        super().__init__()
        self.input_quant = InputQuant() if quantize_input else None
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}")
        self.layers = nn.ModuleList(layers)
        self.gates = nn.ModuleDict(gates or {})
        self.layout = layout
        self.input_gate = input_gate
        self.squeeze_output = squeeze_output
        self.meta = dict(meta or {})
        if input_gate is not None and layout == "image":
            raise ValueError("an input band gate needs layout 'bands_as_channels' or 'features'")
        # Which gate (if any) feeds each weighted layer's input: the previous one's output
        # gate.  Keys: the index in `layers`, or "i.j" for block j of the residual at i.
        self.in_gates: dict = {}
        self._blocks: list = []
        cur = input_gate
        for i, layer in enumerate(self.layers):
            if isinstance(layer, _WEIGHTED):
                self.in_gates[i] = cur
                self._blocks.append((i, layer))
                cur = layer.gate
            elif isinstance(layer, Residual):
                if layer.gate != cur:
                    raise ValueError(f"layer {i}: the residual's second block must share the gate of its input "
                                     f"({cur!r}), not {layer.gate!r}, so that both sides of the sum keep the same units")
                for j, b in enumerate(layer.body):
                    self.in_gates[f"{i}.{j}"] = cur if j == 0 else layer.body[0].gate
                    self._blocks.append((f"{i}.{j}", b))
            else:
                self.in_gates[i] = None
        self._shapes: dict[tuple, list] = {}

    def blocks(self):
        """(key, layer) of every weighted layer (Block, GRUBlock, blocks inside residuals),
        in execution order; ``in_gates[key]`` names the gate of its input."""
        return list(self._blocks)

    def apply_layer(self, i: int, layer: nn.Module, x):
        """Run top-level layer i with its gates (eval: units beyond ⌈K⌉ are zero)."""
        if isinstance(layer, _WEIGHTED):
            return layer(x, self.gate(layer.gate), self.kept(self.in_gates[i]))
        if isinstance(layer, Residual):
            keys = [f"{i}.{j}" for j in range(2)]
            return layer(x, [self.gate(b.gate) for b in layer.body], [self.kept(self.in_gates[k]) for k in keys])
        return layer(x)

    def gate(self, name):
        return self.gates[name] if name is not None else None

    def kept(self, name) -> int | None:
        return self.gates[name].kept() if name is not None else None

    def prepare_input(self, x):
        """[B, frames, bands] (or [B, features]) -> the first layer's input: band gate,
        int8 input quantizer, layout."""
        if self.input_gate is not None:
            x = self.gates[self.input_gate](x)  # over the last axis (bands / features)
        if self.input_quant is not None:
            x = self.input_quant(x)
        if self.layout == "image":
            return x.unsqueeze(1)
        if self.layout == "bands_as_channels":
            return x.transpose(1, 2)
        return x

    def calibrate_input(self, x) -> float | None:
        """Set the input quantizer's scale from training features x over the bands (or
        features) the model keeps now; returns it (None without an input quantizer)."""
        if self.input_quant is None:
            return None
        kept = self.kept(self.input_gate)
        return self.input_quant.calibrate(x[..., :kept] if kept is not None else x)

    def forward(self, x):
        x = self.prepare_input(x)
        for i, layer in enumerate(self.layers):
            x = self.apply_layer(i, layer, x)
        return x.flatten(1) if self.squeeze_output else x

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        if self.layout == "features":
            return (batch, int(self.meta["features"]))
        return (batch, int(self.meta["frames"]), int(self.meta["bands"]))

    def output_positions(self) -> list[int]:
        """Output positions per block (time steps × frequency positions), measured by a dry
        run on the metadata's input shape: the spatial factor of each block's MACs."""
        key = self.input_shape()
        if key not in self._shapes:
            sizes = []
            hooks = [m.register_forward_hook(lambda mod, inp, out: sizes.append(out.shape))
                     for _, m in self.blocks()]
            was_training = self.training
            try:
                self.eval()
                with torch.no_grad():
                    self(torch.zeros(key))
            finally:
                self.train(was_training)
                for h in hooks:
                    h.remove()
            self._shapes[key] = [int(torch.tensor(s[2:]).prod()) if len(s) > 2 else 1 for s in sizes]
        return self._shapes[key]
