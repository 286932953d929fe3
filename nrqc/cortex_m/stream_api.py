"""The Cortex-M library's streaming C API: the state pairs in `nrqc_model.h`, and
`nrqc_step` / `nrqc_stream_reset` / `nrqc_stream_state` holding the state in the library.

A streaming model (an LSTM/GRU VAD) takes its state as an input and returns the next state
as an output; `nrqc_run` already takes both as caller pointers. What this adds:

- the pairs (found by name as `nrqc run --stream` finds them: nrqc.streaming.plan_stream),
  as `NRQC_STATE<j>_INPUT/_OUTPUT/_ELEMS` in the header;
- `NRQC_STATE<j>_IN_PLACE`: 1 when `nrqc_run` may be given the same buffer for the state
  input and the state output. Decided from the caller plan: every kernel call reading the
  state input comes strictly before the first call (or the final memcpy) writing the state
  output, and the output is not a copy of the input. Otherwise the caller double-buffers;
- `nrqc_step(<the other inputs>, <the other outputs>)`: the state lives in the library
  (one static buffer per pair when in place, else two used in turn: ping-pong, a flag
  flipped after each successful call), so firmware calls one function per frame and no
  state is copied. `nrqc_stream_reset()` zeros it; `nrqc_stream_state(j)` points at pair
  j's current value (write an initial state there, or read the state after a frame).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from nrqc.cortex_m.emit import ALIGN, CallerPlan, c_type
from nrqc.errors import NrqcError


@dataclasses.dataclass
class StateSlot:
    input: str
    output: str
    input_index: int
    output_index: int
    elems: int
    dtype: str
    in_place: bool

    def manifest(self) -> dict:
        return dataclasses.asdict(self)


def state_slots(inputs, outputs, entries: list[tuple[str, CallerPlan, list]]) -> list[StateSlot]:
    """The model's state pairs (by name and shape, as `nrqc run --stream` finds them), each with
    whether every entry point may run it in place; [] when the model has none (or an input has
    several candidate outputs: then `nrqc run --stream --state` still works through nrqc_run)."""
    from nrqc.streaming import pairs_by_name

    def spec(s):
        return {"name": s.name, "shape": [int(d) for d in s.shape], "dtype": s.dtype}

    manifest = {"inputs": [spec(s) for s in inputs], "outputs": [spec(s) for s in outputs]}
    try:
        pairs = pairs_by_name(manifest)  # (whichever input is streamed: others may be fixed)
    except NrqcError:
        return []
    in_names, out_names = [s.name for s in inputs], [s.name for s in outputs]
    slots = []
    for p in pairs:
        i, k = in_names.index(p.input), out_names.index(p.output)
        safe = all(in_place_safe(plan, i, k) for _, plan, _ in entries)
        slots.append(StateSlot(p.input, p.output, i, k, int(np.prod(p.shape, dtype=np.int64)), p.dtype, safe))
    return slots


def in_place_safe(plan: CallerPlan, in_index: int, out_index: int) -> bool:
    """Whether input `in_index` and output `out_index` may share one buffer in this entry."""
    def touches(bufs, kind, ref):
        return any(b is not None and getattr(b, "kind", None) == kind and b.ref == ref for b in bufs)

    reads, writes = [], []
    for k, (_, bufs) in enumerate(plan.calls):
        args = plan.direct[k][1] if k in plan.direct else bufs
        if touches(args, "input", in_index):
            reads.append(k)
        if touches(args, "output", out_index):
            writes.append(k)
    end = len(plan.calls)  # the final memcpys run after every call
    for src, k, _n in plan.copies:
        if k == out_index:
            if src.kind == "input" and src.ref == in_index:
                return False  # the output is the input passed through
            writes.append(end)
        if src.kind == "input" and src.ref == in_index:
            reads.append(end)
    return not reads or not writes or max(reads) < min(writes)


def step_name(run_name: str) -> str:
    """The streaming entry point of an `nrqc_run*` entry point (nrqc_run_int8 -> nrqc_step_int8)."""
    return run_name.replace("nrqc_run", "nrqc_step", 1)


def stream_api(slots: list[StateSlot], entries: list[tuple[str, CallerPlan, list]], outputs) -> tuple[str, str]:
    """(text for nrqc_model.h, C source appended to nrqc_model.c) of the streaming API."""
    if not slots:
        return "", ""
    state_in = {s.input_index: s for s in slots}
    state_out = {s.output_index: s for s in slots}
    head = ["/* Streaming: the model carries a state from one call to the next. State pair j: input",
            " * NRQC_STATE<j>_INPUT is the state, output NRQC_STATE<j>_OUTPUT its next value.",
            " * With nrqc_run, keep the state in your own buffers: pass the same buffer as in and out",
            " * when NRQC_STATE<j>_IN_PLACE is 1 (every kernel reading the state runs before the first",
            " * write of the next state), else two buffers swapped after each call (no copies either way).",
            " * Or let the library hold it: nrqc_step takes the other inputs and outputs only;",
            " * nrqc_stream_reset() zeros the state, nrqc_stream_state(j) points at pair j's current",
            " * value (to set an initial state or read it after a frame). On a nonzero return of",
            " * nrqc_step the state is not advanced (ping-pong) or undefined (in place). */",
            f"#define NRQC_NUM_STATES {len(slots)}"]
    for j, s in enumerate(slots):
        head += [f"#define NRQC_STATE{j}_INPUT {s.input_index}  /* {s.input} */",
                 f"#define NRQC_STATE{j}_OUTPUT {s.output_index}  /* {s.output} */",
                 f"#define NRQC_STATE{j}_ELEMS {s.elems}u",
                 f"#define NRQC_STATE{j}_IN_PLACE {int(s.in_place)}"]
    head += ["void nrqc_stream_reset(void);", "void *nrqc_stream_state(int j);"]
    src = ["", "/* Streaming: the state held in the library (see nrqc_model.h). */"]
    for j, s in enumerate(slots):
        src.append(f"static {c_type(s.dtype)} nrqc_state{j}[{1 if s.in_place else 2}][{max(s.elems, 1)}] "
                   f"__attribute__((aligned({ALIGN})));")
    src += ["static int nrqc_state_cur;  /* which half of a ping-pong pair holds the current state */", "",
            "void nrqc_stream_reset(void) {",
            *[f"  memset(nrqc_state{j}, 0, sizeof(nrqc_state{j}));" for j in range(len(slots))],
            "  nrqc_state_cur = 0;", "}", "",
            "void *nrqc_stream_state(int j) {", "  switch (j) {",
            *[f"  case {j}: return nrqc_state{j}[{0 if s.in_place else 'nrqc_state_cur'}];"
              for j, s in enumerate(slots)],
            "  default: return 0;", "  }", "}"]
    for run_name, _plan, ins in entries:
        params = [f"const {c_type(x.dtype)} *in{i}" for i, x in enumerate(ins) if i not in state_in]
        params += [f"{c_type(o.dtype)} *out{k}" for k, o in enumerate(outputs) if k not in state_out]
        args = []
        for i in range(len(ins)):
            s = state_in.get(i)
            args.append(f"in{i}" if s is None else
                        f"nrqc_state{slots.index(s)}[{0 if s.in_place else 'c'}]")
        for k in range(len(outputs)):
            s = state_out.get(k)
            args.append(f"out{k}" if s is None else
                        f"nrqc_state{slots.index(s)}[{0 if s.in_place else 'c ^ 1'}]")
        proto = f"int {step_name(run_name)}({', '.join(params) or 'void'})"
        head.append(proto + ";")
        src += ["", proto + " {", "  const int c = nrqc_state_cur;", "  (void)c;",
                f"  int rc = {run_name}({', '.join(args)});", "  if (rc == 0) nrqc_state_cur = c ^ 1;",
                "  return rc;", "}"]
    return "\n".join(head) + "\n", "\n".join(src) + "\n"
