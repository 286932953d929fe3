"""Export a :class:`SeqNet` to ONNX following the BAM contract (docs/training.md).

The model is first sliced to ⌈K⌉ units per layer, then written op by op:

- an int8 input (the all-integer first layer, docs/bam-onnx-contract.md section 7):
  `QuantizeLinear(x, s_in, 0 int8)` → `DequantizeLinear` on the graph input, before the
  layout op, with `nrqc.input.<name>.{dtype,scale,zero_point}` in the model metadata;
- a Heaviside after a conv/dense layer with bias b: `Conv`/`MatMul` without bias →
  `Greater(y, T)` → `Cast(to=FLOAT)`, T = −b ([C,1,1] for conv2d, [C,1] for conv1d, [C]
  for dense).  BatchNorm folds into T = mean − beta·sqrt(var+eps)/gamma − b.  The ±1
  variant: `Sign(Sub(y, T))` instead of `Greater` + `Cast`;
- int8 weights: `DequantizeLinear(W_q int8, scale [C_out], zero_point int8 0, axis)`
  feeding the Conv weight (axis 0) or the MatMul weight stored [in, out] (axis 1);
- full-precision layers: float `Conv` (+bias) / `MatMul` + `Add`, then `Relu`;
- `MaxPool`, `GlobalMaxPool` + `Flatten`;
- a GRU (on the NCL map [1, C, T]): `Transpose(perm=[2, 0, 1])` → ONNX `GRU`
  (linear_before_reset=1, PyTorch's form) → `Squeeze(axes=[1])` → `Transpose(perm=[1, 2, 0])`;
- a residual: its two blocks, `Add` of the skip, then `Relu`.
"""
from __future__ import annotations

import numpy as np
import torch

from nrqc.training.net import Block, GlobalMaxPool, MaxPool, Residual, SeqNet
from nrqc.training.recurrent import GRUBlock
from nrqc.training.quant import quantize_int8
from nrqc.training.slicing import slice_net

OPSET = 17


class _Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def init(self, base, array):
        from onnx import numpy_helper

        nm = self.name(base)
        a = np.asarray(array)  # keeps a 0-d scalar 0-d (ascontiguousarray makes it 1-d)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(a) if a.ndim else a, nm))
        return nm

    def op(self, op_type, inputs, base=None, **attrs):
        from onnx import helper

        out = self.name(base or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out + "_node", **attrs))
        return out


def _np(t):
    return t.detach().cpu().numpy().astype(np.float32)


def _fold(block: Block):
    """Weights W (torch, [C_out, ...]), bias b, and per-channel BN (mult, add) such that the
    block's pre-activation is mult·(conv(x, W) + b) + add."""
    w, b = block.layer.weight.detach(), block.layer.bias.detach()
    if block.bn is None:
        return w, b, torch.ones_like(b), torch.zeros_like(b)
    bn = block.bn
    s = torch.sqrt(bn.running_var + bn.eps)
    mult = bn.weight.detach() / s
    add = bn.bias.detach() - bn.running_mean * mult
    return w, b, mult, add


def _weight_input(g: _Graph, block: Block, w: torch.Tensor, sign: torch.Tensor, extra_scale=None) -> str:
    """Weight initializer (float or DequantizeLinear of int8), channels flipped by `sign`.
    `extra_scale` (positive, per output channel) multiplies float weights / int8 scales."""
    shape = [-1] + [1] * (w.dim() - 1)
    if block.weight_mode == "int8":
        q, scale = quantize_int8(w, axis=0, scale=block.quant_scale(None))
        q = (q.to(torch.int32) * sign.reshape(shape).to(torch.int32)).to(torch.int8)  # ±127 stays in range
        if extra_scale is not None:
            scale = scale * extra_scale
        qa = q.numpy()
        axis = 0
        if block.kind == "linear":
            qa, axis = qa.T, 1  # MatMul weight is [in, out]; scales per output unit
        wq = g.init("w_q", qa.astype(np.int8))
        sc = g.init("w_scale", _np(scale))
        zp = g.init("w_zero", np.zeros(scale.shape[0], dtype=np.int8))
        return g.op("DequantizeLinear", [wq, sc, zp], "w_deq", axis=axis)
    wf = w * sign.reshape(shape)
    if extra_scale is not None:
        wf = wf * extra_scale.reshape(shape)
    a = _np(wf)
    return g.init("w", a.T if block.kind == "linear" else a)


