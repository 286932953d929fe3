"""Device-memory accounting (issue 15 item 5) against hand counts: the scratch bytes of a
kernel's own buffers (vector dtypes counted by lanes), the fused float head on a packed map
(bits_head: its hidden vector and one sum are the only buffers it allocates, none of the head's float maps
exists) and the static plan of a small VAD-like model written with onnx.helper (no node
names), whose packed maps are the only planned storage once the head is fused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

from nrqc.pipeline import _buffer_bytes, _primfunc_scratch_bytes
from nrqc.targets import get_target
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.bits_head import bits_head
from tests import binary_models as bm


def test_scratch_counts_vector_lanes_and_skips_params():
    @T.prim_func(s_tir=False)
    def f(A: T.Buffer((64,), "float32"), B: T.Buffer((64,), "float32")):
        v = T.alloc_buffer((3,), "int32x16")   # 3 x 16 lanes x 4 B = 192
        m = T.alloc_buffer((5, 7), "bool")     # 35 x 1 B
        h = T.alloc_buffer((2, 9), "int8")     # 18
        for i in range(64):
            v[i % 3] = T.broadcast(T.int32(i), 16)
            m[i % 5, i % 7] = A[i] > T.float32(0)
            h[i % 2, i % 9] = T.int8(1)
            B[i] = T.Select(m[i % 5, i % 7], T.Cast("float32", h[i % 2, i % 9]), A[i])

    assert _primfunc_scratch_bytes(f) == 192 + 35 + 18
    assert _buffer_bytes(tvm.tirx.decl_buffer((4,), "uint32x4")) == 64


@pytest.mark.parametrize("n,c,h,w,o1,o2,signed", [(1, 32, 1, 100, 16, 1, False), (2, 45, 3, 5, 7, 3, True)])
def test_bits_head_matches_numpy_and_keeps_only_its_hidden_vector(n, c, h, w, o1, o2, signed):
    rng = np.random.default_rng(c)
    bits = rng.random((n, h, w, c)) < 0.5
    w1, b1 = rng.standard_normal((o1, c)).astype(np.float32), rng.standard_normal(o1).astype(np.float32)
    w2, b2 = rng.standard_normal((o2, o1)).astype(np.float32), rng.standard_normal(o2).astype(np.float32)
    out_shape = (n * o2, h * w)  # the model's own reshape of the head output, written directly
    func = bits_head(n, c, h, w, o1, o2, signed, out_shape=out_shape)
    assert _primfunc_scratch_bytes(func) == 4 * (o1 + 1)  # the hidden vector and one output sum
    lib = tvm.tirx.build(func, target=get_target("x86").tvm())
    dev = tvm.cpu()
    y = tvm.runtime.tensor(np.zeros(out_shape, np.float32), dev)
    lib(*[tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in (pk.pack_channels(bits), w1.T, b1, w2, b2)], y)
    x = np.where(bits, 1.0, -1.0 if signed else 0.0)
    hid = np.maximum(np.einsum("nhwc,oc->nohw", x, w1) + b1[None, :, None, None], 0)
    ref = np.einsum("nohw,po->nphw", hid, w2) + b2[None, :, None, None]
    np.testing.assert_allclose(y.numpy(), ref.reshape(out_shape), rtol=1e-5, atol=1e-5)


def vad_like(path, c=32, o1=6, frames=20, bands=8):
    """float conv -> Heaviside -> int8 binary conv -> Heaviside -> 1x1 conv + bias -> ReLU ->
    1x1 conv + bias (the VAD's layer kinds), conv1d over frames, no node names."""
    g = bm.G(3)
    x = bm.first_conv(g, "x", bands, c, dims=1)
    x = bm.binary_conv(g, x, c, c, dims=1, p_in=0.3)
    w1 = (g.rng.standard_normal((o1, c, 1)) / np.sqrt(c)).astype(np.float32)
    hid = g.op("Relu", [g.op("Conv", [x, g.const(w1), g.const(g.rng.standard_normal(o1).astype(np.float32))],
                              kernel_shape=[1])])
    y = g.op("Conv", [hid, g.const(g.rng.standard_normal((1, o1, 1)).astype(np.float32)),
                      g.const(np.float32([0.25]))], kernel_shape=[1])
    for node in g.nodes:
        node.name = ""
    return bm.save(g, (1, bands, frames), y, (1, 1, frames), path)


@pytest.mark.slow  # one compile (haswell build) with its onnxruntime check: 2-4 min on 2 cores shared by 9 jobs
def test_static_plan_of_a_small_model_is_its_packed_maps(tmp_path):
    """Compiled to disk and checked against onnxruntime in a fresh process (compile's check);
    the manifest's memory plan against a hand count."""
    from nrqc.compiler import CompileOptions, compile_model

    frames, c, o1 = 20, 32, 6
    out = compile_model(vad_like(tmp_path / "m.onnx", c=c, o1=o1, frames=frames), "x86", tmp_path / "out",
                        CompileOptions(mcpu="haswell"), log=lambda *a: None)
    man = json.loads((out / "manifest.json").read_text())
    assert man["check"]["passed"] and man["check"]["where"] == "fresh process"
    plan = man["memory_plan"]
    # hand count: the two packed maps (20 frames x 1 word of 32 channels x 4 B each) are alive
    # together while the head reads the second; the head's output is the model's output (not
    # planned: io_bytes); no float map of the head, no unpacked copy of the binary map
    assert plan["planned_storage_bytes"] == 2 * frames * 4
    assert plan["io_bytes"] == (8 * frames + frames) * 4
    convs = [layer for layer in man["layers"] if layer["op"] == "Conv"]
    head = convs[2]["kernel"].removeprefix("nrqc:")
    assert head.endswith("_head") and convs[3]["kernel"] == convs[2]["kernel"]
    assert convs[3]["fused_into"] == convs[2]["name"]
    assert plan["kernel_scratch_bytes"][head] == 4 * (o1 + 1)
    assert plan["max_kernel_scratch_bytes"] == max(plan["kernel_scratch_bytes"].values())
    assert man["peak_activation_bytes"] == plan["planned_storage_bytes"] + plan["max_kernel_scratch_bytes"] \
        + plan["io_bytes"]
