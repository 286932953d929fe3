"""The int8-input entry point (`main_int8`): moved to nrqc.passes.binary_int8_entry, shared by
every back end (the TVM-library ones build it after the binary rewrite, with the int8 conv
kernels reading the quantized input). Re-exported here for the Cortex-M back end."""
from __future__ import annotations

from nrqc.passes.binary_int8_entry import INT8_FUNC, QuantizedInput, find_quantized_input, quantize_like_onnx  # noqa: F401
