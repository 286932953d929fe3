"""Differentiable complexity model: MACs, parameters and bytes as polynomials in the widths.

Closed forms per layer, counted as a profiler counts them (one multiply-accumulate per
weight tap per output position; pooling and activations are comparisons, not MACs):

- Conv2d / Conv1d, k_in → k_out channels, kernel taps t, P output positions:
  MACs = k_in·k_out·t·P, params = k_in·k_out·t + k_out (bias, or the folded threshold)
- Linear: the same with t = P = 1
- GRU (LSTM): per step g·(k_in·h + h·h) MACs with g = 3 (4) gates, params
  g·(k_in·h + h·h + 2h) (PyTorch and ONNX keep two bias vectors); a SeqNet GRU runs one
  step per output frame.
- Residual: its two blocks as above; the skip add is not a MAC.

The widths k are the continuous K of each :class:`DynamicWidth` (or of the layer feeding
it), so every count is a polynomial in the Ks and ``task + α·MACs`` trains them.
BatchNorm is counted as folded (it becomes the bias / threshold).  Bytes count 4 per
float parameter; an int8 layer stores 1 byte per weight plus a float32 scale and a float32
bias/threshold per output channel.
"""
from __future__ import annotations

import torch

from nrqc.training.layer_cost import conv_cost, linear_cost, rnn_cost
from nrqc.training.net import Residual, SeqNet

__all__ = ["conv_cost", "linear_cost", "rnn_cost", "model_cost", "summary", "frames_per_second",
           "activation_peak_bytes"]


def _width(net: SeqNet, name: str | None, full: int, mode: str):
    if name is None or mode == "full":
        return torch.tensor(float(full))
    g = net.gates[name]
    return g.width() if mode == "soft" else torch.tensor(float(g.kept()))


def model_cost(net: SeqNet, mode: str = "soft") -> dict:
    """Totals and per-layer costs of a :class:`SeqNet`.

    mode 'soft': continuous K (differentiable, for the loss); 'kept': ⌈K⌉ (what export
    keeps); 'full': every unit (the model before pruning).
    """
    if mode not in ("soft", "kept", "full"):
        raise ValueError(f"mode must be soft, kept or full, not {mode!r}")
    positions = net.output_positions()
    layers = []
    total = {"macs": torch.tensor(0.0), "params": torch.tensor(0.0), "bytes": torch.tensor(0.0)}
    for (i, b), pos in zip(net.blocks(), positions):
        k_in = _width(net, net.in_gates[i], b.c_in, mode)
        k_out = _width(net, b.gate, b.c_out, mode)
        if b.kind == "gru":  # pos = output frames = recurrence steps
            c = rnn_cost(k_in, k_out, pos, gates=3)
        else:
            c = conv_cost(k_in, k_out, b.kernel_size, pos, b.weight_mode == "int8")
        layers.append({"layer": i, "kind": b.kind, "in": float(k_in.detach()), "out": float(k_out.detach()),
                       **{k: float(torch.as_tensor(v).detach()) for k, v in c.items()}})
        for k in total:
            total[k] = total[k] + c[k]
    return {**total, "layers": layers}


def frames_per_second(net: SeqNet, hop_s: float = 0.01) -> float | None:
    """For frame-level models: frames of input per second of audio (100 at a 10 ms hop)."""
    return 1.0 / hop_s if net.layout != "features" else None


def summary(net: SeqNet, mode: str = "kept") -> dict:
    """Plain numbers for reports and metrics.json."""
    c = model_cost(net, mode)
    out = {"macs": float(c["macs"]), "params": float(c["params"]), "bytes": float(c["bytes"]),
           "widths": {n: (g.kept() if mode == "kept" else float(g.width()) if mode == "soft" else g.n)
                      for n, g in net.gates.items()}}
    if net.layout != "features":
        # MACs for one input window of meta['frames'] frames; per second at a 10 ms hop.
        out["mflops_per_s"] = 2 * out["macs"] / net.meta["frames"] * 100 / 1e6
    return out


def activation_peak_bytes(net: SeqNet) -> int:
    """Largest input + output activation of any layer for one input window, float32
    (the working memory of a layer-by-layer runtime without in-place reuse)."""
    sizes = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: sizes.append(inp[0].numel() + out.numel()))
             for m in net.layers]
    # Inside a residual the skip input stays alive while its second block runs.
    hooks += [r.body[1].register_forward_hook(lambda mod, inp, out: sizes.append(2 * out.numel() + inp[0].numel()))
              for r in net.layers if isinstance(r, Residual)]
    was = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(net.input_shape(1)))
    finally:
        net.train(was)
        for h in hooks:
            h.remove()
    return 4 * max(sizes)
