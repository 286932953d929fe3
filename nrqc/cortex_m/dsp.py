"""nrqc's hand-written Cortex-M kernels in the pipeline: the "HandKernels" step.

Kernels built by nrqc's binary passes say what they compute (`binary_ops.describe`). On a
Cortex-M target with the DSP extension this step replaces the TIR body of the ones it has a
C kernel for (kernels/nrqc_dsp.h) with one call of that kernel (tirx call_extern, constant
shapes: GCC specializes the always-inline C for the call site), re-lays their weights out
for it, and records in the layer table what ran and with which knobs (nrqc.cortex_m.knobs):

* binary_conv, {0,1} input x int8 weights: nibble tables (`nrqc_b01_i8_conv`): a nibble of
  4 input bits selects a precomputed sum of 4 weights for two output channels at once;
  tables built per block of output channels in the arena, or precomputed in flash.
* binary_conv1x1_float (a full-precision 1x1 conv on a packed map, the VAD head): the set
  bits are walked and each adds a weight column to float accumulators in registers.
Everything else (and every other target) keeps the TIR kernels.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from nrqc.cortex_m import knobs
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import packing as pk

HEADER = "nrqc_dsp.h"
BIAS = 512  # per-lane bias of a table entry: 512 + (sum of 4 int8) is in [0, 1020]


# ------------------------------------------------------------------ weight layouts (numpy)

def nibble_groups(c_in: int) -> int:
    return (c_in + 3) // 4


def pair_weights(wq: np.ndarray) -> np.ndarray:
    """int8 [Co, C, kh, kw] -> int8 [Q, P, 4, 2]: (q, p, k) = (w[2p][c], w[2p+1][c]) for channel
    c = 4 * c4 + k of group q = (r * kw + s) * Q4 + c4; zero past C and Co. The kernel builds
    its table words w[2p][c] + 65536 * w[2p+1][c] from them (int8 in flash, not int32)."""
    co, c, kh, kw = wq.shape
    q4, p = nibble_groups(c), (co + 1) // 2
    w = np.zeros((2 * p, kh, kw, q4 * 4), np.int8)
    w[:co, :, :, :c] = np.transpose(wq.astype(np.int8), (0, 2, 3, 1))
    w = w.reshape(p, 2, kh * kw * q4, 4)  # [P, 2, Q, 4]
    return np.ascontiguousarray(np.transpose(w, (2, 0, 3, 1)))


def nibble_tables(pairs: np.ndarray) -> np.ndarray:
    """Pair weights [Q, P, 4, 2] -> uint32 tables [Q, 16, P]: entry i = bias + the sum, over the
    bits set in i, of the words w_even + 65536 * w_odd (the flash-resident tables)."""
    w = pairs[..., 0].astype(np.int64) + 65536 * pairs[..., 1].astype(np.int64)  # [Q, P, 4]
    bits = (np.arange(16)[:, None] >> np.arange(4)[None, :]) & 1  # [16, 4]
    t = np.einsum("ik,qpk->qip", bits, w) + (BIAS | (BIAS << 16))
    return (t % (1 << 32)).astype(np.uint32)


def int8_weights(op: dict, arr: np.ndarray) -> np.ndarray | None:
    """The layer's int8 weights [Co, Cg, kh, kw] back from the strategy's layout."""
    g = bo.ConvGeom(**{k: tuple(v) if isinstance(v, list) else v for k, v in op["g"].items()})
    if op["strategy"] == "masked":  # [kh, kw, Cg, Co]
        return np.ascontiguousarray(np.transpose(arr.astype(np.int8), (3, 2, 0, 1)))
    if op["strategy"] == "bitserial":  # [8, Co, kh, kw, Wi] two's-complement planes
        planes = [pk.unpack_channels(arr[b], g.c_in).astype(np.int64) for b in range(8)]
        w = sum(planes[b] << b for b in range(7)) - (planes[7] << 7)  # [Co, kh, kw, C]
        return np.ascontiguousarray(np.transpose(w, (0, 3, 1, 2))).astype(np.int8)
    return None


# ------------------------------------------------------------------ TIR wrappers
# Each is one call of a C kernel of nrqc_dsp.h with the buffers' data pointers and constant
# shapes (`consts`); `table` is a workspace (TVMBackendAllocWorkspace from the arena's tail,
# or the stack when small), one word when the kernel needs none.

def _call(fname, *args):
    from tvm import tirx

    return tirx.call_extern("int32", fname, *[a if not isinstance(a, int) else tirx.const(a, "int32") for a in args])


def _conv_pack_func(x_shape, w_shape, w_dtype, co, y_shape, ws_words, flash, consts):
    from tvm.script import tirx as T

    if not flash:  # the table is a second output: a tensor of the static plan (shares the arena)
        @T.prim_func(s_tir=False)
        def kernel(X: T.Buffer(x_shape, "uint32"), Wt: T.Buffer(w_shape, w_dtype), S: T.Buffer((co,), "int32"),
                   Th: T.Buffer((co,), "int32"), Y: T.Buffer(y_shape, "uint32"), Tab: T.Buffer((ws_words,), "float32")):
            T.evaluate(_call("nrqc_b01_i8_conv", X.data, Wt.data, 0, Tab.data, S.data, Th.data, 0, Y.data, *consts))

        return kernel

    @T.prim_func(s_tir=False)
    def kernel(X: T.Buffer(x_shape, "uint32"), Wt: T.Buffer(w_shape, w_dtype), S: T.Buffer((co,), "int32"),
               Th: T.Buffer((co,), "int32"), Y: T.Buffer(y_shape, "uint32")):
        T.evaluate(_call("nrqc_b01_i8_conv", X.data, 0, Wt.data, 0, S.data, Th.data, 0, Y.data, *consts))

    return kernel


def _conv_float_func(x_shape, w_shape, w_dtype, co, y_shape, ws_words, flash, consts):
    from tvm.script import tirx as T

    if not flash:
        @T.prim_func(s_tir=False)
        def kernel(X: T.Buffer(x_shape, "uint32"), Wt: T.Buffer(w_shape, w_dtype), Sc: T.Buffer((co,), "float32"),
                   Y: T.Buffer(y_shape, "float32"), Tab: T.Buffer((ws_words,), "float32")):
            T.evaluate(_call("nrqc_b01_i8_conv", X.data, Wt.data, 0, Tab.data, 0, 0, Sc.data, Y.data, *consts))

        return kernel

    @T.prim_func(s_tir=False)
    def kernel(X: T.Buffer(x_shape, "uint32"), Wt: T.Buffer(w_shape, w_dtype), Sc: T.Buffer((co,), "float32"),
               Y: T.Buffer(y_shape, "float32")):
        T.evaluate(_call("nrqc_b01_i8_conv", X.data, 0, Wt.data, 0, 0, 0, Sc.data, Y.data, *consts))

    return kernel


def _head_func(x_shape, w_shape, y_shape, consts):
    from tvm.script import tirx as T

    @T.prim_func(s_tir=False)
    def kernel(X: T.Buffer(x_shape, "uint32"), Wt: T.Buffer(w_shape, "float32"), Y: T.Buffer(y_shape, "float32")):
        T.evaluate(_call("nrqc_bits_conv1x1_f32", X.data, Wt.data, Y.data, *consts))

    return kernel


@dataclasses.dataclass
class NibblePlan:
    """The nibble-table kernel of one layer: its weight array, the C call's constant
    arguments (after the 8 pointers), the workspace and what to report."""

    weights: np.ndarray
    consts: tuple
    flash: bool
    table_words: int  # workspace words (0: tables in flash)
    x_shape: tuple
    y_shape: tuple
    out_float: bool
    what: str


def nibble_plan(op: dict, wq: np.ndarray, config: dict) -> NibblePlan | None:
    """The nibble-table kernel for a binary_conv op ({0,1} x int8, groups 1) with knobs
    `config`; None when it does not apply."""
    g = bo.ConvGeom(**{k: tuple(v) if isinstance(v, list) else v for k, v in op["g"].items()})
    if op["weights"] != "int8" or g.groups != 1 or g.c_out > 4096:
        return None
    q4 = nibble_groups(g.c_in)
    p = (g.c_out + 1) // 2
    pb = max(d for d in range(1, min(int(config["pairs_per_block"]), p) + 1) if p % d == 0)  # divides P
    words = pair_weights(wq)
    flash = config["table"] == "flash"
    warr = nibble_tables(words) if flash else words
    q = g.kh * g.kw * q4
    if op["pool"] is not None:
        (pkh, pkw), (psh, psw), ppad = op["pool"]
        pho, pwo = bo.pool_out(g.ho, g.wo, (pkh, pkw), (psh, psw), ppad)
        pool = (pkh, pkw, psh, psw, ppad[0], ppad[1], pho, pwo)
    else:
        pool = (1, 1, 1, 1, 0, 0, g.ho, g.wo)
    out_float = op["out"] != "pack"
    consts = (g.n, g.h, g.w, g.words_in, g.c_out, g.kh, g.kw, *g.stride, g.pad[0], g.pad[1], *g.dilation,
              g.ho, g.wo, q4, pb, int(out_float), *pool, int(flash))
    y_shape = (g.n, g.c_out, g.ho, g.wo) if out_float else (g.n, pool[6], pool[7], g.words_out)
    table = 0 if flash else q * 16 * pb
    what = (f"cortex-m nibble tables ({2 * pb} output channels per block, "
            + (f"tables {warr.nbytes:,} B in flash)" if flash else f"table {table * 4:,} B in the arena)"))
    return NibblePlan(warr, consts, flash, table, (g.n, g.h, g.w, g.words_in), y_shape, out_float, what)


def binary_conv_kernel(op: dict, wq: np.ndarray, config: dict):
    """(PrimFunc, weight array, what) of the nibble-table kernel, or None."""
    plan = nibble_plan(op, wq, config)
    if plan is None:
        return None
    co = op["g"]["c_out"]
    wdt = "uint32" if plan.flash else "int8"
    make = _conv_float_func if plan.out_float else _conv_pack_func
    func = make(plan.x_shape, plan.weights.shape, wdt, co, plan.y_shape, max(plan.table_words, 1), plan.flash,
                plan.consts)
    return bo.hand_written(func), plan.weights, plan.what


def head_consts(op: dict, config: dict) -> tuple:
    """The bit-walking 1x1 conv's constant arguments (after its 3 pointers)."""
    ob = max(d for d in range(1, min(int(config["out_block"]), op["o"], 16) + 1) if op["o"] % d == 0)  # divides O
    return (op["n"], op["h"], op["w"], pk.n_words(op["c"]), op["c"], op["o"], int(op["signed_input"]), ob)


