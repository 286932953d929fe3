"""Float convolutions on Cortex-M: nrqc's register-blocked C kernel (`nrqc_f32_conv`,
kernels/nrqc_dsp.h) in place of TVM's C output, per layer (the "FloatKernels" step).

TVM's C for a legalized float conv keeps its accumulator in memory and re-reads each weight
per output pixel (the float vad_tiny: ~10 instructions per MAC on an M4). `nrqc_f32_conv`
keeps 4 output channels x 2 output pixels in FPU registers over the whole reduction (per tap
2 input loads, 4 weight loads, 8 VFMA).

Which fused kernels are convolutions is found by behaviour, not by name: a kernel main calls
with (float map, constant float weights [Co, C, (KH,) KW][, constant bias of Co values]) (or
a dense layer: x [N, K], weights [K, M] or [M, K], as a 1x1 conv on [N, K, 1, 1]) is
built for the host and run on random values; the geometry (stride, padding, dilation) and
the epilogue (bias, ReLU) are the first candidate consistent with the shapes whose numpy
result it reproduces. A kernel taking one float map and nothing else
whose result is a max pool of it (window, stride, padding found the same way) becomes
`nrqc_f32_maxpool`. Anything else keeps TVM's kernel. The knob `float_conv.kernel`
(nrqc/cortex_m/knobs.py: nrqc | tvm) lets `nrqc tune --target cortex-m4` measure each layer's
choice against TVM's C by the QEMU instruction count.
"""
from __future__ import annotations

import itertools

import numpy as np

from nrqc.cortex_m import knobs

C_FUNCTION = "nrqc_f32_conv"
OUT_BLOCK = 4  # output channels per register block (the C kernel's)


def conv_weights(w: np.ndarray) -> np.ndarray:
    """float [Co, C, KH, KW] -> [Co4/4, C, KH, KW, 4] (zero past Co): a tap's 4 output
    channels contiguous, as the kernel reads them."""
    co, c, kh, kw = w.shape
    co4 = (co + OUT_BLOCK - 1) // OUT_BLOCK * OUT_BLOCK
    wp = np.zeros((co4, c, kh, kw), np.float32)
    wp[:co] = w
    return np.ascontiguousarray(wp.reshape(co4 // OUT_BLOCK, OUT_BLOCK, c, kh, kw).transpose(0, 2, 3, 4, 1))


def ref_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, geo: dict) -> np.ndarray:
    """numpy float64 conv of x [N, C, H, W] with w [Co, C, KH, KW] and geometry geo."""
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = geo["stride"], geo["pad"], geo["dilation"]
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, co, ho, wo))
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, :, ky * dh: ky * dh + sh * (ho - 1) + 1: sh, kx * dw: kx * dw + sw * (wo - 1) + 1: sw]
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, ky, kx].astype(np.float64))
    return y + b.astype(np.float64)[None, :, None, None]


def _dim_candidates(size: int, k: int, out: int):
    """(stride, dilation, pad_before, pad_after) giving `out` outputs, likeliest first."""
    found = []
    for d in (1, 2, 3, 4):
        for s in (1, 2, 3, 4):
            for total in range(0, 2 * d * (k - 1) + s + 1):
                if (size + total - d * (k - 1) - 1) // s + 1 != out or size + total < d * (k - 1) + 1:
                    continue
                for before in range(total + 1):
                    found.append((d, s, before, total - before))
    return sorted(found, key=lambda c: (c[0], c[1], abs(c[2] - c[3]), c[3] - c[2]))[:40]