def _linear_op(g: _Graph, block: Block, x: str, w: str, bias: str | None) -> str:
    if block.kind == "linear":
        y = g.op("MatMul", [x, w], "matmul")
        return g.op("Add", [y, bias], "add") if bias else y
    k = block.kernel
    attrs = {"kernel_shape": [k, k] if block.kind == "conv2d" else [k],
             "pads": [block.padding] * (4 if block.kind == "conv2d" else 2)}
    return g.op("Conv", [x, w] + ([bias] if bias else []), "conv", **attrs)


def _block(g: _Graph, block: Block, x: str) -> str:
    w, b, mult, add = _fold(block)
    tshape = {"conv2d": (-1, 1, 1), "conv1d": (-1, 1), "linear": (-1,)}[block.kind]
    if block.act in ("heaviside", "sign"):
        # Θ(mult·(Wx + b) + add) = [Wx > −b − add/mult] when mult > 0.  When gamma < 0
        # (mult < 0) the inequality flips: negate that channel's weights and threshold so
        # the op stays Greater:  −Wx > b + add/mult.  mult = 0 makes the output constant
        # Θ(add): weights 0 and threshold −1 (fires) or +1 (never fires).
        sign = torch.where(mult < 0, -1.0, 1.0)
        safe = torch.where(mult == 0, torch.ones_like(mult), mult)
        t = sign * (-b - add / safe)
        dead = mult == 0
        t = torch.where(dead, torch.where(add > 0, -1.0, 1.0), t)
        sign = torch.where(dead, torch.zeros_like(sign), sign)
        y = _linear_op(g, block, x, _weight_input(g, block, w, sign), None)
        thr = g.init("threshold", _np(t).reshape(tshape))
        if block.act == "sign":
            # {−1,+1} as Sign(Sub(y, T)), the ±1 head the compiler's pattern pass recognizes
            # (2·Cast(Greater) − 1 is not).  At an exact tie y = T ONNX gives Sign(0) = 0,
            # PyTorch 2Θ(0) − 1 = −1 (as do nrqc's compiled kernels).
            return g.op("Sign", [g.op("Sub", [y, thr], "sub")], "sign")
        return g.op("Cast", [g.op("Greater", [y, thr], "greater")], "binary", to=1)  # 1 = FLOAT
    # ReLU / no activation: fold BN into the weights (|mult| into int8 scales, its sign into W).
    sign = torch.where(mult < 0, -1.0, 1.0)
    bias = mult * b + add
    wt = _weight_input(g, block, w, sign, extra_scale=mult.abs())
    bshape = (-1,) if block.kind == "linear" else (-1,)
    y = _linear_op(g, block, x, wt, g.init("bias", _np(bias).reshape(bshape)))
    return g.op("Relu", [y], "relu") if block.act == "relu" else y


def _gru(g: _Graph, block: GRUBlock, x: str) -> str:
    """ONNX GRU, layout 0 ([T, B, C]); gates reordered from PyTorch's (r, z, n) to ONNX's
    (z, r, h); linear_before_reset=1 is PyTorch's r ⊙ (W_hn h + b_hn)."""
    h = block.c_out
    w_ih, w_hh, b_ih, b_hh = (_np(t) for t in block.weights())
    order = np.concatenate([np.arange(h, 2 * h), np.arange(0, h), np.arange(2 * h, 3 * h)])
    w = g.init("gru_w", w_ih[order][None])
    r = g.init("gru_r", w_hh[order][None])
    b = g.init("gru_b", np.concatenate([b_ih[order], b_hh[order]])[None])
    seq = g.op("Transpose", [x], "transpose", perm=[2, 0, 1])
    y = g.op("GRU", [seq, w, r, b], "gru", hidden_size=h, linear_before_reset=1)  # [T, 1, B, H]
    y = g.op("Squeeze", [y, g.init("axes", np.array([1], dtype=np.int64))], "squeeze")
    return g.op("Transpose", [y], "transpose", perm=[1, 2, 0])


def _residual(g: _Graph, res: Residual, x: str) -> str:
    y = _block(g, res.body[1], _block(g, res.body[0], x))
    y = g.op("Add", [y, x], "residual")
    return g.op("Relu", [y], "relu") if res.act == "relu" else y


