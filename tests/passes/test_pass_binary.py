"""The binary passes one at a time on a small BAM chain written without node names (float
first conv -> Heaviside, int8 conv -> Heaviside, max-pool, int8 conv -> Heaviside): what
each pass finds, folds, rewrites and fuses, and the rewritten module's bits against
onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

from tests import binary_models as bm
from tests.passes.pass_helpers import (call_tir_callees, imported, onnxruntime_outputs, op_names, run_module, run_steps,
                                      step)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    d = tmp_path_factory.mktemp("chain")
    named = bm.chain_model(d / "named.onnx", [{"c_out": 16}, {"pool": (2, 2, 0)}, {"c_out": 32}],
                           x_shape=(1, 1, 12, 14), seed=3)
    return bm.renamed(named, d / "chain.onnx", names="empty")


def _after(path, *names):
    m, ctx, mod = imported(path)
    return m, ctx, run_steps(mod, ctx, *(step(n) for n in names))


def test_binary_patterns_plans_every_conv_with_its_head_by_graph_identity(chain):
    m, ctx, mod = _after(chain, "nrqc.BinaryPatterns")
    plan = ctx.binary.plan
    conv_layers = [layer for layer in ctx.layers if layer.op == "Conv"]
    assert len(plan) == len(conv_layers) and all(p.layer is layer for p, layer in zip(plan, conv_layers))
    assert all(not n.name for n in m.shaped.graph.node)
    assert [p.kind for p in plan] == ["conv2d"] * 3
    assert [p.weights for p in plan] == ["float", "int8", "int8"]
    assert all(p.head is not None and p.head.encoding == "01" for p in plan)
    assert all(p.wq.dtype == np.int8 and p.scale.shape == (p.c_out,) for p in plan[1:])
    assert "relax.nn.conv2d" in op_names(mod)  # nothing rewritten by this pass


def test_binary_thresholds_fold_to_integer_comparisons_equal_to_the_float_ones(chain):
    _, ctx, _ = _after(chain, "nrqc.BinaryPatterns", "nrqc.BinaryThresholds")
    rng = np.random.default_rng(0)
    for p in ctx.binary.plan[1:]:
        bound = p.accumulator["worst_case_abs"]
        assert p.accumulator["bits_needed"] <= 32 and p.sigma.shape == p.t.shape == (p.c_out,)
        acc = rng.integers(-bound, bound + 1, size=(4000, 1)).astype(np.float64)
        m, k = p.affine
        pre = m * (p.scale.astype(np.float64) * acc) + k
        thr = p.head.threshold
        want = (pre < thr if p.head.strict else pre <= thr) if p.head.flipped else \
            (pre > thr if p.head.strict else pre >= thr)
        got = p.sigma.astype(np.int64) * acc.astype(np.int64) >= p.t.astype(np.int64)
        assert np.array_equal(got, want)


def test_binary_rewrite_replaces_convs_and_pool_by_packed_kernels(chain):
    _, ctx, mod = _after(chain, "nrqc.BinaryPatterns", "nrqc.BinaryThresholds", "nrqc.BinaryRewrite")
    callees = call_tir_callees(mod)
    assert sum(c.startswith("nrqc_fconv_threshold_pack") for c in callees) == 1
    assert sum(c.startswith("nrqc_bconv_int8_") and "_pack_" in c for c in callees) == 2
    assert sum(c.startswith("nrqc_or_pool") for c in callees) == 1
    assert "relax.nn.conv2d" not in op_names(mod) and "relax.nn.max_pool2d" not in op_names(mod)
    kernels = {k["kernel"] for k in ctx.binary.kernels}
    assert kernels <= set(callees) and len(ctx.binary.kernels) == 4
    layers = [layer for layer in ctx.layers if layer.op in ("Conv", "MaxPool")]
    assert all(layer.kernel.startswith("nrqc:nrqc_") for layer in layers)
    assert [layer.act_bits for layer in layers] == [32, 1, 1, 1]
    assert all(layer.weight_bits == 8 and layer.accumulator["dtype"] == "int32"
               for layer in layers if layer.op == "Conv" and layer.act_bits == 1)


def test_binary_fuse_pack_fuses_the_or_pool_and_keeps_the_bits(chain):
    _, ctx, mod = _after(chain, "nrqc.BinaryPatterns", "nrqc.BinaryThresholds", "nrqc.BinaryRewrite",
                         "nrqc.BinaryFusePack")
    callees = call_tir_callees(mod)
    assert not any(c.startswith("nrqc_or_pool") for c in callees)
    fused = [c for c in callees if c.endswith("_orpool")]
    assert len(fused) == 1
    pool = next(layer for layer in ctx.layers if layer.op == "MaxPool")
    conv = next(layer for layer in ctx.layers if layer.kernel == pool.kernel and layer.op == "Conv")
    assert pool.kernel == f"nrqc:{fused[0]}" and pool.fused_into == conv.name
    x = np.random.default_rng(5).standard_normal((1, 1, 12, 14)).astype(np.float32)
    got = run_module(mod, ctx, x)
    want = onnxruntime_outputs(chain, x)
    assert got.shape == want.shape and 0.1 < want.mean() < 0.9  # a map with both bits
    assert np.array_equal(got, want)
