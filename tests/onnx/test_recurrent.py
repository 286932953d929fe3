"""ONNX LSTM / GRU / RNN (nrqc/onnx_recurrent.py): every variant compiled and run from
disk in a fresh process against onnxruntime.

Tolerance: atol 1e-5 + rtol 1e-5 (float32; the recurrence sums in another order than
onnxruntime's MLAS, the measured worst is ~1e-6 over 100 steps).

Many variants sit in one model (one node each, every output a graph output), so one
compile covers them and the multi-output path is exercised too. onnxruntime refuses
layout 1 ("Batchwise recurrent operations are not supported"), so layout-1 nodes are
checked against the same node in layout 0 with its inputs and outputs transposed.
"""
from __future__ import annotations

import itertools
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nrqc.compiler import CompileOptions, compile_model
from nrqc.errors import NrqcError
from nrqc.fresh_run import run_in_fresh_process
from nrqc.reference import run_onnxruntime

TOL = 1e-5
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent_node(op, tag, direction, *, T, B, I, H, init=False, layout=0, lbr=0, peep=False, clip=None,
                   input_forget=False, seed=0, x="X"):
    """(node, initializers, extra graph inputs, outputs [(name, shape)]) of one recurrent node
    (no node name, as onnx.helper writers leave it)."""
    rng = np.random.default_rng(seed)
    g, D = GATES[op], 2 if direction == "bidirectional" else 1
    inits = [numpy_helper.from_array((rng.standard_normal((D, g * H, I)) * 0.5).astype(np.float32), f"{tag}_W"),
             numpy_helper.from_array((rng.standard_normal((D, g * H, H)) * 0.5).astype(np.float32), f"{tag}_R"),
             numpy_helper.from_array((rng.standard_normal((D, 2 * g * H)) * 0.5).astype(np.float32), f"{tag}_B")]
    names = [x, f"{tag}_W", f"{tag}_R", f"{tag}_B", ""]
    state = [D, B, H] if layout == 0 else [B, D, H]
    extra = []
    if init:
        extra.append((f"{tag}_h0", state))
        names.append(f"{tag}_h0")
        if op == "LSTM":
            extra.append((f"{tag}_c0", state))
            names.append(f"{tag}_c0")
    if peep:
        names += [""] * (7 - len(names))
        inits.append(numpy_helper.from_array(rng.standard_normal((D, 3 * H)).astype(np.float32), f"{tag}_P"))
        names.append(f"{tag}_P")
    attrs = {"hidden_size": H, "direction": direction}
    if layout:
        attrs["layout"] = 1
    if op == "GRU":
        attrs["linear_before_reset"] = lbr
    if clip is not None:
        attrs["clip"] = clip
    if input_forget:
        attrs["input_forget"] = 1
    outs = [(f"{tag}_Y", [T, D, B, H] if layout == 0 else [B, T, D, H]), (f"{tag}_Yh", state)]
    if op == "LSTM":
        outs.append((f"{tag}_Yc", state))
    return helper.make_node(op, names, [n for n, _ in outs], **attrs), inits, extra, outs


