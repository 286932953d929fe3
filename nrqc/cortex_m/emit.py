"""C emission: TVM's C kernels + a caller generated from the planned Relax main.

The caller walks the bindings of `main` after `relax.StaticPlanBlockMemory`:
`alloc_storage` blocks become offsets in one static arena (`nrqc_arena`, size known at
compile time), `alloc_tensor` views become DLTensors on those offsets, reshapes alias
their input, the tensor returned by main is written straight into the caller's output
buffer, and every kernel call becomes a direct call of the generated
`__tvm_ffi_<kernel>` function with `TVMFFIAny` arguments carrying `DLTensor*`.
Weights become `const` arrays (flash). Kernel temporaries still requested through
`TVMBackendAllocWorkspace` come from the tail of the same arena (a LIFO bump allocator
in nrqc_runtime.c), sized from the requests in the generated kernels.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np

from nrqc.errors import NrqcError

ALIGN = 16
SOURCES = ("nrqc_kernels.c", "nrqc_model.c", "nrqc_weights.c", "nrqc_runtime.c")
HEADER = "nrqc_model.h"
DSP_HEADER = "nrqc_dsp.h"  # nrqc's hand-written Cortex-M kernels (nrqc/cortex_m/kernels/), shipped with the library


def _align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def c_ident(name: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_]", "_", name)
    return s if s and not s[0].isdigit() else f"_{s}"


_DL_CODES = {"int": "kDLInt", "uint": "kDLUInt", "float": "kDLFloat", "bool": "kDLBool"}
_C_TYPES = {"float32": "float", "float64": "double", "int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t",
            "uint16": "uint16_t", "int32": "int32_t", "uint32": "uint32_t", "int64": "int64_t",
            "uint64": "uint64_t", "bool": "uint8_t"}


def dl_dtype(dtype: str) -> str:
    if dtype == "bool":
        return "{kDLBool, 8, 1}"
    m = re.fullmatch(r"([a-z]+?)(\d+)", dtype)
    if not m or m.group(1) not in _DL_CODES:
        raise NrqcError(f"cortex-m: tensor dtype {dtype} has no C representation")
    return f"{{{_DL_CODES[m.group(1)]}, {m.group(2)}, 1}}"


def c_type(dtype: str) -> str:
    if dtype not in _C_TYPES:
        raise NrqcError(f"cortex-m: tensor dtype {dtype} has no C representation")
    return _C_TYPES[dtype]


@dataclasses.dataclass
class Buf:
    """Where a Relax tensor lives: arena offset, a weight, an input or the output."""

    kind: str  # "arena" | "weight" | "input" | "output"
    ref: object  # arena byte offset, weight index, input index, output index
    shape: tuple[int, ...]
    dtype: str

    def data_expr(self) -> str:
        if self.kind == "arena":
            return f"(void *)(nrqc_arena + {self.ref})"
        if self.kind == "weight":
            return f"(void *)nrqc_w{self.ref}"
        if self.kind == "input":
            return f"(void *)in{self.ref}"
        return f"(void *)out{self.ref}"


@dataclasses.dataclass
class CallerPlan:
    calls: list[tuple[str, list[Buf]]]
    weights: list[np.ndarray]
    storage_bytes: int  # planned arena part (activations)
    copies: list[tuple[Buf, int, int]]  # (source, output index, nbytes): outputs not written in place
    # call index -> (C function of nrqc_dsp.h, its arguments: Buf, int or None for NULL), called
    # directly instead of the TVM kernel (the int8 entry point's first layer, `int8_twin`)
    direct: dict = dataclasses.field(default_factory=dict)


def _extern_call(func):
    """(C function name, [param index | int]) of a hand-written kernel whose body is one
    call_extern of a nrqc_dsp.h function; None for other kernels."""
    import tvm

    found = []

    def visit(node):  # the few statement kinds such a kernel holds (blocks, sequences, evaluate)
        if isinstance(node, tvm.ir.expr.Call):
            if getattr(node.op, "name", "") == "tirx.call_extern":
                found.append(node)
            return
        for field in ("seq",):
            for child in getattr(node, field, None) or []:
                visit(child)
        for field in ("block", "body", "value"):
            child = getattr(node, field, None)
            if child is not None and not isinstance(child, (int, float, str)):
                visit(child)

    visit(func.body)
    if len(found) != 1:
        return None
    call = found[0]
    args = []
    for a in call.args[1:]:
        # a buffer's data pointer is tirx.buffer_data(<the parameter>) in TVM 0.27's TIR
        if isinstance(a, tvm.ir.expr.Call) and getattr(a.op, "name", "") == "tirx.buffer_data":
            index = [i for i, p in enumerate(func.params) if p.same_as(a.args[0])]
            if not index:
                return None
            args.append(("param", index[0]))
        elif isinstance(a, tvm.tirx.IntImm):
            args.append(int(a.value))
        else:
            return None
    return str(call.args[0].value), args


def int8_twin(mod, plan: CallerPlan, quant, q_spec) -> CallerPlan | None:
    """The int8 entry point as `plan` (main's calls, kernels, arena) with only the first
    layer changed: when the one kernel reading the quantized float input is nrqc_dsp.h's
    SMLAD conv (the QuantizeLinear fused into its load), call the same C function reading the
    int8/uint8 input directly (its source-kind argument). None when main is not like that
    (then main_int8 goes through the pipeline on its own)."""
    readers = [k for k, (_, bufs) in enumerate(plan.calls)
               if any(b.kind == "input" and b.ref == quant.index for b in bufs)]
    if len(readers) != 1:
        return None
    k = readers[0]
    name, bufs = plan.calls[k]
    ext = _extern_call(mod[name]) if name in [gv.name_hint for gv in mod.functions] else None
    if ext is None or ext[0] != "nrqc_s8_conv_smlad":
        return None
    fname, args = ext
    consts = args[7:]
    scale_bits = int(np.array([quant.scale], np.float32).view(np.uint32)[0])
    if consts[:4] != [0, scale_bits, quant.zero_point, int(quant.dtype == "uint8")]:
        return None
    q_buf = Buf("input", quant.index, tuple(q_spec.shape), quant.dtype)
    call_args = []
    for a in args[:7]:
        if isinstance(a, tuple):
            b = bufs[a[1]]
            call_args.append(q_buf if b.kind == "input" and b.ref == quant.index else b)
        else:
            call_args.append(None)
    call_args += [1 if quant.dtype == "int8" else 2, *consts[1:]]
    return dataclasses.replace(plan, direct={**plan.direct, k: (fname, call_args)})


def plan_caller(mod, inputs, outputs, func_name: str = "main", weights: list | None = None) -> CallerPlan:
    """Turn main's bindings into arena offsets and an ordered list of kernel calls."""
    import tvm
    from tvm import relax

    ops = {n: tvm.ir.Op.get(n) for n in ("relax.memory.alloc_storage", "relax.memory.alloc_tensor",
                                         "relax.builtin.alloc_tensor", "relax.reshape")}
    main = mod[func_name]
    env: dict = {}
    for i, p in enumerate(main.params):
        env[p] = Buf("input", i, tuple(inputs[i].shape), inputs[i].dtype)
    ret = main.body.body
    # several outputs: main binds a Tuple of them and returns that var
    tuples = {b.var: b.value for block in main.body.blocks for b in block.bindings if isinstance(b.value, relax.Tuple)}
    ret = tuples.get(ret, ret) if isinstance(ret, relax.Var) else ret
    ret_vars = list(ret.fields) if isinstance(ret, relax.Tuple) else [ret]
    # Vars that (through aliases) are returned: their builtin.alloc_tensor writes the output.
    aliases: dict = {}
    for block in main.body.blocks:
        for b in block.bindings:
            if isinstance(b.value, relax.Var):
                aliases[b.var] = b.value
            elif isinstance(b.value, relax.Call) and b.value.op.same_as(ops["relax.reshape"]):
                aliases[b.var] = b.value.args[0]

    def root(v):
        while v in aliases:
            v = aliases[v]
        return v

    out_index = {}
    for k, v in enumerate(ret_vars):
        if isinstance(v, relax.Var):
            out_index.setdefault(root(v), k)

    storage: dict = {}
    offset = 0
    weights = [] if weights is None else weights  # shared between entry points: each array stored once
    calls = []

    def shape_of(sinfo):
        return tuple(int(d) for d in sinfo.shape)

    def arg_buf(a):
        if isinstance(a, relax.Var):
            if a not in env:
                raise NrqcError(f"cortex-m: kernel argument {a.name} has no planned buffer")
            return env[a]
        if isinstance(a, tvm.ir.GenericConst) and hasattr(a.value, "numpy"):
            arr = a.value.numpy()
            for idx, w in enumerate(weights):
                if w.dtype == arr.dtype and w.shape == arr.shape and np.array_equal(w, arr):
                    return Buf("weight", idx, w.shape, str(w.dtype))
            weights.append(arr)
            return Buf("weight", len(weights) - 1, arr.shape, str(arr.dtype))
        raise NrqcError(f"cortex-m: unsupported kernel argument {type(a).__name__} in main")

    for block in main.body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Var):
                env[b.var] = env[v]
            elif isinstance(v, relax.Tuple) and b.var.same_as(main.body.body):
                continue  # the returned tuple: its fields are the outputs (above)
            elif isinstance(v, relax.Call) and v.op.same_as(ops["relax.memory.alloc_storage"]):
                nbytes = int(v.args[0].values[0])
                storage[b.var] = offset
                offset = _align(offset + nbytes)
            elif isinstance(v, relax.Call) and v.op.same_as(ops["relax.memory.alloc_tensor"]):
                sinfo = b.var.ty
                env[b.var] = Buf("arena", storage[v.args[0]] + int(v.args[1].value), shape_of(sinfo),
                                 str(sinfo.dtype))
            elif isinstance(v, relax.Call) and v.op.same_as(ops["relax.builtin.alloc_tensor"]):
                sinfo = b.var.ty
                shape, dtype = shape_of(sinfo), str(sinfo.dtype)
                if b.var in out_index:
                    env[b.var] = Buf("output", out_index[b.var], shape, dtype)
                else:  # an unplanned temporary: give it its own arena block
                    env[b.var] = Buf("arena", offset, shape, dtype)
                    offset = _align(offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(_np(dtype)).itemsize)
            elif isinstance(v, relax.Call) and v.op.same_as(ops["relax.reshape"]):
                src = env[v.args[0]]
                env[b.var] = dataclasses.replace(src, shape=shape_of(b.var.ty))
            elif isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.GlobalVar):
                calls.append((v.op.name_hint, [arg_buf(a) for a in v.args]))
            elif isinstance(v, relax.Tuple) and all(isinstance(f, relax.Var) and f in env for f in v.fields):
                env[b.var] = [env[f] for f in v.fields]  # a kernel's outputs (e.g. a result + its scratch)
            elif isinstance(v, relax.TupleGetItem) and isinstance(_tuple_bufs(v.tuple_value, env, relax), list):
                env[b.var] = _tuple_bufs(v.tuple_value, env, relax)[v.index]
            else:
                what = v.op.name if isinstance(v, relax.Call) and hasattr(v.op, "name") else type(v).__name__
                if isinstance(v, relax.TupleGetItem):
                    what += f" of {type(v.tuple_value).__name__} ({'planned' if v.tuple_value in env else 'unplanned'})"
                raise NrqcError(f"cortex-m: main binds {what}, which the bare-metal caller cannot emit")
    copies = []
    for k, v in enumerate(ret_vars):
        if not isinstance(v, relax.Var) or v not in env:
            raise NrqcError("cortex-m: main returns something other than planned tensors")
        buf = env[v]
        if not (buf.kind == "output" and buf.ref == k):
            nbytes = int(np.prod(outputs[k].shape, dtype=np.int64)) * np.dtype(outputs[k].dtype).itemsize
            copies.append((buf, k, nbytes))
    return CallerPlan(calls, weights, offset, copies)