def find_geometry(run, x_shape, w: np.ndarray, b: np.ndarray | None, y_shape) -> dict | None:
    """The geometry and epilogue whose numpy result `run(x) -> y` reproduces, or None."""
    n, c, h, wd = x_shape
    co, _, kh, kw = w.shape
    _, _, ho, wo = y_shape
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    try:
        got = np.asarray(run(x), np.float64).reshape(y_shape)
    except Exception:  # noqa: not a kernel of this form (arity, dtypes)
        return None
    bias = b if b is not None else np.zeros(co, np.float32)
    for (dh, sh, pt, pb), (dw, sw, pl, pr) in itertools.product(_dim_candidates(h, kh, ho),
                                                                _dim_candidates(wd, kw, wo)):
        geo = {"stride": (sh, sw), "pad": (pt, pl, pb, pr), "dilation": (dh, dw)}
        ref = ref_conv(x, w, bias, geo)
        for relu in (0, 1):
            want = np.maximum(ref, 0) if relu else ref
            if np.allclose(got, want, rtol=1e-4, atol=1e-4 * (1 + np.abs(want).max())):
                return {**geo, "relu": relu}
    return None


def call_consts(x_shape, co: int, kh: int, kw: int, y_shape, geo: dict) -> tuple:
    n, c, h, wd = x_shape
    return (n, c, h, wd, co, kh, kw, *geo["stride"], geo["pad"][0], geo["pad"][1], *geo["dilation"], y_shape[2],
            y_shape[3], geo["relu"])


def kernel_func(x_shape, w4_shape, co4: int, y_shape, consts):
    """The TIR kernel: one call of nrqc_f32_conv with constant shapes (buffers keep the
    model's shapes: a 1-D conv's maps are 3-D)."""
    from tvm import tirx
    from tvm.script import tirx as T

    args = [tirx.const(int(v), "int32") for v in consts]

    @T.prim_func(s_tir=False)
    def kernel(X: T.Buffer(x_shape, "float32"), W4: T.Buffer(w4_shape, "float32"), B: T.Buffer((co4,), "float32"),
               Y: T.Buffer(y_shape, "float32")):
        T.evaluate(T.call_extern("int32", C_FUNCTION, X.data, W4.data, B.data, Y.data, *args))

    return kernel


def _host_runner(func, consts: list, y_shape):
    """run(x) -> y of a TIR kernel built for the host, called with x and its constants."""
    import tvm

    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
    dev = tvm.cpu()

    def run(x):
        args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in (x, *consts)]
        out = tvm.runtime.tensor(np.zeros(y_shape, np.float32), dev)
        lib["main"](*args, out)
        return out.numpy()

    return run


def _const(a):
    return a.value.numpy() if hasattr(a, "value") and hasattr(a.value, "numpy") else None


def _conv_call(mod, v) -> dict | None:
    """What call_tir `v` passes when it has the form of a float conv (+ bias) kernel: x (a
    float map), constant float weights [Co, C, (KH,) KW] and optionally a constant of Co
    values; 1-D maps as 4-D with H = 1. None otherwise."""
    from tvm import relax, tirx

    from nrqc.targets.kernels import binary_ops as bo

    f = mod[v.args[0]]
    if not isinstance(f, tirx.PrimFunc) or bo.op_of(f) is not None:
        return None
    args = list(v.args[1].fields)
    out_ty = v.ty_args[0]
    if len(args) not in (2, 3) or not isinstance(out_ty, relax.TensorType) or str(out_ty.dtype) != "float32":
        return None
    x = args[0]
    if _const(x) is not None or not isinstance(getattr(x, "ty", None), relax.TensorType):
        return None
    consts = [_const(a) for a in args[1:]]
    if any(c is None or c.dtype != np.float32 for c in consts) or x.ty.shape is None or out_ty.shape is None:
        return None
    w = consts[0]
    rank = len(w.shape)
    x_shape, y_shape = [int(d) for d in x.ty.shape], [int(d) for d in out_ty.shape]
    if rank not in (2, 3, 4) or len(x_shape) != rank or len(y_shape) != rank or str(x.ty.dtype) != "float32":
        return None
    if rank == 2:  # a dense layer (MatMul [K, M] or Gemm with transB [M, K]): a 1x1 conv on [N, K, 1, 1]
        (n, k), m = x_shape, y_shape[1]
        cands = ([("dense_km", w.T[:, :, None, None])] if w.shape == (k, m) else []) + \
                ([("dense_mk", w[:, :, None, None])] if w.shape == (m, k) else [])
        as4 = lambda s_: (s_[0], s_[1], 1, 1)  # noqa: E731
    else:
        if x_shape[1] != w.shape[1] or y_shape[1] != w.shape[0]:
            return None
        as4 = (lambda s_: (s_[0], s_[1], 1, s_[2])) if rank == 3 else tuple
        cands = [("conv", w.reshape(as4(w.shape)))]
    bias = consts[1].reshape(-1) if len(consts) == 2 else None
    if not cands or (bias is not None and bias.size != y_shape[1]):
        return None
    return {"x": x, "consts": consts, "cands": cands, "bias": bias, "x4": as4(x_shape), "y4": as4(y_shape),
            "x_shape": tuple(x_shape), "y_shape": tuple(y_shape)}