def recurrent_model(specs, *, T, B, I, opset=14):
    """One model, one node per spec (kwargs of recurrent_node), all reading X."""
    nodes, inits, inputs, outputs = [], [], [], []
    layout = specs[0].get("layout", 0)
    for k, spec in enumerate(specs):
        node, i, extra, outs = recurrent_node(tag=f"n{k}", T=T, B=B, I=I, seed=k, **spec)
        nodes.append(node)
        inits += i
        inputs += extra
        outputs += outs
    x_shape = [T, B, I] if layout == 0 else [B, T, I]
    graph = helper.make_graph(
        nodes, "recurrent", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
        + [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def feeds_of(model, seed=1):
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input if i.name not in inits}


LAYOUT0 = ([{"op": "LSTM", "direction": d, "init": i} for d, i in
            itertools.product(("forward", "reverse", "bidirectional"), (False, True))]
           + [{"op": "LSTM", "direction": "forward", "init": True, "peep": True, "clip": 0.7},
              {"op": "LSTM", "direction": "bidirectional", "input_forget": True}]
           + [{"op": "GRU", "direction": d, "init": i, "lbr": lbr} for d, i, lbr in
              itertools.product(("forward", "reverse", "bidirectional"), (False, True), (0, 1))]
           + [{"op": "GRU", "direction": "forward", "lbr": 1, "clip": 0.5},
              {"op": "RNN", "direction": "forward", "init": True},
              {"op": "RNN", "direction": "bidirectional"}])


def _compile(tmp_path, model, target="x86", **opts):
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    out = compile_model(path, target, tmp_path / f"out-{target}",
                        CompileOptions(atol=TOL, rtol=TOL, **opts), log=lambda *a: None)
    import json

    return out, json.loads((out / "manifest.json").read_text())


# the default suite's sample: every op, both directions, both GRU forms, initial states,
# peepholes with clip (the full LAYOUT0 list: -m slow)
SAMPLE = [{"op": "LSTM", "direction": "bidirectional", "init": True, "peep": True, "clip": 0.7},
          {"op": "GRU", "direction": "bidirectional", "init": True, "lbr": 0},
          {"op": "GRU", "direction": "reverse", "lbr": 1},
          {"op": "RNN", "direction": "forward", "init": True}]


def _check_variants(tmp_path, specs, target="x86", T=5, B=2, I=3, H=4):
    """The specs in one model: the compile's check (the artifact from disk in a fresh process,
    or on the emulated board, against onnxruntime) passes within TOL; each node is one
    recurrence kernel per direction."""
    model = recurrent_model([{**s, "H": H} for s in specs], T=T, B=B, I=I)
    out, manifest = _compile(tmp_path, model, target)
    check = manifest["check"]
    assert check["ran"] and check["passed"] and check["max_abs_error"] < TOL, check["summary"]
    assert len(check["outputs"]) == len(model.graph.output)
    kernels = [(layer["op"], layer["kernel"] or "") for layer in manifest["layers"]]
    assert [op for op, _ in kernels] == [s["op"] for s in specs]
    if target == "x86":
        assert all(k.startswith(f"tvm:{op.lower()}_scan") for op, k in kernels), kernels


def test_recurrent_sample_x86(tmp_path):
    """The float sample and the int8-weight sample in one model (one compile): H = 16, so
    the gate loops run in vectors (16 float lanes on AVX-512, 2 x 8 on AVX2)."""
    _check_int8(tmp_path, "x86", H=16, float_specs=SAMPLE)


@pytest.mark.slow
def test_every_variant_layout0_x86(tmp_path):
    """22 LSTM/GRU/RNN variants (directions, initial states, linear_before_reset, peepholes,
    clip, input_forget), batch 2, 7 steps."""
    _check_variants(tmp_path, LAYOUT0, T=7, I=5, H=6)


@pytest.mark.slow
def test_layout1_against_layout0(tmp_path):
    """Layout 1 ([B, T, I], states [B, D, H]): the artifact run from disk equals onnxruntime
    on the same nodes in layout 0 with inputs and outputs transposed."""
    specs = [{"op": "LSTM", "direction": "bidirectional", "init": True, "H": 4},
             {"op": "GRU", "direction": "reverse", "init": True, "lbr": 1, "H": 4},
             {"op": "GRU", "direction": "forward", "lbr": 0, "H": 4}]
    T, B, I = 5, 3, 4
    m1 = recurrent_model([{**s, "layout": 1} for s in specs], T=T, B=B, I=I)
    m0 = recurrent_model(specs, T=T, B=B, I=I)
    feeds1 = feeds_of(m1)
    feeds0 = {k: v.transpose(1, 0, 2) for k, v in feeds1.items()}
    path0 = tmp_path / "layout0.onnx"
    onnx.save(m0, str(path0))
    ref = [r.transpose(2, 0, 1, 3) if r.ndim == 4 else r.transpose(1, 0, 2) for r in run_onnxruntime(path0, feeds0)]
    out, manifest = _compile(tmp_path, m1, check=False)
    got = run_in_fresh_process(out, list(feeds1), feeds1, [o.name for o in m1.graph.output])
    for o, g, r in zip(m1.graph.output, got, ref):
        assert g.shape == r.shape, o.name
        np.testing.assert_allclose(g, r, atol=TOL, rtol=TOL, err_msg=o.name)


@pytest.mark.slow
def test_zoo_vad_gru_compiles(tmp_path):
    """The zoo's vad_gru (binary conv front end + GRU over 100 frames), exported by nrqc's
    own exporter, compiles for x86 and passes its check."""
    from nrqc.models import build
    from nrqc.training.onnx_export import to_onnx

    net = build("vad_gru", "float").eval()
    model, _ = to_onnx(net)
    assert "GRU" in [n.op_type for n in model.graph.node]
    out, manifest = _compile(tmp_path, model)
    assert manifest["check"]["passed"], manifest["check"]["summary"]
    assert any(layer["kernel"] == "tvm:gru_scan" for layer in manifest["layers"])


def test_refusals_name_the_node(tmp_path):
    node, inits, _, outs = recurrent_node("GRU", "g", "forward", T=3, B=1, I=2, H=2)
    w = inits.pop(0)  # W as a graph input: not a constant
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 1, 2]),
                                            helper.make_tensor_value_info(w.name, TensorProto.FLOAT, list(w.dims))],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outs], inits)
    path = tmp_path / "w_input.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    with pytest.raises(NrqcError, match=r"w_input.onnx: GRU node 'g_Y' takes its input 1 \('g_W'\)"):
        compile_model(path, "x86", tmp_path / "o", CompileOptions(check=False), log=lambda *a: None)

    node, inits, _, outs = recurrent_node("LSTM", "l", "forward", T=3, B=1, I=2, H=2)
    node.attribute.append(helper.make_attribute("activations", ["HardSigmoid", "Tanh", "Tanh"]))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 1, 2])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outs], inits)
    path = tmp_path / "act.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    with pytest.raises(NrqcError, match="LSTM node 'l_Y': activation HardSigmoid is not supported"):
        compile_model(path, "x86", tmp_path / "o2", CompileOptions(check=False), log=lambda *a: None)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["arm_cpu", "cortex-m7"])
