"""The binary passes' shared state: what BinaryPatterns found (one LayerPlan per weighted
layer, with its Heaviside/Sign head), what BinaryThresholds folded into it, and what
BinaryRewrite built (the kernels and how to rebuild a producer with a pool fused in, for
BinaryFusePack). It lives on the compile context as `ctx.binary`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from nrqc.layer_table import LayerRecord


@dataclasses.dataclass
class Head:
    var: Any  # the {0,1} / {-1,+1} float map the model computes
    pre: Any  # the compared value
    threshold: np.ndarray  # per channel (broadcast), on pre
    strict: bool
    flipped: bool  # comparison was T > pre (i.e. pre < T)
    encoding: str  # "01" or "pm1"


@dataclasses.dataclass
class InputQuant:
    """A layer whose input is DequantizeLinear(q) with scalar scale and zero point (the
    all-integer first layer): q is `src` quantized by the model (src float, `fused`: the
    QuantizeLinear is fused into the integer kernel's load) or an int8/uint8 tensor itself,
    read through `layout` (reshape / expand_dims / permute_dims between the DequantizeLinear
    and the layer)."""

    src: Any  # the Relax var the kernel reads
    src_shape: tuple[int, ...]
    src_perm: tuple[int, ...] | None  # permute_dims axes applied to src before the reshape
    src_dtype: str  # "float32" (fused quantize) | "int8" | "uint8"
    q_dtype: str  # "int8" | "uint8"
    scale: float
    zero_point: int


@dataclasses.dataclass
class LayerPlan:
    layer: LayerRecord | None  # the layer's manifest entry
    core: Any  # Relax var bound to the conv/matmul
    kind: str  # conv2d | conv1d | matmul
    x: Any  # input var
    weight: np.ndarray  # folded float weight (OIHW / OIW / [K, O])
    attrs: dict
    head: Head | None = None
    affine: tuple[np.ndarray, np.ndarray] | None = None  # pre = M * core + K per channel
    weights: str = "float"  # int8 | binary | float
    wq: np.ndarray | None = None  # integer weights, same layout as `weight`
    scale: np.ndarray | None = None  # per output channel
    reason: str | None = None  # why it cannot become a binary layer (if so)
    input_quant: InputQuant | None = None  # int8/uint8 input (BinaryPatterns)
    input_quant_reason: str | None = None  # its input is Q/DQ'd, but not in a form the int8 kernels take
    # filled by BinaryThresholds
    sigma: np.ndarray | None = None
    t: np.ndarray | None = None
    accumulator: dict | None = None  # the manifest's "accumulator" record of the layer
    negative_scale_channels: int = 0
    constant_channels: int = 0

    @property
    def c_out(self) -> int:
        return int(self.weight.shape[1] if self.kind == "matmul" else self.weight.shape[0])


@dataclasses.dataclass
class BinaryState:
    plan: list[LayerPlan] = dataclasses.field(default_factory=list)
    # kernel name -> (make(pool spec) -> the kernel with that OR-pool fused in, layer entry)
    recipes: dict[str, tuple[Callable[[Any], Any], LayerRecord | None]] = dataclasses.field(default_factory=dict)
    # OR-pool kernel name -> (pool spec (kernel, stride, pad), layer entry)
    pool_kernels: dict[str, tuple[tuple, LayerRecord | None]] = dataclasses.field(default_factory=dict)
    # {"layer", "kernel"} for each layer BinaryRewrite gave an nrqc kernel, in order
    kernels: list[dict] = dataclasses.field(default_factory=list)
    # int8 kernel name (reading a float input with the quantize fused) -> (make() -> the same
    # kernel reading the int8/uint8 tensor, (dtype, scale, zero point)); for main_int8
    int8_twins: dict[str, tuple[Callable[[], Any], tuple]] = dataclasses.field(default_factory=dict)
    # the input main_int8 takes quantized (binary_int8_entry.QuantizedInput), when it was built
    int8_input: Any = None