def head_kernel(op: dict, config: dict):
    """(PrimFunc, what) of the bit-walking float 1x1 conv on a packed map."""
    consts = head_consts(op, config)
    x_shape = (op["n"], op["h"], op["w"], pk.n_words(op["c"]))
    func = _head_func(x_shape, (op["o"], op["c"]), (op["n"], op["o"], op["h"], op["w"]), consts)
    return bo.hand_written(func), f"cortex-m set-bit walk, {consts[-1]} float accumulators in registers"


# ------------------------------------------------------------------ the pipeline step

def available(target) -> bool:
    return target is not None and target.caps.scalar and target.caps.has("dsp")


def with_new_main(bb, mod, main_gv, blocks, drop=()):
    """The module with the kernels the BlockBuilder `bb` holds (less those in `drop`) and main's
    body replaced by `blocks` (its parameters, result, type and attributes kept)."""
    import tvm
    from tvm import relax

    main = mod[main_gv]
    out = tvm.IRModule({gv: f for gv, f in bb.get().functions.items() if gv not in drop and gv != main_gv},
                       attrs=mod.attrs)
    out[main_gv] = relax.Function(main.params, relax.SeqExpr(blocks, main.body.body), main.ret_ty, main.is_pure,
                                  main.attrs)
    return out


def hand_kernels_step(mod, ctx):
    """Pipeline step (target-schedule slot): put nrqc_dsp.h kernels in place of the tagged
    TIR kernels they implement, re-laying out their weights in main's calls."""
    import tvm
    from tvm import relax, tirx

    if not available(ctx.target):
        return mod
    mod = fuse_float_head(mod, ctx)
    tagged = {gv: bo.op_of(f) for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    tagged = {gv: op for gv, op in tagged.items() if op is not None}
    main_gv = next((gv for gv in mod.functions if gv.name_hint == "main"), None)
    if not tagged or main_gv is None:
        return mod
    call_tir = tvm.ir.Op.get("relax.call_tir")
    bb = relax.BlockBuilder(mod)  # its add_func gives the new kernels typed GlobalVars
    made: dict = {}  # old GlobalVar -> (new GlobalVar, PrimFunc, what, knobs, op)
    blocks = []
    for block in mod[main_gv].body.blocks:
        bindings = []
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and v.op.same_as(call_tir) and v.args[0] in tagged:
                gv, op = v.args[0], tagged[v.args[0]]
                config = knobs.for_kernel(op)
                rep = _replacement(op, config, list(v.args[1].fields))
                if rep is not None:
                    func, new_args, what, scratch = rep
                    name = _new_name(gv.name_hint, op)
                    func = func.with_attrs({"global_symbol": name, "op_pattern": 8, "tirx.noalias": True,
                                            "tirx.is_scheduled": True})
                    new_gv = made[gv][0] if gv in made else bb.add_func(func, name)
                    made[gv] = (new_gv, func, what, config, op)
                    if scratch:  # extra outputs: scratch the static plan places (dead after the call)
                        tuple_ty = relax.TupleType([v.ty_args[0], *[relax.TensorType([n], dt) for n, dt in scratch]])
                        var_kind = relax.DataflowVar if isinstance(block, relax.DataflowBlock) else relax.Var
                        both = var_kind(f"{b.var.name}_with_scratch", tuple_ty)
                        bindings.append(relax.VarBinding(both, relax.call_tir(
                            new_gv, new_args, [v.ty_args[0], *[relax.TensorType([n], dt) for n, dt in scratch]])))
                        b = relax.VarBinding(b.var, relax.TupleGetItem(both, 0))
                    else:
                        b = relax.VarBinding(b.var, relax.call_tir(new_gv, new_args, v.ty_args[0]))
            bindings.append(b)
        blocks.append(relax.DataflowBlock(bindings) if isinstance(block, relax.DataflowBlock)
                      else relax.BindingBlock(bindings))
    if not made:
        return mod
    out = with_new_main(bb, mod, main_gv, blocks, drop=made)
    _record(ctx, {gv.name_hint: (new_gv.name_hint, what, config, op) for gv, (new_gv, _, what, config, op) in made.items()})
    return out


def _head_func_fused(x_shape, w_shape, o, o2, y_shape, consts):
    from tvm.script import tirx as T

    @T.prim_func(s_tir=False)
    def kernel(X: T.Buffer(x_shape, "uint32"), Wt: T.Buffer(w_shape, "float32"), B1: T.Buffer((o,), "float32"),
               W2: T.Buffer((o2, o), "float32"), B2: T.Buffer((o2,), "float32"), Y: T.Buffer(y_shape, "float32")):
        T.evaluate(_call("nrqc_bits_head_f32", X.data, Wt.data, B1.data, W2.data, B2.data, Y.data, *consts))

    return kernel


def _runs_like(func, inputs: list, expected: np.ndarray) -> bool:
    """Does the TIR kernel compute `expected` from `inputs` (built for the host and run on them)?"""
    import tvm

    try:
        lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
        dev = tvm.cpu()
        args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in inputs]
        out = tvm.runtime.tensor(np.zeros(expected.shape, np.float32), dev)
        lib["main"](*args, out)
    except Exception:  # noqa: not a kernel of that form (arity, shapes)
        return False
    return bool(np.allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5))