def test_variants_on_boards(tmp_path, target):
    """The sample built for the emulated Pi (cortex-a72) and a Cortex-M7 firmware in QEMU,
    the board's outputs checked against onnxruntime."""
    _check_variants(tmp_path, SAMPLE, target, B=1)


# ----------------------------------------------------------------------- int8 weights


def quantize_weights(model, forms):
    """The model with W and R of node k quantized as forms[k] says: (dtype, granularity)
    with granularity "tensor" (scalar scale), "direction" (axis 0) or "row" (axis 1, per
    gate row), uint8 with a zero point of 128 + k. They reach the node through
    DequantizeLinear, as a QDQ exporter writes them; onnxruntime runs the same file."""
    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for k, node in enumerate(model.graph.node):
        if forms[k] is None:  # left float
            continue
        dtype, gran = forms[k]
        for slot in (1, 2):
            w = numpy_helper.to_array(inits[node.input[slot]])
            axis = {"tensor": None, "direction": 0, "row": 1}[gran]
            amax = np.abs(w).max() if axis is None else np.abs(w).max(axis=tuple(a for a in (0, 1, 2) if a != axis))
            scale = (amax / 127).astype(np.float32)
            shape = [1, 1, 1]
            if axis is not None:
                shape[axis] = -1
            zp = np.int64(0 if dtype == "int8" else 128 + k)
            q = np.clip(np.round(w / scale.reshape(shape)) + zp, *((-127, 127) if dtype == "int8" else (0, 255)))
            q = q.astype(dtype)
            name = node.input[slot]
            zp_arr = np.full(scale.shape, zp, dtype)
            model.graph.initializer.remove(inits[name])
            model.graph.initializer.extend([numpy_helper.from_array(q, name + "_q"),
                                            numpy_helper.from_array(scale, name + "_s"),
                                            numpy_helper.from_array(zp_arr, name + "_zp")])
            attrs = {} if axis is None else {"axis": axis}
            nodes.append(helper.make_node("DequantizeLinear", [name + "_q", name + "_s", name + "_zp"], [name], **attrs))
    rest = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + rest)
    return model


INT8_SAMPLE = [({"op": "LSTM", "direction": "bidirectional", "init": True, "peep": True}, ("int8", "row")),
               ({"op": "GRU", "direction": "forward", "init": True, "lbr": 0}, ("uint8", "tensor")),
               ({"op": "GRU", "direction": "bidirectional", "lbr": 1}, ("int8", "direction"))]


