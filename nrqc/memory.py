"""Memory of a compiled model as a device holds it: weights, activations and the input at
its real width.

The manifest's `peak_activation_bytes` counts the model's input and output tensors at the
dtype the artifact's `main` takes (float32 log-mel for a binary speech model). A model
that quantizes its input itself (`QuantizeLinear` as the input's only use, the all-integer
first layer of docs/bam-onnx-contract.md section 7) can be handed the int8 tensor
directly: a device that computes its own features then holds 1 byte per input element,
not 4. This module counts that:

    weights      manifest `weights_bytes` (as the chosen kernels store them)
    activations  the static memory plan + the largest kernel scratch + the outputs
                 (manifest `memory_plan`: what the compiled artifact allocates; the
                 `main_int8` entry point's when the input is counted quantized)
    input        every input's elements x its real width (1 byte when quantized to int8)
    total        weights + activations + input

and the ratio of two such totals (`nrqc profile --against`, bench/bench_memory.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

_QUANT_WIDTH = {"int8": 1, "uint8": 1}


def quantized_inputs(manifest: dict) -> dict[str, dict] | None:
    """{input name: {dtype, scale, zero_point}} of the inputs the model quantizes itself;
    from the manifest when the compile recorded them (`quantized_inputs`), else read from
    the source ONNX graph. None when neither is available (the source model is gone)."""
    if "quantized_inputs" in manifest:
        return dict(manifest["quantized_inputs"])
    src = manifest.get("source_model")
    if not src or not Path(src).is_file():
        return None
    import onnx

    return quantized_graph_inputs(onnx.load(src, load_external_data=False))


def quantized_graph_inputs(model) -> dict[str, dict]:
    """Graph inputs whose only consumer is a QuantizeLinear with a scalar constant scale and
    an int8/uint8 scalar zero point (found by structure, never by node or tensor name)."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    inits = {i.name for i in model.graph.initializer}
    found = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        users = [n for n in model.graph.node if inp.name in n.input]
        if len(users) != 1 or users[0].op_type != "QuantizeLinear" or users[0].input[0] != inp.name:
            continue
        q = users[0]
        scale = consts.get(q.input[1]) if len(q.input) > 1 else None
        zp = consts.get(q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
        if scale is None or zp is None or scale.size != 1 or zp.size != 1 or str(zp.dtype) not in _QUANT_WIDTH:
            continue
        found[inp.name] = {"dtype": str(zp.dtype), "scale": float(scale.reshape(-1)[0]),
                           "zero_point": int(zp.reshape(-1)[0])}
    return found


def _nbytes(spec: dict, dtype: str | None = None) -> int:
    return int(np.prod(spec["shape"], dtype=np.int64)) * np.dtype(dtype or spec["dtype"]).itemsize


def model_memory(manifest: dict) -> dict:
    """weights / activations / input (real width) / total bytes of a compiled model. When an
    input is counted at its quantized width, the activations are those of the entry point
    that takes it quantized (`main_int8`'s plan and kernels, as such a device runs it)."""
    plan = manifest.get("memory_plan") or {}
    quant = quantized_inputs(manifest)
    int8_entry = (manifest.get("int8_input") or {}).get("entry_point", "main_int8")
    entry = "main"
    if quant and int8_entry in (plan.get("entry_points") or {}):
        plan, entry = plan["entry_points"][int8_entry], int8_entry
    inputs = []
    for spec in manifest["inputs"]:
        q = (quant or {}).get(spec["name"])
        inputs.append({"name": spec["name"], "dtype": q["dtype"] if q else spec["dtype"],
                       "bytes": _nbytes(spec, q["dtype"] if q else None),
                       "as_given_bytes": _nbytes(spec), "quantized_by_model": q is not None})
    outputs = sum(_nbytes(s) for s in manifest["outputs"])
    activations = int(plan.get("planned_storage_bytes", 0) + plan.get("max_kernel_scratch_bytes", 0) + outputs)
    input_bytes = sum(i["bytes"] for i in inputs)
    out = {"weights_bytes": int(manifest["weights_bytes"]), "activation_bytes": activations,
           "input_bytes": int(input_bytes), "total_bytes": int(manifest["weights_bytes"]) + activations + input_bytes,
           "inputs": inputs, "entry_point": entry}
    if quant is None:
        out["input_note"] = "source model not found: inputs counted at the width the artifact takes"
    return out


def reduction(mine: dict, other: dict) -> dict:
    """other / mine for each figure of two model_memory() results."""
    return {k: (other[k] / mine[k] if mine[k] else None)
            for k in ("weights_bytes", "activation_bytes", "input_bytes", "total_bytes")}


def format_rows(mine: dict, other: dict, kb) -> list[str]:
    """Table rows (this, other, other/this) for `nrqc profile --against`."""
    r = reduction(mine, other)
    rows = ["  device memory, input at its real width (int8 when the model quantizes it):"]
    for label, key in (("weights", "weights_bytes"), ("activations", "activation_bytes"),
                       ("input", "input_bytes"), ("total", "total_bytes")):
        ratio = f"{r[key]:.1f}x" if r[key] else "-"
        rows.append(f"  {label:<18}{kb(mine[key]):>12}{kb(other[key]):>12}{ratio:>12}")
    for m, who in ((mine, "this"), (other, "other")):
        q = [i for i in m["inputs"] if i["quantized_by_model"]]
        if q:
            rows.append(f"  ({who}: " + ", ".join(f"{i['name']} {i['dtype']}, {i['as_given_bytes']:,} B as float"
                                                   for i in q) + ")")
        if m.get("input_note"):
            rows.append(f"  ({who}: {m['input_note']})")
    return rows