def _head_tail(mod, a_var, users, bindings, o: int, hw: int):
    """The two calls after a float 1x1 head conv, when they are bias + ReLU and a 1x1 conv
    + bias (O -> O2 channels): (index of each, b1, w2 [O2, O], b2). What they compute is
    checked by running them on random values against numpy, not read from their names."""
    from tvm import relax

    def const(a):
        return a.value.numpy() if hasattr(a, "value") and hasattr(a.value, "numpy") else None

    def single_call_user(var):
        idx = users.get(var, [])
        if len(idx) != 1:
            return None
        v = bindings[idx[0]].value
        if not (isinstance(v, relax.Call) and getattr(v.op, "name", "") == "relax.call_tir"):
            return None
        return idx[0], list(v.args[1].fields), mod[v.args[0]], [int(d) for d in bindings[idx[0]].var.ty.shape]

    rng = np.random.default_rng(0)
    bias = single_call_user(a_var)
    if bias is None or len(bias[1]) != 2 or not bias[1][0].same_as(a_var) or const(bias[1][1]) is None:
        return None
    j, (_, b1a), bfunc, bshape = bias
    b1 = const(b1a)
    if b1.dtype != np.float32 or b1.size != o:
        return None
    y1 = rng.standard_normal([int(d) for d in a_var.ty.shape]).astype(np.float32)
    h = np.maximum(y1.reshape(-1, o, hw) + b1.reshape(1, o, 1), 0)
    if not _runs_like(bfunc, [y1, b1], h.reshape(bshape)):
        return None
    conv = single_call_user(bindings[j].var)
    if conv is None or len(conv[1]) != 3 or not conv[1][0].same_as(bindings[j].var):
        return None
    k, (_, w2a, b2a), cfunc, cshape = conv
    w2, b2 = const(w2a), const(b2a)
    if w2 is None or b2 is None or w2.dtype != np.float32 or b2.dtype != np.float32 or w2.size % o:
        return None
    o2 = w2.size // o
    if b2.size != o2 or int(np.prod(cshape)) != h.shape[0] * o2 * hw:
        return None
    x2 = rng.standard_normal(bshape).astype(np.float32)
    ref = np.einsum("pk,nkt->npt", w2.reshape(o2, o), x2.reshape(-1, o, hw)) + b2.reshape(1, o2, 1)
    if not _runs_like(cfunc, [x2, w2, b2], ref.reshape(cshape)):
        return None
    return j, k, b1.reshape(o), w2.reshape(o2, o), b2.reshape(o2)