def _check_int8(tmp_path, target, T=5, B=2, I=3, H=4, float_specs=()):
    """int8 / uint8 weights through DequantizeLinear (per row, per tensor with a zero point,
    per direction), beside float nodes `float_specs`: the artifact, from disk or on the board,
    matches onnxruntime on the same file within TOL, each node is one recurrence kernel per
    direction, and the recurrent weights stay 8-bit: the report's weights hold every W and
    R value of the int8 nodes in 8 bits (DequantizeLinear was not folded into floats)."""
    specs = list(float_specs) + [s for s, _ in INT8_SAMPLE]
    forms = [None] * len(float_specs) + [f for _, f in INT8_SAMPLE]
    model = quantize_weights(recurrent_model([{**s, "H": H} for s in specs], T=T, B=B, I=I), forms)
    onnx.checker.check_model(model)
    out, manifest = _compile(tmp_path, model, target)
    check = manifest["check"]
    assert check["ran"] and check["passed"] and check["max_abs_error"] < TOL, check["summary"]
    assert len(check["outputs"]) == len(model.graph.output)
    kernels = [(layer["op"], layer["kernel"] or "") for layer in manifest["layers"]]
    assert [op for op, _ in kernels] == [s["op"] for s in specs]
    if target == "x86":
        assert all(k.startswith(f"tvm:{op.lower()}_scan") for op, k in kernels), kernels
    n8 = sum(GATES[s["op"]] * H * (I + H) * (2 if s["direction"] == "bidirectional" else 1) for s, _ in INT8_SAMPLE)
    line = next(ln for ln in (out / "report.txt").read_text().splitlines() if ln.strip().startswith("weights:"))
    kib = {d: float(v) for d, v in re.findall(r"\b(u?int8|float32) ([0-9.]+) KiB", line)}
    assert kib.get("int8", 0) + kib.get("uint8", 0) >= n8 / 1024 * 0.99, line


@pytest.mark.slow
@pytest.mark.parametrize("target", ["arm_cpu", "cortex-m7"])
def test_int8_weights_on_boards(tmp_path, target):
    _check_int8(tmp_path, target, B=1)


def test_int8_refusals_name_the_node(tmp_path):
    """Per-input-column scales (axis 2) cannot leave the sum: refused in one line naming
    the node; onnxruntime's quantize_dynamic form (com.microsoft DynamicQuantizeLSTM) too."""
    model = quantize_weights(recurrent_model([{"op": "GRU", "direction": "forward", "H": 2}], T=3, B=1, I=2),
                             [("int8", "tensor")])
    dq = model.graph.node[0]
    scale = next(i for i in model.graph.initializer if i.name == dq.input[1])
    zp = next(i for i in model.graph.initializer if i.name == dq.input[2])
    scale.CopyFrom(numpy_helper.from_array(np.full(2, 0.01, np.float32), scale.name))
    zp.CopyFrom(numpy_helper.from_array(np.zeros(2, np.int8), zp.name))
    dq.attribute.append(helper.make_attribute("axis", 2))
    path = tmp_path / "axis2.onnx"
    onnx.save(model, str(path))
    with pytest.raises(NrqcError, match=r"GRU node 'n0_Y' takes its input 1 \('n0_W'\) from DequantizeLinear with "
                                        r"per-input-column scales"):
        compile_model(path, "x86", tmp_path / "o", CompileOptions(check=False), log=lambda *a: None)

    node, inits, _, outs = recurrent_node("LSTM", "l", "forward", T=3, B=1, I=2, H=2)
    dyn = helper.make_node("DynamicQuantizeLSTM", list(node.input), list(node.output), domain="com.microsoft",
                           name="lstm_q")
    graph = helper.make_graph([dyn], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 1, 2])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outs], inits)
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14),
                                                       helper.make_opsetid("com.microsoft", 1)]), str(path))
    with pytest.raises(NrqcError, match="com.microsoft::DynamicQuantizeLSTM at node 'lstm_q': onnxruntime's "
                                        "quantize_dynamic writes it"):
        compile_model(path, "x86", tmp_path / "o2", CompileOptions(check=False), log=lambda *a: None)