def ref_maxpool(x: np.ndarray, geo: dict) -> np.ndarray:
    """numpy max pool of x [N, C, H, W] (padding never wins)."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = geo["kernel"], geo["stride"], geo["pad"]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=-np.inf)
    ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    y = np.full(x.shape[:2] + (ho, wo), -np.inf, x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            y = np.maximum(y, xp[:, :, ky: ky + sh * (ho - 1) + 1: sh, kx: kx + sw * (wo - 1) + 1: sw])
    return y


def find_pool_geometry(run, x_shape, y_shape) -> dict | None:
    """The max-pool window, stride and padding whose numpy result `run(x) -> y` reproduces."""
    x = np.random.default_rng(8).standard_normal(x_shape).astype(np.float32)
    try:
        got = np.asarray(run(x)).reshape(y_shape)
    except Exception:  # noqa: not a kernel of this form
        return None
    axes = [[(k, s, a, b) for k in range(1, min(size, 5) + 1) for d, s, a, b in _dim_candidates(size, k, out)
             if d == 1 and a < k and b < k] for size, out in ((x_shape[2], y_shape[2]), (x_shape[3], y_shape[3]))]
    for (kh, sh, pt, pb), (kw, sw, pl, pr) in itertools.product(*axes):
        if kh * kw == 1:
            continue
        geo = {"kernel": (kh, kw), "stride": (sh, sw), "pad": (pt, pl, pb, pr)}
        if np.array_equal(got, ref_maxpool(x, geo)):
            return geo
    return None


def _pool_call(mod, v) -> dict | None:
    """What call_tir `v` passes when it has the form of a float pool: one float map [N, C, H, W]
    in, [N, C, HO, WO] out, no constants."""
    from tvm import relax, tirx

    f = mod[v.args[0]]
    args = list(v.args[1].fields)
    out_ty = v.ty_args[0]
    if not isinstance(f, tirx.PrimFunc) or len(args) != 1 or not isinstance(out_ty, relax.TensorType):
        return None
    x = args[0]
    if _const(x) is not None or not isinstance(getattr(x, "ty", None), relax.TensorType) or x.ty.shape is None:
        return None
    if str(x.ty.dtype) != "float32" or str(out_ty.dtype) != "float32" or out_ty.shape is None:
        return None
    x_shape, y_shape = tuple(int(d) for d in x.ty.shape), tuple(int(d) for d in out_ty.shape)
    if len(x_shape) != 4 or len(y_shape) != 4 or x_shape[:2] != y_shape[:2] or x_shape == y_shape:
        return None
    return {"x": x, "x_shape": x_shape, "y_shape": y_shape}


def pool_kernel_func(x_shape, y_shape, consts):
    """The TIR kernel: one call of nrqc_f32_maxpool with constant shapes."""
    from tvm import tirx
    from tvm.script import tirx as T

    args = [tirx.const(int(v), "int32") for v in consts]

    from tvm import s_tir

    @T.prim_func(s_tir=False)
    def kernel(X: T.Buffer(x_shape, "float32"), Y: T.Buffer(y_shape, "float32")):
        T.evaluate(T.call_extern("int32", "nrqc_f32_maxpool", X.data, Y.data, *args))

    # a root block: Relax's RewriteDataflowReshape checks every one-input kernel for a reshape
    # pattern, which needs one
    root = s_tir.SBlock([], [], [], "root", kernel.body)
    return kernel.with_body(s_tir.SBlockRealize([], tirx.const(True, "bool"), root))


def _maxpool_replacement(mod, v, bb, probed, made, renamed, hand_written):
    """The new call for a float max pool kernel (nrqc_f32_maxpool), or None to keep it."""
    from tvm import relax

    form = _pool_call(mod, v)
    if form is None:
        return None
    old = v.args[0].name_hint
    if old not in probed:
        try:
            probed[old] = find_pool_geometry(_host_runner(mod[v.args[0]], [], form["y_shape"]), form["x_shape"],
                                             form["y_shape"])
        except Exception:  # noqa: does not build for the host: keep TVM's kernel
            probed[old] = None
    geo = probed[old]
    if geo is None:
        return None
    (n, c, h, w), (_, _, ho, wo) = form["x_shape"], form["y_shape"]
    op = {"op": "float_maxpool", "x": list(form["x_shape"]), "y": list(form["y_shape"]),
          "kernel": list(geo["kernel"]), "stride": list(geo["stride"]), "pad": list(geo["pad"])}
    config = knobs.for_kernel(op)
    if config["kernel"] != "nrqc":
        renamed.setdefault(old, (None, op, config))
        return None
    key = (old, knobs.key(op))
    if key not in made:
        consts = (n * c, h, w, *geo["kernel"], *geo["stride"], geo["pad"][0], geo["pad"][1], ho, wo)
        name = f"nrqc_f32maxpool_{old}"
        func = hand_written(pool_kernel_func(form["x_shape"], form["y_shape"], consts)).with_attrs({"global_symbol": name, "op_pattern": 8, "tirx.noalias": True,
                                                "tirx.is_scheduled": True})
        made[key] = bb.add_func(func, name)
    renamed[old] = (made[key].name_hint, op, config)
    return bb.normalize(relax.call_tir(made[key], [form["x"]], v.ty_args[0]))


def float_conv_step(mod, ctx):
    """Pipeline step (target-schedule slot, Cortex-M with DSP): nrqc_f32_conv in place of TVM's
    float conv kernels whose behaviour matches a conv geometry, per the layer's knob."""
    import tvm
    from tvm import relax

    from nrqc.cortex_m.dsp import available, with_new_main
    from nrqc.targets.kernels.binary_ops import hand_written

    if not available(ctx.target):
        return mod
    main_gv = next((gv for gv in mod.functions if gv.name_hint == "main"), None)
    if main_gv is None:
        return mod
    call_tir = tvm.ir.Op.get("relax.call_tir")
    bb = relax.BlockBuilder(mod)
    probed: dict = {}  # old kernel name -> geometry or None (a kernel may serve several layers)
    made: dict = {}  # (old kernel name, op key) -> new GlobalVar
    renamed: dict = {}  # old kernel name -> (new name, op, config)
    blocks = []
    main = mod[main_gv]
    for block in main.body.blocks:
        bindings = []
        for b in block.bindings:
            v = b.value
            form = _conv_call(mod, v) if isinstance(v, relax.Call) and v.op.same_as(call_tir) else None
            if form is None and isinstance(v, relax.Call) and v.op.same_as(call_tir):
                pooled = _maxpool_replacement(mod, v, bb, probed, made, renamed, hand_written)
                if pooled is not None:
                    b = relax.VarBinding(b.var, pooled)
            if form is not None:
                x, bias, x4, y4 = form["x"], form["bias"], form["x4"], form["y4"]
                old = v.args[0].name_hint
                if old not in probed:  # (geometry, which weight reading) or None
                    probed[old] = None
                    try:
                        run = _host_runner(mod[v.args[0]], form["consts"], form["y_shape"])
                        for tag, w in form["cands"]:
                            geo = find_geometry(lambda x_: run(x_.reshape(form["x_shape"])), x4, w, bias, y4)
                            if geo is not None:
                                probed[old] = (geo, tag)
                                break
                    except Exception:  # noqa: does not build for the host: keep TVM's kernel
                        pass
                if probed[old] is not None:
                    geo, tag = probed[old]
                    w = dict(form["cands"])[tag]
                    co, c, kh, kw = w.shape
                    op = {"op": "float_conv", "form": tag, "g": {"x": list(x4), "co": co, "kh": kh, "kw": kw, "y": list(y4),
                                                    "stride": list(geo["stride"]), "pad": list(geo["pad"]),
                                                    "dilation": list(geo["dilation"])}, "relu": geo["relu"]}
                    config = knobs.for_kernel(op)
                    if config["kernel"] == "nrqc":
                        key = (old, knobs.key(op))
                        w4 = conv_weights(w)
                        co4 = w4.shape[0] * OUT_BLOCK
                        if key not in made:
                            func = kernel_func(form["x_shape"], w4.shape, co4, form["y_shape"],
                                               call_consts(x4, co, kh, kw, y4, geo))
                            name = f"nrqc_f32conv_{old}"
                            func = hand_written(func).with_attrs({"global_symbol": name, "op_pattern": 8,
                                                                  "tirx.noalias": True, "tirx.is_scheduled": True})
                            made[key] = bb.add_func(func, name)
                        bvec = np.zeros(co4, np.float32)
                        if bias is not None:
                            bvec[:co] = bias
                        call = relax.call_tir(made[key], [x, relax.const(w4), relax.const(bvec)], v.ty_args[0])
                        b = relax.VarBinding(b.var, bb.normalize(call))
                        renamed[old] = (made[key].name_hint, op, config)
                    else:
                        renamed.setdefault(old, (None, op, config))
            bindings.append(b)
        blocks.append(relax.DataflowBlock(bindings) if isinstance(block, relax.DataflowBlock)
                      else relax.BindingBlock(bindings))
    if not renamed:
        return mod
    out = with_new_main(bb, mod, main_gv, blocks)
    _record(ctx, renamed)
    return out


