"""The manifest's layer entry as a typed record: the JSON it writes (keys and order as the
manifest schema has them, optional keys only once set) and no free-form keys."""
from __future__ import annotations

import json

import pytest


def _record():
    from nrqc.layer_table import LayerRecord

    return LayerRecord(name="conv0", onnx_node={"index": 0, "output": "c"}, op="Conv", weight_bits=8, macs=1728,
                       output_shape=[1, 4, 16, 20])


def test_record_writes_the_manifest_entry_keys_in_schema_order():
    layer = _record()
    assert list(json.loads(json.dumps(layer))) == [
        "name", "onnx_node", "op", "kernel", "act_bits", "weight_bits", "macs", "output_shape",
        "multiplications_replaced", "float_reason"]
    layer.kernel, layer.act_bits, layer.multiplications_replaced = "nrqc:nrqc_bconv_0", 1, 1728
    layer.strategy = {"strategy": "and", "method": "rule"}
    layer.fused_into = "conv1"
    assert layer.to_json() == {
        "name": "conv0", "onnx_node": {"index": 0, "output": "c"}, "op": "Conv", "kernel": "nrqc:nrqc_bconv_0",
        "act_bits": 1, "weight_bits": 8, "macs": 1728, "output_shape": [1, 4, 16, 20],
        "multiplications_replaced": 1728, "float_reason": None,
        "strategy": {"strategy": "and", "method": "rule"}, "fused_into": "conv1"}
    assert list(layer.to_json())[-2:] == ["strategy", "fused_into"]
    layer.fused_into = None  # an optional field set back to None leaves the entry
    assert "fused_into" not in layer.to_json() and layer.fused_into is None


def test_record_refuses_free_form_keys_and_copies_by_fields():
    import copy

    layer = _record()
    for write in (lambda: layer.__setitem__("kernel_name", "x"), lambda: layer.update(kernel="x"),
                  lambda: layer.setdefault("extra", 1)):
        with pytest.raises(TypeError, match="set a field"):
            write()
    layer.accumulator = {"dtype": "int32", "worst_case_abs": 900}
    twin = copy.deepcopy(layer)
    assert twin.to_json() == layer.to_json() and twin.accumulator is not layer.accumulator