def _quantized_input(g: _Graph, x: str, scale: torch.Tensor) -> str:
    """QuantizeLinear → DequantizeLinear of the input with one scalar scale, zero point int8 0."""
    s = g.init("input_scale", np.array(float(scale), dtype=np.float32))
    zp = g.init("input_zero", np.array(0, dtype=np.int8))
    return g.op("DequantizeLinear", [g.op("QuantizeLinear", [x, s, zp], "input_q"), s, zp], "input_deq")


def _input_quant_metadata(net: SeqNet, input_name: str) -> dict:
    """nrqc.input.<name>.{dtype,scale,zero_point}: how a caller feeds int8 input directly."""
    if net.input_quant is None:
        return {}
    key = f"nrqc.input.{input_name}"
    # repr of the float32 value widened to float64: parses back to the same float32.
    return {f"{key}.dtype": "int8", f"{key}.scale": repr(float(np.float32(float(net.input_quant.scale)))),
            f"{key}.zero_point": "0"}


def _input_quant_summary(net: SeqNet) -> dict:
    if net.input_quant is None:
        return {"dtype": "float32"}
    return {"dtype": "float32", "quantized_to": "int8", "scale": float(net.input_quant.scale), "zero_point": 0}


def _frontend_json(net: SeqNet) -> str | None:
    """How to compute the input: the log-mel frontend, and which of its bands are kept."""
    if net.layout == "features":
        return None
    import json

    from nrqc.data.features import FRONTEND

    return json.dumps({**FRONTEND, "n_mels": int(net.meta.get("input_bands_of", net.meta["bands"])),
                       "bands_kept": int(net.meta["bands"]), "frames": int(net.meta["frames"])})


def to_onnx(net: SeqNet, input_name: str | None = None):
    """Slice `net` and build the ONNX ModelProto; returns (model, sliced_net)."""
    import onnx
    from onnx import TensorProto, helper

    small = slice_net(net).eval()
    input_name = input_name or ("features" if small.layout == "features" else "logmel")
    g = _Graph()
    x = input_name
    if small.input_quant is not None:
        x = _quantized_input(g, x, small.input_quant.scale)
    if small.layout == "image":
        x = g.op("Unsqueeze", [x, g.init("axes", np.array([1], dtype=np.int64))], "unsqueeze")
    elif small.layout == "bands_as_channels":
        x = g.op("Transpose", [x], "transpose", perm=[0, 2, 1])
    for layer in small.layers:
        if isinstance(layer, Block):
            x = _block(g, layer, x)
        elif isinstance(layer, GRUBlock):
            x = _gru(g, layer, x)
        elif isinstance(layer, Residual):
            x = _residual(g, layer, x)
        elif isinstance(layer, MaxPool):
            k = [layer.k, layer.k] if layer.kind == "conv2d" else [layer.k]
            x = g.op("MaxPool", [x], "maxpool", kernel_shape=k, strides=k)
        elif isinstance(layer, GlobalMaxPool):
            x = g.op("Flatten", [g.op("GlobalMaxPool", [x], "globalmaxpool")], "flatten", axis=1)
        else:
            raise TypeError(f"cannot export layer {type(layer).__name__}")
    if small.squeeze_output:
        x = g.op("Flatten", [x], "flatten", axis=1)
    # Rename the last value to the contract's output name.
    g.nodes[-1].output[0] = "output"
    with torch.no_grad():
        out_shape = list(small(torch.zeros(small.input_shape(1))).shape)
    graph = helper.make_graph(
        g.nodes, f"nrqc_{small.meta.get('task', 'model')}_{small.meta.get('variant', '')}",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(small.input_shape(1)))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nrqc")
    model.ir_version = 8
    for k, v in {"nrqc.task": small.meta.get("task"), "nrqc.arch": small.meta.get("arch"),
                 "nrqc.variant": small.meta.get("variant"), "nrqc.input_layout": small.layout,
                 "nrqc.input_shape": ",".join(map(str, small.input_shape(1))),
                 "nrqc.output": small.meta.get("output"), "nrqc.first_layer": small.meta.get("first_layer"),
                 "nrqc.frontend": _frontend_json(small), **_input_quant_metadata(small, input_name)}.items():
        if v is not None:
            model.metadata_props.add(key=k, value=str(v))
    onnx.checker.check_model(model, full_check=True)
    return model, small


def run_onnx(model, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]


