"""Pass 3: rewrite planned binary layers (and the pooling between them) to bit-packed
integer operators.

One job: walk main's dataflow block once, keeping a map "float {0,1}/{-1,+1} map var ->
packed uint32 var". A layer whose input is available packed and whose weights are int8 or
+-1 becomes a call_tir of an nrqc kernel that reads packed words and (when it ends in a
Heaviside/Sign head) writes packed words: the float map is then unused and removed by
dead-code elimination, so activations between two binary layers never exist as float or
int8 tensors. The first (float-input) conv gets a fused float-conv + threshold + pack
kernel. Max-pools of packed maps become OR-pools, a global max (GlobalMaxPool/ReduceMax)
a global OR, and a dense layer on that vector a binary-input dense. Anything that cannot
be converted keeps the model's own float ops, and its layer entry says why.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from nrqc.passes.binary_patterns import main_bindings, op_name


@dataclasses.dataclass
class Packed:
    var: object  # relax var, uint32 [N, H, W, words]
    n: int
    c: int
    h: int
    w: int
    encoding: str  # "01" | "pm1"
    ndim: int  # rank of the float map it stands for (4: NCHW, 3: NCL, 2: NC vector)


def _shape(e):
    return tuple(int(d) for d in e.ty.shape)


class Rewriter:
    def __init__(self, mod, ctx):
        from tvm import relax
        from tvm.relax import dpl

        self.ctx = ctx
        self.bb_mod = mod
        self.new_funcs = {}
        self.counter = 0
        self.packed: dict = {}
        self.self_packed: set = set()  # float maps packed from themselves (cannot be unpacked)
        self.out_bindings = []
        self.relax = relax
        self.bb = relax.BlockBuilder(mod)
        self.plan = ctx.binary.plan
        self.by_core = {p.core: p for p in self.plan}
        self.by_head = {p.head.var: p for p in self.plan if p.head is not None}
        self.pools = [layer for layer in ctx.layers if layer.op == "MaxPool"]
        self.gpools = [layer for layer in ctx.layers if layer.op in ("GlobalMaxPool", "ReduceMax")]
        self.seen_pool = 0
        self.seen_gpool = 0
        self.kernels_used: list[dict] = []
        # kernel name -> (make(pool) -> fused PrimFunc, layer entry): used by BinaryFusePack
        self.recipes: dict = {}
        self.pool_kernels: dict = {}  # or-pool kernel name -> (pool spec, layer entry)
        self.int8_twins: dict = {}  # int8 kernel reading a float input -> (make(pool) of its int8-source twin, params)
        # (pattern of a kept binding's value, rule that carries the packed map through it)
        self.follow_rules = [
            (dpl.is_op("relax.nn.max_pool2d")(dpl.wildcard()) | dpl.is_op("relax.nn.max_pool1d")(dpl.wildcard()),
             self.pool),
            (dpl.is_op("relax.max")(dpl.wildcard()), self.global_pool),
            (dpl.is_op("relax.reshape")(dpl.wildcard(), dpl.wildcard()), self.reshape),
        ]

    # ------------------------------------------------------------ helpers
    def add_kernel(self, func, base: str):
        from nrqc.targets.kernels.binary_ops import as_kernel

        name = f"nrqc_{base}_{self.counter}"
        self.counter += 1
        gv = self.bb.add_func(as_kernel(func, name, self.ctx.target, self.ctx.notes), name)
        return gv, name

    def emit(self, value, shape, dtype, hint):
        relax = self.relax
        var = relax.DataflowVar(hint, relax.TensorType(list(shape), dtype))
        self.out_bindings.append(relax.VarBinding(var, value))
        return var

    def call(self, gv, args, shape, dtype, hint):
        relax = self.relax
        args = [a if isinstance(a, relax.Expr) else relax.const(a) for a in args]
        value = relax.call_tir(gv, args, relax.TensorType(list(shape), dtype))
        return self.emit(value, shape, dtype, hint)

    # ------------------------------------------------------------ geometry
    def conv_geom(self, p, pk: Packed | None, x_shape):
        from nrqc.targets.kernels.binary_ops import ConvGeom

        if p.kind == "conv2d":
            n, c, h, w = x_shape
            co, cg, kh, kw = p.weight.shape
            a = p.attrs
            return ConvGeom(n, c, h, w, co, kh, kw, tuple(a["strides"]), tuple(a["padding"]), tuple(a["dilation"]),
                            a["groups"])
        if p.kind == "conv1d":
            n, c, length = x_shape
            co, cg, k = p.weight.shape
            a = p.attrs
            return ConvGeom(n, c, 1, length, co, 1, k, (1, a["strides"][0]), (0, a["padding"][0], 0, a["padding"][1]),
                            (1, a["dilation"][0]), a["groups"])
        n, k = x_shape
        return ConvGeom(n, k, 1, 1, p.c_out, 1, 1)

    def weight_oihw(self, p, arr):
        if p.kind == "conv2d":
            return arr
        if p.kind == "conv1d":
            return arr[:, :, None, :]
        return np.ascontiguousarray(arr.T)[:, :, None, None]  # [K, O] -> [O, K, 1, 1]

    # ------------------------------------------------------------ layer kinds
    def binary_layer(self, p, pk: Packed, out: str):
        """call_tir of the integer conv kernel; returns the output var."""
        from nrqc.targets.kernels import build as kbuild, select

        g = self.conv_geom(p, pk, (pk.n, pk.c, pk.h, pk.w) if p.kind == "conv2d" else
                           (pk.n, pk.c, pk.w) if p.kind == "conv1d" else (pk.n, pk.c))
        wq = self.weight_oihw(p, p.wq)
        if p.weights == "int8":
            if pk.encoding != "01":
                p.reason = "{-1,+1} input with int8 weights is not supported by the integer kernels"
                return None
            choice = select.choose_int8_strategy(g, self.ctx.target)
            strategy = choice["strategy"]
        else:
            # among the kernels computing on the input's encoding (AND for {0,1}, XNOR for {-1,+1})
            choice = select.choose_int8_strategy(g, self.ctx.target, encoding=pk.encoding)
            strategy = choice["strategy"]
        func, wargs = kbuild.build_conv(g, p.weights, strategy, out, wq, self.ctx.target)
        gv, name = self.add_kernel(func, f"bconv_{p.weights}_{strategy}_{out}")
        if out == "pack":
            target = self.ctx.target
            self.recipes[name] = (lambda pool: kbuild.build_conv(g, p.weights, strategy, out, wq, target, pool)[0],
                                  p.layer)
        pk_x = pk.var
        if out == "pack":
            args = [pk_x, *wargs, p.sigma, p.t]
            shape, dtype = (g.n, g.ho, g.wo, g.words_out), "uint32"
        else:
            args = [pk_x, *wargs, p.scale.astype(np.float32)]
            shape, dtype = (g.n, g.c_out, g.ho, g.wo), "float32"
        var = self.call(gv, args, shape, dtype, "packed" if out == "pack" else "acc_y")
        self.annotate(p, name, act_bits=1, weight_bits=8 if p.weights == "int8" else 1,
                      replaced=p.layer.macs if p.layer else 0, choice=choice)
        return var, g

    def annotate(self, p, kernel, act_bits, weight_bits, replaced, choice=None, reason=None):
        if p.layer is None:
            return
        layer = p.layer
        layer.kernel, layer.act_bits, layer.weight_bits = f"nrqc:{kernel}", act_bits, weight_bits
        layer.multiplications_replaced, layer.float_reason = int(replaced), reason
        if choice is not None:
            layer.strategy = choice
        if p.accumulator:
            layer.accumulator = p.accumulator
        if p.head is not None:
            layer.output = {"01": "packed {0,1} bits", "pm1": "packed {-1,+1} bits"}[p.head.encoding]
        self.kernels_used.append({"layer": layer.name, "kernel": kernel})

    # ------------------------------------------------------------ main walk
    def run(self, mod):
        """One walk over main's bindings: a planned layer reading a packed map is replaced
        (`rewrite_layer`); any other binding is kept and may extend the packed maps
        (`follow`: a head gets its packed twin, pools and reshapes carry packing on)."""
        from nrqc.passes.binary_patterns import drop_unused_kernels
        from nrqc.targets.kernels import binary_ops as bo

        relax = self.relax
        bindings = main_bindings(mod)
        if bindings is None:
            return mod
        self.defs = {b.var: b.value for b in bindings}
        for b in bindings:
            if self.rewrite_layer(b):
                continue
            self.out_bindings.append(b)
            self.follow(b)
        self.unpack_for_float_consumers(bo)
        func = mod["main"]
        new_seq = relax.SeqExpr([relax.DataflowBlock(self.out_bindings)], func.body.body)
        mod = self.bb.get()
        mod["main"] = relax.Function(func.params, new_seq, func.ret_ty, func.is_pure, func.attrs)
        mod = relax.transform.DeadCodeElimination(["main"])(mod)
        return drop_unused_kernels(mod)

    def rewrite_layer(self, b) -> bool:
        """A planned conv/matmul without a head of its own (its output stays float: a dense
        head, conv + ReLU, ...) whose input map is packed: replaced by a kernel reading the
        packed words. Layers with a head are rewritten when their head is bound (`head`)."""
        p = self.by_core.get(b.var)
        if p is not None and p.head is None and p.input_quant is not None:
            return self.int8_input_to_float(p, b)
        if p is None or p.head is not None or not isinstance(p.x, self.relax.Var) or p.x not in self.packed:
            return False
        pk = self.packed[p.x]
        if p.weights in ("int8", "binary"):
            return p.reason is None and (p.kind != "matmul" or pk.ndim == 2) and self.integer_layer_to_float(p, pk, b)
        if p.kind == "matmul":
            return pk.ndim == 2 and self.float_dense_on_bits(p, pk, b)
        return self._float_1x1_on_bits(p, b)

    def integer_layer_to_float(self, p, pk: Packed, b) -> bool:
        res = self.binary_layer(p, pk, "float")
        if res is None:
            return False
        y, _ = res
        self.out_bindings.append(self.relax.VarBinding(b.var, self.relax.op.reshape(y, _shape(b.var))))
        return True

    def float_dense_on_bits(self, p, pk: Packed, b) -> bool:
        """Float weights on a packed vector (e.g. after the global max): a select-add dense."""
        from nrqc.targets.kernels import binary_ops as bo
        from nrqc.targets.kernels import build as kbuild

        relax = self.relax
        k, o = p.weight.shape
        func = kbuild.schedule_dense(bo.binary_dense(pk.n, k, o, "float", signed_input=pk.encoding == "pm1"),
                                     self.ctx.target)
        gv, kname = self.add_kernel(func, "binary_fc_float")
        value = relax.call_tir(gv, [pk.var, relax.const(p.weight.astype(np.float32))],
                               relax.TensorType([pk.n, o], "float32"))
        self.out_bindings.append(relax.VarBinding(b.var, value))
        self.annotate(p, kname, act_bits=1, weight_bits=32, replaced=p.layer.macs if p.layer else 0,
                      choice={"strategy": "select-add of float weights", "method": "only kernel for float weights"})
        p.layer.float_reason = None
        return True

    def follow(self, b) -> None:
        """A kept binding that makes or carries a packed map: a head, then the first
        follow rule whose pattern matches the bound value."""
        if b.var in self.by_head:
            self.head(self.by_head[b.var], b)
            return
        for pattern, rule in self.follow_rules:
            if pattern.match(b.value):
                rule(b)
                return

    def reshape(self, b) -> None:
        """A reshape of a packed 1x1 map (e.g. flatten after the global max) to [n, c],
        [n, c, 1] or [n, c, 1, 1] is the same packed words."""
        src = b.value.args[0]
        pk = self.packed.get(src) if isinstance(src, self.relax.Var) else None
        if pk is None or pk.h != 1 or pk.w != 1:
            return
        shp = _shape(b.var)
        if shp in ((pk.n, pk.c), (pk.n, pk.c, 1, 1), (pk.n, pk.c, 1)):
            self.packed[b.var] = dataclasses.replace(pk, ndim=len(shp))

    def _float_1x1_on_bits(self, p, b) -> bool:
        """A full-precision 1x1 conv (e.g. the VAD head) reading a packed map runs as a
        select-add over the bits (bo.binary_conv1x1_float) instead of unpacking the map to
        float first (a float copy of the whole map: 12.8 kB for the VAD). On host targets
        BinaryFuseHead then folds bias, ReLU and a second 1x1 conv into it (bits_head);
        bare-metal back ends replace it with their own C kernel."""
        from nrqc.targets.kernels import binary_ops as bo

        relax = self.relax
        if p.layer is None:
            return False
        pk = self.packed[p.x]
        w = np.asarray(p.weight, np.float32) if p.weight is not None else None
        if w is None:
            return False
        try:
            g = self.conv_geom(p, pk, (pk.n, pk.c, pk.h, pk.w) if p.kind == "conv2d" else (pk.n, pk.c, pk.w))
        except Exception:  # noqa: an unusual attribute set: keep unpack + float conv
            return False
        if p.kind == "conv1d" and pk.h != 1:
            return False
        if (g.kh, g.kw, g.stride, g.pad, g.groups, g.c_in) != (1, 1, (1, 1), (0, 0, 0, 0), 1, pk.c) \
                or (g.ho, g.wo) != (pk.h, pk.w) or g.c_out != w.shape[0]:
            return False
        out_shape = _shape(b.var)
        c_out = int(w.shape[0])
        if int(np.prod(out_shape)) != pk.n * c_out * pk.h * pk.w:
            return False
        func = bo.binary_conv1x1_float(pk.n, pk.c, pk.h, pk.w, c_out, signed_input=pk.encoding == "pm1")
        gv, kname = self.add_kernel(func, "bconv1x1_float")
        y = self.call(gv, [pk.var, w.reshape(c_out, pk.c)], (pk.n, c_out, pk.h, pk.w), "float32", "acc_y")
        self.out_bindings.append(relax.VarBinding(b.var, relax.op.reshape(y, out_shape)))
        self.annotate(p, kname, act_bits=1, weight_bits=32, replaced=p.layer.macs,
                      choice={"strategy": "select-add of float weights over the packed bits",
                              "method": "no float copy of the binary map"})
        p.layer.float_reason = None
        return True

    def unpack_for_float_consumers(self, bo):
        """A packed map whose float twin is still read by a non-binary op (for example the
        model output) is unpacked from the packed words instead of being recomputed in float."""
        relax = self.relax
        from nrqc.passes.binary_patterns import use_counts

        counts = use_counts(self.out_bindings, self.bb_mod["main"].body.body)
        twins: dict = {}
        for fvar, pk in self.packed.items():
            if fvar not in self.self_packed and counts.get(fvar, 0) > 0:
                twins.setdefault(pk.var, []).append(fvar)
        replaced = {f for fs in twins.values() for f in fs}
        out = []
        for b in self.out_bindings:
            if b.var in replaced:
                continue  # the float original: re-bound below from the packed words
            out.append(b)
            for fvar in twins.get(b.var, []):
                pk = self.packed[fvar]
                shape = _shape(fvar)
                gv, _ = self.add_kernel(bo.unpack(pk.n, pk.c, pk.h, pk.w, signed=pk.encoding == "pm1"), "unpack")
                value = relax.call_tir(gv, [pk.var], relax.TensorType([pk.n, pk.c, pk.h, pk.w], "float32"))
                if shape != (pk.n, pk.c, pk.h, pk.w):
                    tmp = relax.DataflowVar("unpacked", relax.TensorType([pk.n, pk.c, pk.h, pk.w], "float32"))
                    out.append(relax.VarBinding(tmp, value))
                    value = relax.op.reshape(tmp, shape)
                out.append(relax.VarBinding(fvar, value))
        self.out_bindings = out

    def head(self, p, b):
        """The Heaviside/Sign map of layer p was just bound: make its packed twin with the
        first rule that applies (integer kernel on a packed input, float conv + threshold +
        pack on a float input, else the float map packed as it is)."""
        pk_in = self.packed.get(p.x) if isinstance(p.x, self.relax.Var) else None
        for rule in (self.integer_layer_packed, self.int8_input_packed, self.float_conv_packed, self.float_map_packed):
            if rule(p, b, pk_in):
                return

    # ------------------------------------------------------------ int8-input layers
    def int8_input_geom(self, p):
        """The Int8ConvGeom of a layer whose input is a quantized tensor (p.input_quant)."""
        from nrqc.targets.kernels.int8_conv import Int8ConvGeom

        iq = p.input_quant
        g = self.conv_geom(p, None, _shape(p.x))
        return Int8ConvGeom(g, tuple(iq.src_shape), iq.src_perm, iq.src_dtype, iq.q_dtype, float(iq.scale),
                            int(iq.zero_point), bool(np.any(p.wq == -128)))

    def int8_input_kernel(self, p, out: str):
        """(output var, geometry) of the int8 x int8 conv kernel of layer p: out "pack"
        (threshold + packed bits) or "float" (int32 -> float, the conv output y)."""
        from nrqc.targets.kernels import int8_select, strategies

        g8 = self.int8_input_geom(p)
        choice = int8_select.choose(g8, self.ctx.target)
        strategy = strategies.int8_input_lookup(choice["strategy"])
        wq = self.weight_oihw(p, p.wq)
        wargs = strategy.weight_args(g8, wq)
        target = self.ctx.target
        gv, name = self.add_kernel(strategy.build(g8, out, target), f"int8conv_{strategy.NAME}_{out}")
        g = g8.conv
        if g8.src_dtype == "float32":  # main_int8 reads the quantized tensor with the same strategy
            q8 = g8.with_source(g8.q_dtype)
            self.int8_twins[name] = (lambda pool=None: strategy.build(q8, out, target, pool),
                                     (g8.q_dtype, g8.scale, g8.zero_point))
        if out == "pack":
            self.recipes[name] = (lambda pool: strategy.build(g8, "pack", target, pool), p.layer)
            args = [p.input_quant.src, *wargs, p.sigma, p.t]
            shape, dtype = (g.n, g.ho, g.wo, g.words_out), "uint32"
        else:
            from nrqc.passes.binary_thresholds import weight_scale

            args = [p.input_quant.src, *wargs, weight_scale(p).astype(np.float32)]
            shape, dtype = (g.n, g.c_out, g.ho, g.wo), "float32"
        var = self.call(gv, args, shape, dtype, "packed" if out == "pack" else "acc_y")
        iq = p.input_quant
        choice["input"] = {"dtype": iq.q_dtype, "scale": float(iq.scale), "zero_point": int(iq.zero_point),
                           "quantize": ("QuantizeLinear fused into the kernel's load" if iq.src_dtype == "float32"
                                        else "input already quantized")}
        self.annotate(p, name, act_bits=8, weight_bits=8, replaced=p.layer.macs if p.layer else 0, choice=choice)
        return var, g

    def int8_input_packed(self, p, b, pk_in: Packed | None) -> bool:
        """Quantized input, int8 weights, folded thresholds: an int8 x int8 conv whose
        epilogue thresholds and packs (the layout the next binary layer reads)."""
        if pk_in is not None or p.input_quant is None or p.sigma is None or p.reason is not None:
            return False
        var, _ = self.int8_input_kernel(p, "pack")
        self._set_packed(b.var, var, _shape(b.var), p.head.encoding)
        return True

    def int8_input_to_float(self, p, b) -> bool:
        """Quantized input, int8 weights, no head (e.g. a dense head on int8 features): the
        same kernel with an int32 -> float epilogue; the model's bias etc. follow in float."""
        if p.input_quant is None or p.weights != "int8" or p.reason is not None or p.wq is None:
            return False
        y, _ = self.int8_input_kernel(p, "float")
        self.out_bindings.append(self.relax.VarBinding(b.var, self.relax.op.reshape(y, _shape(b.var))))
        return True

    def integer_layer_packed(self, p, b, pk_in: Packed | None) -> bool:
        """Packed input, integer weights, folded thresholds: an integer kernel emitting packed bits."""
        if pk_in is None or p.weights not in ("int8", "binary") or p.sigma is None or p.reason is not None or (
                p.kind == "matmul" and pk_in.ndim != 2):
            return False
        res = self.binary_layer(p, pk_in, "pack")
        if res is None:
            return False
        self._set_packed(b.var, res[0], _shape(b.var), p.head.encoding)
        return True

    def float_conv_packed(self, p, b, pk_in: Packed | None) -> bool:
        """Float input (e.g. the log-mel first layer): the float conv fused with its threshold
        and the bit packing in one kernel."""
        from nrqc.targets.kernels import binary_ops as bo
        from nrqc.targets.kernels import build as kbuild

        if pk_in is not None or p.kind not in ("conv2d", "conv1d") or p.affine is None:
            return False
        x = p.x
        src = self._binary_source(x)
        why = ("input is not binary (float features): float conv, its threshold and bit packing "
               "fused into one kernel that emits packed bits") if src is None else (
            f"input is computed from the binary map of {src[0]} by {' + '.join(src[1])} and is neither "
            "a {0,1} nor a {-1,+1} map (2b - 1), so it is not read as bits: float conv, its threshold "
            "and bit packing fused into one kernel that emits packed bits")
        if p.input_quant_reason or (p.input_quant is not None and p.reason):
            why = f"int8 input not taken ({p.input_quant_reason or p.reason}): " + why
        xs = _shape(x)
        g = self.conv_geom(p, None, xs)
        m, k = p.affine
        t = p.head.threshold
        if p.head.flipped:
            m, k, t = -m, -k, -t
        xin, src_shape, src_perm = self._conv_source(x, xs)
        # SIMD hosts vectorize over output channels: weights output-channel-last (an OIHW
        # weight vector is a strided gather: 7.5x slower on the VAD's first layer);
        # scalar C reads one channel's whole filter contiguously: OIHW
        w_layout = "oihw" if self.ctx.target.caps.scalar else "ihwo"
        w = self.weight_oihw(p, p.weight).astype(np.float32)
        if w_layout == "ihwo":
            w = np.ascontiguousarray(w.transpose(1, 2, 3, 0))
        func = kbuild.schedule_float_conv_pack(bo.float_conv_pack(g, strict=p.head.strict, src_shape=src_shape,
                                                                  src_perm=src_perm, w_layout=w_layout),
                                               g, self.ctx.target)
        gv, kname = self.add_kernel(func, "fconv_threshold_pack")
        target, strict = self.ctx.target, p.head.strict
        self.recipes[kname] = (lambda pool: kbuild.schedule_float_conv_pack(
            bo.float_conv_pack(g, strict=strict, pool=pool, src_shape=src_shape, src_perm=src_perm,
                               w_layout=w_layout), g, target, pool), p.layer)
        var = self.call(gv, [xin, w, m.astype(np.float32),
                             k.astype(np.float32), t.astype(np.float32)],
                        (g.n, g.ho, g.wo, g.words_out), "uint32", "packed")
        self.annotate(p, kname, act_bits=32, weight_bits=p.layer.weight_bits if p.layer else 32, replaced=0,
                      reason=why)
        self._set_packed(b.var, var, _shape(b.var), p.head.encoding)
        return True

    def _conv_source(self, x, xs):
        """(var read, its shape, permutation or None) for the float conv's input `x` of shape
        xs: read through a reshape / unsqueeze of the input (no copy of the features); on
        bare metal (C) also through a transpose (e.g. [1, frames, bands] used
        bands-as-channels), so the features are never copied into the arena; on SIMD hosts
        the copy keeps the vectorized padded-row loads contiguous."""

        relax = self.relax
        xin = x
        src = self.defs.get(x)
        if op_name(src) in ("relax.reshape", "relax.expand_dims") and isinstance(src.args[0], relax.Var) \
                and int(np.prod(_shape(src.args[0]))) == int(np.prod(xs)):
            xin = src.args[0]
        src_shape = _shape(xin)
        tsrc = self.defs.get(xin)
        if self.ctx.target.caps.scalar and op_name(tsrc) == "relax.permute_dims" \
                and isinstance(tsrc.args[0], relax.Var) and tsrc.attrs.axes is not None:
            return tsrc.args[0], src_shape, [int(a) for a in tsrc.attrs.axes]
        return xin, src_shape, None

    def float_map_packed(self, p, b, pk_in: Packed | None) -> bool:
        """Not convertible: the layer stays float, its output map is packed for the consumers."""
        from nrqc.targets.kernels import binary_ops as bo

        relax = self.relax
        shape = _shape(b.var)
        if p.layer is not None:
            p.layer.float_reason = p.reason or ("binary input, but " + (
                "its input map is not available packed" if pk_in is None else "no integer kernel applies"))
        n, c = shape[0], shape[1]
        h, w = (shape[2], shape[3]) if len(shape) == 4 else (1, shape[2]) if len(shape) == 3 else (1, 1)
        func = bo.pack_map(n, c, h, w)
        gv, _ = self.add_kernel(func, "pack_map")
        xin = b.var if len(shape) == 4 else self.emit(relax.op.reshape(b.var, (n, c, h, w)), (n, c, h, w), "float32", "m4d")
        var = self.call(gv, [xin], (n, h, w, bo.n_words(c)), "uint32", "packed")
        self.ctx.notes.append(f"{p.layer.name if p.layer else 'layer'}: output map computed in float, then packed")
        self._set_packed(b.var, var, shape, p.head.encoding)
        self.self_packed.add(b.var)
        return True

    def _binary_source(self, x, max_ops: int = 4):
        """(layer name, op names) when float map `x` is computed from a packed binary map by
        elementwise ops with constants (e.g. 3*b - 1, an affine map nrqc does not read as bits),
        else None."""
        from nrqc.passes.binary_patterns import AFFINE_OPS, const_value

        relax = self.relax
        ops = []
        v = x
        for _ in range(max_ops):
            value = self.defs.get(v)
            name = op_name(value)
            if name not in AFFINE_OPS:
                return None
            a, b = value.args
            nxt = a if isinstance(a, relax.Var) and const_value(b) is not None else \
                b if isinstance(b, relax.Var) and const_value(a) is not None else None
            if nxt is None:
                return None
            ops.insert(0, name.split(".")[-1])
            if nxt in self.packed:
                src = next((q for q in self.plan if q.head is not None and q.head.var.same_as(nxt)), None)
                return (src.layer.name if src is not None and src.layer else "an earlier layer"), ops
            v = nxt
        return None

    def _set_packed(self, fvar, pvar, shape, enc):
        n, c = shape[0], shape[1]
        h, w = (shape[2], shape[3]) if len(shape) == 4 else (1, shape[2]) if len(shape) == 3 else (1, 1)
        self.packed[fvar] = Packed(pvar, n, c, h, w, enc, len(shape))

    def pool(self, b):
        from nrqc.targets.kernels import binary_ops as bo
        from nrqc.targets.kernels import build as kbuild

        layer = self.pools[self.seen_pool] if self.seen_pool < len(self.pools) else None
        self.seen_pool += 1
        src = b.value.args[0]
        pk = self.packed.get(src)
        a = b.value.attrs
        if pk is None:
            return
        if bool(a.ceil_mode) or any(int(d) != 1 for d in a.dilation) or str(a.layout) not in ("NCHW", "NCW"):
            if layer:
                layer.float_reason = "max-pool with ceil_mode/dilation/layout the OR-pool does not cover"
            return
        if op_name(b.value) == "relax.nn.max_pool2d":
            kernel, stride, pad = [int(v) for v in a.pool_size], [int(v) for v in a.strides], [int(v) for v in a.padding]
        else:
            kernel = [1, int(a.pool_size[0])]
            stride = [1, int(a.strides[0])]
            pad = [0, int(a.padding[0]), 0, int(a.padding[1])]
        func = kbuild.schedule_elementwise(bo.or_pool(pk.n, pk.h, pk.w, pk.c, kernel, stride, pad), self.ctx.target)
        gv, kname = self.add_kernel(func, "or_pool")
        self.pool_kernels[kname] = ((tuple(kernel), tuple(stride), tuple(pad)), layer)
        shape = _shape(b.var)
        ho, wo = (shape[2], shape[3]) if len(shape) == 4 else (1, shape[2])
        var = self.call(gv, [pk.var], (pk.n, ho, wo, bo.n_words(pk.c)), "uint32", "pooled")
        self.packed[b.var] = Packed(var, pk.n, pk.c, ho, wo, pk.encoding, len(shape))
        if layer:
            self.pool_on_bits(layer, kname)

    def pool_on_bits(self, layer, kernel: str) -> None:
        """A pool layer's entry when its kernel (an OR over packed words) replaced it."""
        layer.kernel, layer.act_bits, layer.float_reason = f"nrqc:{kernel}", 1, None
        self.kernels_used.append({"layer": layer.name, "kernel": kernel})

    def global_pool(self, b):
        from nrqc.targets.kernels import binary_ops as bo

        src = b.value.args[0]
        pk = self.packed.get(src)
        if pk is None:
            return
        layer = self.gpools[self.seen_gpool] if self.seen_gpool < len(self.gpools) else None
        self.seen_gpool += 1
        axes = sorted(int(a) % pk.ndim for a in b.value.attrs.axis) if b.value.attrs.axis is not None else None
        spatial = list(range(2, pk.ndim))
        if axes != spatial:
            if layer:
                layer.float_reason = f"max over axes {axes} is not a global spatial max"
            return
        func = bo.global_or(pk.n, pk.h, pk.w, pk.c)
        gv, kname = self.add_kernel(func, "global_or")
        var = self.call(gv, [pk.var], (pk.n, 1, 1, bo.n_words(pk.c)), "uint32", "gpooled")
        self.packed[b.var] = Packed(var, pk.n, pk.c, 1, 1, pk.encoding, len(_shape(b.var)))
        if layer:
            self.pool_on_bits(layer, kname)


def rewrite(mod, ctx):
    rw = Rewriter(mod, ctx)
    mod = rw.run(mod)
    ctx.binary.kernels = rw.kernels_used
    ctx.binary.recipes = rw.recipes
    ctx.binary.pool_kernels = rw.pool_kernels
    ctx.binary.int8_twins = {name: (make, params) for name, (make, params) in rw.int8_twins.items()}
    # binary-input layers left float must say so (no silent fallback). The input counts as
    # binary when the layer table saw a head in the ONNX graph or when the rewrite had the
    # input map packed (e.g. a dense layer on a globally max-pooled vector).
    from tvm import relax

    for p in rw.plan:
        if p.layer is None or str(p.layer.kernel or "").startswith("nrqc:"):
            continue
        packed_in = isinstance(p.x, relax.Var) and p.x in rw.packed
        if packed_in:
            p.layer.act_bits = 1
        if p.layer.float_reason is None and p.layer.act_bits == 1:
            p.layer.float_reason = p.reason or ("binary input, but no integer kernel applies" if packed_in
                                                   else None)
    return mod