def _tuple_bufs(value, env, relax):
    """The buffers of a tuple of planned tensors (a bound tuple var, or an inline tuple)."""
    if isinstance(value, relax.Tuple):
        return [env.get(f) for f in value.fields] if all(f in env for f in value.fields) else None
    return env.get(value)


def _np(dtype: str) -> str:
    return "uint8" if dtype == "bool" else dtype


def workspace_bytes(kernel_source: str) -> int:
    """Bytes the bump allocator must hold: per kernel, the sum of its workspace requests
    (each rounded up to the allocator's alignment); kernels run one at a time."""
    worst = 0
    for body in re.split(r"\nTVM_DLL int32_t ", kernel_source):
        sizes = [int(s) for s in re.findall(r"TVMBackendAllocWorkspace\([^,]+,[^,]+,\s*\(uint64_t\)(\d+)ULL", body)]
        worst = max(worst, sum(_align(s) for s in sizes))
    return worst


def _c_array(arr: np.ndarray) -> str:
    flat = arr.reshape(-1)
    if flat.dtype == np.float32:
        items = [_float_literal(x) for x in flat.tolist()]
    elif flat.dtype == np.bool_:
        items = [str(int(x)) for x in flat.tolist()]
    elif flat.dtype.kind == "u":
        items = [f"{int(x)}u" + ("LL" if flat.dtype.itemsize == 8 else "") for x in flat.tolist()]
    elif flat.dtype.kind == "i":
        items = [(f"({int(x)}LL)" if flat.dtype.itemsize == 8 else f"({int(x)})") for x in flat.tolist()]
    elif flat.dtype == np.float64:
        items = [float(x).hex() for x in flat.tolist()]
    else:
        raise NrqcError(f"cortex-m: weights of dtype {flat.dtype} are not supported")
    lines = []
    for i in range(0, len(items), 8):
        lines.append("  " + ", ".join(items[i:i + 8]) + ",")
    return "\n".join(lines) if lines else "  0"