def fused_head_consts(op: dict, o2: int) -> tuple:
    """nrqc_bits_head_f32's constant arguments (after its 6 pointers)."""
    return (op["n"], op["h"], op["w"], pk.n_words(op["c"]), op["c"], op["o"], o2, int(op["signed_input"]))


FUSES_ATTR = "nrqc.cortex_m.fuses"  # on a fused head kernel: the TVM kernel it replaces


def relabel_fused_layers(mod, layers) -> None:
    """After the layer table resolved TVM kernels (by fusion order): a layer computed by a
    kernel that a fused head replaced names the head kernel."""
    from tvm import tirx

    for gv, f in mod.functions.items():
        if isinstance(f, tirx.PrimFunc) and f.attrs is not None and FUSES_ATTR in f.attrs:
            head = next((layer.name for layer in layers if str(layer.kernel or "") == f"nrqc:{gv.name_hint}"), None)
            for layer in layers:
                if str(layer.kernel or "") == f"tvm:{f.attrs[FUSES_ATTR]}":
                    layer.kernel = f"nrqc:{gv.name_hint}"
                    layer.fused_into = head


def fuse_float_head(mod, ctx):
    """Fuse a float 1x1 conv on a packed map (binary_conv1x1_float, up to 16 outputs) with the
    bias + ReLU and the 1x1 conv + bias that follow it into one nrqc_bits_head_f32 call: the
    two float maps between them leave the static plan (the VAD head: 2 x 6.4 KB of arena)."""
    import tvm
    from tvm import relax, tirx

    main_gv = next((gv for gv in mod.functions if gv.name_hint == "main"), None)
    if main_gv is None:
        return mod
    call_tir = tvm.ir.Op.get("relax.call_tir")
    main = mod[main_gv]
    bb = relax.BlockBuilder(mod)
    blocks, fused = [], []
    for block in main.body.blocks:
        bindings = list(block.bindings)
        users: dict = {}
        for i, b in enumerate(bindings):
            for var in relax.analysis.free_vars(b.value):
                users.setdefault(var, []).append(i)
        for var in relax.analysis.free_vars(main.body.body):
            users.setdefault(var, []).append(len(bindings))
        drop, replace = set(), {}
        for i, b in enumerate(bindings):
            v = b.value
            if not (isinstance(v, relax.Call) and v.op.same_as(call_tir)):
                continue
            f = mod[v.args[0]]
            op = bo.op_of(f) if isinstance(f, tirx.PrimFunc) else None
            if op is None or op["op"] != "binary_conv1x1_float" or op["o"] > 16 or op["c"] > 4096:
                continue
            tail = _head_tail(mod, b.var, users, bindings, op["o"], op["h"] * op["w"])
            if tail is None:
                continue
            j, k, b1, w2, b2 = tail
            o2 = w2.shape[0]
            consts = fused_head_consts(op, o2)
            x_arg, w_arg = list(v.args[1].fields)
            func = _head_func_fused((op["n"], op["h"], op["w"], pk.n_words(op["c"])), (op["o"], op["c"]), op["o"],
                                    o2, (op["n"], o2, op["h"], op["w"]), consts)
            name = v.args[0].name_hint.replace("bconv1x1_float", "bconv1x1_float_head") + f"_to{o2}"
            func = bo.hand_written(func).with_attrs({"global_symbol": name, "op_pattern": 8, "tirx.noalias": True,
                                                     "tirx.is_scheduled": True,
                                                     FUSES_ATTR: bindings[k].value.args[0].name_hint})
            gv = bb.add_func(func, name)
            out_var = bindings[k].var
            call = relax.call_tir(gv, [x_arg, w_arg, relax.const(b1), relax.const(w2), relax.const(b2)],
                                  relax.TensorType((op["n"], o2, op["h"], op["w"]), "float32"))
            # the result keeps the old output's shape (a reshape view of the same bytes)
            new_var_kind = relax.DataflowVar if isinstance(block, relax.DataflowBlock) else relax.Var
            raw = new_var_kind(f"{out_var.name}_head", relax.TensorType((op["n"], o2, op["h"], op["w"]), "float32"))
            replace[k] = [relax.VarBinding(raw, call),
                          relax.VarBinding(out_var, relax.op.reshape(raw, [int(d) for d in out_var.ty.shape]))]
            drop |= {i, j}
            fused.append((v.args[0].name_hint, bindings[k].value.args[0].name_hint, name, op["o"], o2))
        new = []
        for i, b in enumerate(bindings):
            if i in replace:
                new += replace[i]
            elif i not in drop:
                new.append(b)
        blocks.append(relax.DataflowBlock(new) if isinstance(block, relax.DataflowBlock) else relax.BindingBlock(new))
    if not fused:
        return mod
    out = with_new_main(bb, mod, main_gv, blocks)
    for head, tail_kernel, name, o, o2 in fused:
        for layer in ctx.layers:
            kernel = str(layer.kernel or "")
            if kernel in (f"nrqc:{head}", f"tvm:{tail_kernel}"):
                layer.kernel = f"nrqc:{name}"
                layer.strategy = {"strategy": f"cortex-m fused float head: set-bit walk into {o} float accumulators, "
                                              f"bias + ReLU, 1x1 {o}->{o2} conv + bias per pixel (no float map)",
                                  "method": "cortex-m hand-written C kernel (nrqc_dsp.h), semantics of the fused "
                                            "bias/ReLU and 1x1 conv kernels checked on random values"}
        ctx.notes.append(f"cortex-m: {head} + bias/ReLU + {tail_kernel} fused into {name} (nrqc_bits_head_f32)")
    return out