def describe(net: SeqNet, mode: str) -> dict:
    from nrqc.training.complexity import activation_peak_bytes, model_cost

    c = model_cost(net, mode)
    widths = {}
    for i, b in net.blocks():
        widths[f"layer{i}.{b.kind}"] = int(round(c["layers"][[l["layer"] for l in c["layers"]].index(i)]["out"]))
    d = {"input_shape": list(net.input_shape(1)), "widths": widths, "macs": int(round(float(c["macs"]))),
         "params": int(round(float(c["params"]))), "weight_bytes": int(round(float(c["bytes"]))),
         "activation_peak_bytes": activation_peak_bytes(net)}
    if net.layout != "features":
        d["mflops_per_s"] = round(2 * d["macs"] / net.meta["frames"] * 100 / 1e6, 4)
    return d


def parity(net: SeqNet, model, trials: int = 4, seed: int = 0) -> dict:
    """onnxruntime against PyTorch (eval) on random log-mel-like inputs.

    Float models agree to float rounding.  Binary models compute Θ(Wx + b) in PyTorch and
    Wx > −b in onnxruntime with a different summation order, so a pre-activation within
    ~1e-6 of its threshold can flip one bit; we report the fraction of output values that
    agree to 1e-4 instead of demanding all of them."""
    from nrqc.training.slicing import slice_input

    gen = torch.Generator().manual_seed(seed)
    worst, agree, total = 0.0, 0, 0
    for _ in range(trials):
        x = torch.randn(net.input_shape(1), generator=gen) * 2.0
        with torch.no_grad():
            ref = net.eval()(x).numpy()
        got = run_onnx(model, slice_input(net, x).numpy())
        diff = np.abs(ref - got)
        worst = max(worst, float(diff.max()))
        agree += int((diff <= 1e-4 * (1 + np.abs(ref))).sum())
        total += diff.size
    return {"trials": trials, "max_abs_diff": worst, "agree_fraction": agree / total}


def with_window(net: SeqNet, frames: int, source: str) -> SeqNet:
    """`net` exported for windows of `frames` frames.  Only frame-level models over time
    (layout bands_as_channels: convs with 'same' padding, GRU, 1×1 head, one output per
    frame) run unchanged on another window length; the weights are the same, and a shorter
    window needs proportionally less working memory (e.g. a recurrent layer's projections
    of every step)."""
    from nrqc.errors import NrqcError

    if net.layout != "bands_as_channels":
        raise NrqcError(f"{source}: --frames needs a frame-level model over time (layout bands_as_channels), "
                        f"not a {net.meta.get('arch')} model (layout {net.layout})")
    if frames < 1:
        raise NrqcError(f"--frames must be >= 1, not {frames}")
    net.meta["frames"] = int(frames)
    return net


def export_checkpoint(checkpoint: str, out: str, check: bool = True, frames: int | None = None) -> dict:
    """Slice, fold and write `out` atomically; returns the before/after summary.  `frames`:
    export for another window length (see :func:`with_window`)."""
    import os
    from pathlib import Path

    import onnx

    from nrqc.errors import CheckFailed
    from nrqc.training.checkpoint import load_checkpoint, model_from_checkpoint

    state = load_checkpoint(checkpoint)
    net = model_from_checkpoint(state)
    if frames is not None:
        net = with_window(net, frames, str(checkpoint))
    model, small = to_onnx(net)
    summary = {"checkpoint": str(checkpoint), "onnx": str(out), "task": net.meta.get("task"),
               "variant": net.meta.get("variant"), "opset": OPSET,
               "input": {"name": model.graph.input[0].name, "shape": list(small.input_shape(1)),
                         "layout": small.layout, **_input_quant_summary(small)},
               "output": {"name": "output", "meaning": net.meta.get("output")},
               "first_layer": net.meta.get("first_layer", "float"),
               "before": describe(net, "full"), "after": describe(small, "full")}
    if check:
        p = parity(net, model)
        summary["parity"] = p
        binary = any(b.act in ("heaviside", "sign") for _, b in small.blocks())
        if (not binary and p["agree_fraction"] < 1.0) or p["agree_fraction"] < 0.95:
            raise CheckFailed(f"exported '{out}' disagrees with the PyTorch model: max |diff| "
                              f"{p['max_abs_diff']:.3g}, {100 * p['agree_fraction']:.1f}% of outputs agree")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return summary