def _record(ctx, renamed: dict) -> None:
    from nrqc.layer_table import resolve_tvm_kernels

    # name each unclaimed layer's TVM kernel now, from the fused kernels' order recorded before
    # this step (as the back end would after the pipeline), so the replaced ones can be found
    resolve_tvm_kernels(ctx.layers, getattr(ctx, "kernels_in_order", None) or [])
    for layer in ctx.layers:
        kernel = str(layer.kernel or "")
        old = kernel[len("tvm:"):] if kernel.startswith("tvm:") else None
        if old not in renamed:
            continue
        name, op, config = renamed[old]
        if op["op"] == "float_maxpool":
            shape = f"max pool {op['kernel'][0]}x{op['kernel'][1]} stride {op['stride'][0]}x{op['stride'][1]}"
            layer.kernel = f"nrqc:{name}" if name else layer.kernel
            layer.strategy = {"strategy": f"cortex-m float {shape} (nrqc_f32_maxpool, NaN-propagating)" if name else
                              f"TVM's C kernel (knob float_maxpool.kernel=tvm), float {shape}",
                              "method": "window, stride and padding checked by running the fused kernel on random "
                                        "values against numpy", "knobs": config, "knob_key": knobs.key(op)}
            continue
        g = op["g"]
        kind = "dense" if op["form"].startswith("dense") else "conv"
        shape = f"{kind} {g['x'][1]}->{g['co']}" + (f" {g['kh']}x{g['kw']}" if kind == "conv" else "") + \
            (" + ReLU" if op["relu"] else "")
        if name is not None:
            layer.kernel = f"nrqc:{name}"
            block = "4 outputs" if kind == "dense" else "4 channels x 2 pixels"
            what = f"cortex-m float {shape}: {block} in FPU registers (nrqc_f32_conv)"
        else:
            what = f"TVM's C kernel (knob float_conv.kernel=tvm), float {shape}"
        layer.strategy = {"strategy": what, "method": "conv geometry and epilogue checked by running the fused "
                                                      "kernel on random values against numpy",
                          "knobs": config, "knob_key": knobs.key(op)}
    ctx.notes.append("cortex-m: float convs/dense: " + ", ".join(
        f"{old} -> {name or 'kept (TVM)'}" for old, (name, _, _) in renamed.items()))