def _new_name(old: str, op: dict) -> str:
    """The kernel's name says what runs now (the strategy part of the TIR kernel's name)."""
    if op["op"] == "binary_conv":
        return old.replace(f"bconv_int8_{op['strategy']}", "bconv_int8_nibble")
    return old.replace("bconv1x1_float", "bconv1x1_float_bitwalk")


def _replacement(op: dict, config: dict, args):
    """(PrimFunc, new call args, what, scratch outputs [(words, dtype)]) for one tagged kernel
    call, or None to keep it."""
    from tvm import relax

    def const(a):
        return a.value.numpy() if hasattr(a, "value") and hasattr(a.value, "numpy") else None

    if op["op"] == "binary_conv" and op["weights"] == "int8":
        warr = const(args[1])
        wq = int8_weights(op, warr) if warr is not None else None
        if wq is None:
            return None
        made = binary_conv_kernel(op, wq, config)
        if made is None:
            return None
        func, new_w, what = made
        plan = nibble_plan(op, wq, config)
        # float32-typed: the static plan reuses storage only within a dtype, and the maps the
        # table can share the arena with are the float maps of the head (the C casts it)
        scratch = [(plan.table_words, "float32")] if plan.table_words else []
        return func, [args[0], relax.const(new_w), *args[2:]], what, scratch
    if op["op"] == "binary_conv1x1_float" and op["c"] <= 4096:
        func, what = head_kernel(op, config)
        return func, list(args), what, []
    return None


def _record(ctx, renamed: dict) -> None:
    for layer in ctx.layers:
        kernel = str(layer.kernel or "")
        old = kernel[len("nrqc:"):] if kernel.startswith("nrqc:") else None
        if old not in renamed:
            continue
        name, what, config, op = renamed[old]
        layer.kernel = f"nrqc:{name}"
        before = (layer.strategy or {}).get("strategy", "the TIR kernel")
        layer.strategy = {"strategy": what, "method": f"cortex-m hand-written C kernel (nrqc_dsp.h) in place of {before}",
                          "knobs": config, "knob_key": knobs.key(op)}
    ctx.notes.append("cortex-m: hand-written C kernels (nrqc_dsp.h): " + ", ".join(
        f"{name} ({what})" for name, what, _, _ in renamed.values()))