def _float_literal(x: float) -> str:
    """Exact C99 hex-float literal of a float32 value."""
    if np.isnan(x):
        return "(0.0f / 0.0f)"
    if np.isinf(x):
        return "(1.0f / 0.0f)" if x > 0 else "(-1.0f / 0.0f)"
    return float(x).hex() + "f"


def c_array_literal(arr: np.ndarray) -> str:
    return _c_array(np.ascontiguousarray(arr))


def _io_decl(specs, prefix, const) -> list[str]:
    return [f"{'const ' if const else ''}{c_type(s.dtype)} *{prefix}{i}" for i, s in enumerate(specs)]


def write_library(stage: Path, kernel_source: str, entries: list, outputs, model_name: str,
                  include_dirs: list[Path], extra_header: str = "", extra_source: str = "") -> dict:
    """Write the C library into `stage` and return its sizes (arena, workspace, weights).

    entries: [(C function name, CallerPlan, input specs)], the first being `nrqc_run`;
    all share the kernels, the weights and the arena (they never run at the same time).
    extra_source: C appended to nrqc_model.c (the streaming API, nrqc.cortex_m.stream_api)."""
    plan, inputs = entries[0][1], entries[0][2]
    storage = max(_align(p.storage_bytes) for _, p, _ in entries)
    ws = workspace_bytes(kernel_source)
    arena = storage + _align(ws)
    arena = max(arena, ALIGN)
    # Kernels: TVM's C codegen output, verbatim but for the header prelude.
    # nrqc's hand-written kernels (the popcount and the kernels the TIR calls by name) come first
    (stage / "nrqc_kernels.c").write_text(
        "/* Generated by TVM's C code generator (target kind \"c\") for nrqc; do not edit. */\n"
        f'#include "{DSP_HEADER}"\n' + kernel_source)
    shutil.copyfile(Path(__file__).parent / "kernels" / DSP_HEADER, stage / DSP_HEADER)
    in_params = ", ".join(_io_decl(inputs, "in", True) + _io_decl(outputs, "out", False))
    protos = "\n".join(f"int {name}({', '.join(_io_decl(ins, 'in', True) + _io_decl(outputs, 'out', False))});"
                        for name, _, ins in entries)
    doc_in = "\n".join(f" *   in{i}: {s.name} {list(s.shape)} {s.dtype}" for i, s in enumerate(inputs))
    doc_out = "\n".join(f" *   out{i}: {s.name} {list(s.shape)} {s.dtype}" for i, s in enumerate(outputs))
    header = f"""/* nrqc bare-metal model library: {model_name}
 *
 * {protos.replace(chr(10), chr(10) + " * ")}
{doc_in}
{doc_out}
 * Returns 0 on success, the failing kernel's nonzero status otherwise.
 * Memory: weights are const (flash); activations live in one static arena of
 * NRQC_ARENA_BYTES bytes (no heap); not reentrant.
 */
#ifndef NRQC_MODEL_H_
#define NRQC_MODEL_H_
#include <stdint.h>
#ifdef __cplusplus
extern "C" {{
#endif
#define NRQC_ARENA_BYTES {arena}u
#define NRQC_NUM_INPUTS {len(inputs)}
#define NRQC_NUM_OUTPUTS {len(outputs)}
{"".join(f"#define NRQC_INPUT{i}_ELEMS {int(np.prod(s.shape, dtype=np.int64))}u{chr(10)}" for i, s in enumerate(inputs))}{"".join(f"#define NRQC_OUTPUT{i}_ELEMS {int(np.prod(s.shape, dtype=np.int64))}u{chr(10)}" for i, s in enumerate(outputs))}
{extra_header}{protos}
#ifdef __cplusplus
}}
#endif
#endif
"""
    (stage / HEADER).write_text(header)

    # Weights.
    w = ['/* Model weights (const: linked into flash). */', '#include <stdint.h>', ""]
    for i, arr in enumerate(plan.weights):
        ct = c_type(str(arr.dtype))
        w.append(f"const {ct} nrqc_w{i}[{max(arr.size, 1)}] __attribute__((aligned({ALIGN}))) = {{")
        w.append(c_array_literal(arr))
        w.append("};")
    (stage / "nrqc_weights.c").write_text("\n".join(w) + "\n")

    # Runtime stubs: the arena, the workspace allocator, error reporting.
    (stage / "nrqc_runtime.c").write_text(f"""/* The few TVM backend functions the generated kernels call, for bare metal:
 * workspace requests are served LIFO from the tail of the static arena. No heap. */
#include <stddef.h>
#include <stdint.h>
#include "tvm/ffi/c_api.h"
#include "tvm/runtime/c_backend_api.h"

#define NRQC_STORAGE_BYTES {storage}u
#define NRQC_WORKSPACE_BYTES {_align(ws)}u
uint8_t nrqc_arena[{arena}] __attribute__((aligned({ALIGN})));
static size_t nrqc_ws_top = 0;
const char *nrqc_last_error = 0;

void *TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code_hint,
                               int dtype_bits_hint) {{
  (void)device_type; (void)device_id; (void)dtype_code_hint; (void)dtype_bits_hint;
  size_t n = (size_t)((nbytes + {ALIGN - 1}u) & ~(uint64_t){ALIGN - 1}u);
  if (nrqc_ws_top + n > NRQC_WORKSPACE_BYTES) {{ nrqc_last_error = "workspace exhausted"; return NULL; }}
  void *p = nrqc_arena + NRQC_STORAGE_BYTES + nrqc_ws_top;
  nrqc_ws_top += n;
  return p;
}}

int TVMBackendFreeWorkspace(int device_type, int device_id, void *ptr) {{
  (void)device_type; (void)device_id;
  uint8_t *base = nrqc_arena + NRQC_STORAGE_BYTES;
  if ((uint8_t *)ptr >= base && (uint8_t *)ptr < base + NRQC_WORKSPACE_BYTES) nrqc_ws_top = (size_t)((uint8_t *)ptr - base);
  return 0;
}}

void TVMFFIErrorSetRaisedFromCStrParts(const char *kind, const char **parts, int32_t num_parts) {{
  (void)parts; (void)num_parts;
  nrqc_last_error = kind;
}}

void TVMFFIErrorSetRaisedFromCStr(const char *kind, const char *message) {{
  (void)message;
  nrqc_last_error = kind;
}}
""")

    # The caller.
    lines = ['/* Generated caller: kernels in the order of the static memory plan. */',
             "#include <stdint.h>", "#include <string.h>", '#include "tvm/ffi/c_api.h"', f'#include "{HEADER}"',
             *([f'#include "{DSP_HEADER}"'] if any(p.direct for _, p, _ in entries) else []), "",
             "extern uint8_t nrqc_arena[];"]
    for i, arr in enumerate(plan.weights):
        lines.append(f"extern const {c_type(str(arr.dtype))} nrqc_w{i}[];")
    kernels = sorted({name for _, p, _ in entries for k, (name, _) in enumerate(p.calls) if k not in p.direct})
    for k in kernels:
        lines.append(f"int32_t __tvm_ffi_{k}(void *self, void *args, int32_t num_args, void *result);")
    shapes: dict[tuple, str] = {}
    for _, p, _ in entries:
        for _, bufs in p.calls:
            for b in bufs:
                if b.shape not in shapes:
                    shapes[b.shape] = f"nrqc_shape{len(shapes)}"
    for shp, name in shapes.items():
        lines.append(f"static const int64_t {name}[{max(len(shp), 1)}] = {{{', '.join(str(d) for d in shp) or '0'}}};")
    for fname, p, ins in entries:
        params = ", ".join(_io_decl(ins, "in", True) + _io_decl(outputs, "out", False))
        lines.append("")
        lines.append(f"int {fname}({params}) {{")
        lines.append("  TVMFFIAny args[%d];" % max([len(b) for _, b in p.calls] + [1]))
        lines.append("  TVMFFIAny ret;")
        lines.append("  int32_t rc;")
        for k, (name, bufs) in enumerate(p.calls):
            if k in p.direct:
                fname, args = p.direct[k]
                text = ", ".join("0" if a is None else a.data_expr() if isinstance(a, Buf) else
                                 (f"{a}u" if a >= 0 else f"({a})") for a in args)
                lines.append(f"  /* {name}, reading the quantized input directly */")
                lines.append(f"  rc = {fname}({text});")
                lines.append("  if (rc != 0) return rc;")
                continue
            lines.append(f"  {{ /* {name} */")
            for j, b in enumerate(bufs):
                lines.append(f"    DLTensor t{j} = {{{b.data_expr()}, {{kDLCPU, 0}}, {len(b.shape)}, {dl_dtype(b.dtype)}, "
                             f"(int64_t *){shapes[b.shape]}, NULL, 0}};")
            lines.append(f"    memset(args, 0, sizeof(TVMFFIAny) * {len(bufs)});")
            for j in range(len(bufs)):
                lines.append(f"    args[{j}].type_index = kTVMFFIDLTensorPtr; args[{j}].v_ptr = &t{j};")
            lines.append(f"    rc = __tvm_ffi_{name}(NULL, args, {len(bufs)}, &ret);")
            lines.append("    if (rc != 0) return rc;")
            lines.append("  }")
        for buf, k, nbytes in p.copies:
            lines.append(f"  memcpy(out{k}, {buf.data_expr()}, {nbytes});")
        lines.append("  return 0;")
        lines.append("}")
    (stage / "nrqc_model.c").write_text("\n".join(lines) + "\n" + extra_source)

    # The headers the sources include, copied from the wheel: the directory is self-contained.
    inc = stage / "include"
    for rel in ("tvm/ffi/c_api.h", "tvm/ffi/extra/c_env_api.h", "dlpack/dlpack.h", "tvm/runtime/base.h",
                "tvm/runtime/c_backend_api.h"):
        for d in include_dirs:
            if (d / rel).exists():
                (inc / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(d / rel, inc / rel)
                break
        else:
            raise NrqcError(f"cortex-m: header {rel} not found in the TVM wheel ({', '.join(map(str, include_dirs))})")
    return {"arena_bytes": arena, "workspace_bytes": _align(ws), "storage_bytes": storage,
            "weights": len(plan.weights), "kernel_calls": len(plan.calls),
            "entry_points": [name for name, _, _ in entries]}
