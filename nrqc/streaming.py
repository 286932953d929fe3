"""Streaming a compiled model frame by frame, carrying its state between calls.

A streaming model (an LSTM/GRU VAD, a causal conv net with a cache) takes one chunk of the
signal plus its state, and returns its outputs plus the next state. From the manifest alone:

- the **state pairs**: an input and an output of the same shape and dtype whose names follow
  a convention (`state` -> `stateN`, `state_out`, `new_state`, `h0` -> `hn`, ...), or given
  explicitly (`--state IN=OUT`); an input with several candidate outputs is refused;
- the **stream input**: the one input left (not a state, not fixed by `--input`); its
  time axis (by default the first axis that is not a leading batch axis of 1) is the axis
  the signal is cut along, in chunks of the model's length on that axis (no overlap);
- the **initial state**: zeros, or a file per state input (`--initial-state NAME=FILE.npy`).

The loop keeps each next state as the handle the session returned (on the device for a TVM
library: no copy back and forth) and reads only the other outputs each frame.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nrqc.errors import NrqcError

# output names that carry the input `X`'s next value (X, X with a trailing 0 or _in removed)
_STATE_OUT_FORMS = ("{}N", "{}n", "{}_out", "{}_new", "{}_next", "new_{}", "next_{}", "out_{}", "{}out")


@dataclass
class StatePair:
    input: str
    output: str
    shape: tuple
    dtype: str


@dataclass
class StreamPlan:
    """Which input is streamed (and along which axis), which inputs are state, which fixed."""

    stream_input: str
    shape: tuple  # the stream input's shape in the artifact (one chunk)
    dtype: str
    time_axis: int
    states: list[StatePair]
    fixed: list[str] = field(default_factory=list)  # inputs given once (`--input`), the same every frame

    @property
    def chunk(self) -> int:
        """Time steps per call (the stream input's length on its time axis)."""
        return int(self.shape[self.time_axis])


def _spec(specs: list[dict], name: str) -> dict | None:
    return next((s for s in specs if s["name"] == name), None)


def _state_output_names(name: str) -> set[str]:
    bases = {name}
    for tail in ("0", "_in", "_0"):
        if name.endswith(tail) and len(name) > len(tail):
            bases.add(name[: -len(tail)])
    out = {form.format(b) for b in bases for form in _STATE_OUT_FORMS}
    if name.endswith("_in"):
        out.add(name[:-3] + "_out")
    return out - {name}


def _same_kind(a: dict, b: dict) -> bool:
    return list(a["shape"]) == list(b["shape"]) and a["dtype"] == b["dtype"]


def pairs_by_name(manifest: dict, pairs: list[StatePair] | None = None, skip=frozenset()) -> list[StatePair]:
    """`pairs` (given with --state) plus the state pairs found by name and shape among the
    other inputs (not in `skip`); an input with several candidate outputs is refused."""
    pairs = list(pairs or [])
    taken = {p.output for p in pairs}
    for spec in manifest["inputs"]:
        name = spec["name"]
        if name in skip or any(p.input == name for p in pairs):
            continue
        alike = [o for o in manifest["outputs"] if o["name"] not in taken and _same_kind(o, spec)]
        named = [o["name"] for o in alike if o["name"] in _state_output_names(name)]
        if len(named) > 1:
            raise NrqcError(f"input '{name}' could be carried by several outputs ({', '.join(named)}): "
                            f"say which with --state {name}=OUTPUT")
        if named:
            pairs.append(StatePair(name, named[0], tuple(spec["shape"]), spec["dtype"]))
            taken.add(named[0])
    return pairs


def plan_stream(manifest: dict, stream_input: str | None = None, explicit: tuple[str, ...] = (),
                fixed: tuple[str, ...] = (), time_axis: int | None = None) -> StreamPlan:
    """The streaming plan of an artifact (see the module docstring); every refusal is one line."""
    inputs, outputs = manifest["inputs"], manifest["outputs"]
    in_names, out_names = [s["name"] for s in inputs], [s["name"] for s in outputs]
    pairs: list[StatePair] = []
    for opt in explicit:
        i, sep, o = opt.partition("=")
        if not sep or not i or not o:
            raise NrqcError(f"--state {opt}: expected INPUT=OUTPUT (for example state=stateN)")
        si, so = _spec(inputs, i), _spec(outputs, o)
        if si is None:
            raise NrqcError(f"--state {opt}: the model has no input '{i}' (inputs: {', '.join(in_names)})")
        if so is None:
            raise NrqcError(f"--state {opt}: the model has no output '{o}' (outputs: {', '.join(out_names)})")
        if not _same_kind(si, so):
            raise NrqcError(f"--state {opt}: input '{i}' is {si['shape']} {si['dtype']} but output '{o}' is "
                            f"{so['shape']} {so['dtype']}: a state must keep its shape and dtype")
        if any(p.input == i or p.output == o for p in pairs):
            raise NrqcError(f"--state {opt}: '{i}' or '{o}' is already in another --state pair")
        pairs.append(StatePair(i, o, tuple(si["shape"]), si["dtype"]))
    if stream_input is not None and stream_input not in in_names:
        raise NrqcError(f"--stream {stream_input}=...: the model has no input '{stream_input}' "
                        f"(inputs: {', '.join(in_names)})")
    if stream_input in [p.input for p in pairs]:
        raise NrqcError(f"--stream {stream_input}=...: '{stream_input}' is also a --state input")
    pairs = pairs_by_name(manifest, pairs, skip={stream_input, *fixed})
    left = [n for n in in_names if n not in fixed and not any(p.input == n for p in pairs)]
    if stream_input is None:
        if len(left) != 1:
            raise NrqcError(
                (f"cannot tell which input to stream: {', '.join(left)} are neither state (--state IN=OUT) nor "
                 f"fixed (--input NAME=FILE.npy); name it with --stream NAME=FILE") if left else
                (f"every input of the model is a state or fixed ({', '.join(in_names)}): nothing to stream; "
                 f"name the streamed input with --stream NAME=FILE"))
        stream_input = left[0]
    elif len(left) > 1:
        others = [n for n in left if n != stream_input]
        raise NrqcError(f"input(s) {', '.join(others)} are neither streamed, state (--state IN=OUT) nor fixed "
                        f"(--input NAME=FILE.npy)")
    spec = _spec(inputs, stream_input)
    shape = tuple(int(d) for d in spec["shape"])
    if not shape:
        raise NrqcError(f"input '{stream_input}' is a scalar: there is no time axis to stream along")
    if time_axis is None:
        time_axis = next((k for k, d in enumerate(shape) if d != 1), len(shape) - 1)
    elif not -len(shape) <= time_axis < len(shape):
        raise NrqcError(f"--time-axis {time_axis}: input '{stream_input}' {list(shape)} has {len(shape)} axes")
    return StreamPlan(stream_input, shape, spec["dtype"], time_axis % len(shape), pairs, list(fixed))


def frames_of(arr: np.ndarray, plan: StreamPlan, what: str) -> tuple[np.ndarray, int]:
    """`arr` as [K, *plan.shape] chunks, and the count of trailing time steps left over.

    Either already framed (`[K, *shape]`, or `[K, *core]` with the leading batch axes of 1
    dropped) or one long signal: the chunk shape with its time axis any length (e.g. a [N]
    signal for a [1, 512] input, a [T, 40] feature matrix for a [1, 100, 40] input)."""
    shape, t = plan.shape, plan.time_axis
    lead = next((k for k, d in enumerate(shape) if d != 1), len(shape))
    lead = min(lead, t)  # batch axes of 1 in front of the time axis
    core, ct = shape[lead:], t - lead
    if arr.ndim in (len(shape) + 1, len(core) + 1) and tuple(arr.shape[1:]) in (shape, core):
        return arr.reshape((arr.shape[0], *shape)), 0
    if arr.ndim == len(core) and all(a == c for k, (a, c) in enumerate(zip(arr.shape, core)) if k != ct):
        k, left = divmod(arr.shape[ct], core[ct])
        body = np.take(arr, np.arange(k * core[ct]), axis=ct)
        parts = np.split(body, k, axis=ct) if k else []
        framed = np.stack([p.reshape(shape) for p in parts]) if parts else np.zeros((0, *shape), arr.dtype)
        return framed, left
    want = list(core)
    want[ct] = "T"
    raise NrqcError(f"{what}: shape {list(arr.shape)} is neither frames [K, {', '.join(map(str, shape))}] nor a "
                    f"signal [{', '.join(map(str, want))}] for input '{plan.stream_input}' {list(shape)} "
                    f"(time axis {plan.time_axis})")


def frontend_of(manifest: dict) -> dict | None:
    """How the model computes its input from audio, when its ONNX file records it."""
    raw = manifest.get("frontend")
    return json.loads(raw) if isinstance(raw, str) else raw


def load_stream_file(path: str | Path, manifest: dict, plan: StreamPlan) -> tuple[np.ndarray, int]:
    """The stream file as frames: a .npy (features or samples), or audio turned into the
    model's features by the frontend its ONNX file records (refused when it records none)."""
    p = Path(path)
    if not p.is_file():
        raise NrqcError(f"--stream {path}: no such file")
    if p.suffix.lower() != ".npy":
        front = frontend_of(manifest)
        if not front:
            raise NrqcError(f"--stream {path}: the model does not record how to turn audio into its input "
                            f"'{plan.stream_input}' {list(plan.shape)} (no nrqc.frontend in its ONNX metadata); "
                            f"give the input itself as a .npy")
        from nrqc.data.audio import load_audio
        from nrqc.data.features import log_mel

        audio = load_audio(p, int(front["sample_rate"]))
        arr = log_mel(audio, int(front["n_mels"]))[:, : int(front.get("bands_kept", front["n_mels"]))]
    else:
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - any unreadable file: one line
            raise NrqcError(f"--stream {path}: not a .npy file ({type(e).__name__})") from None
    quant = manifest.get("int8_input") or {}
    already_quantized = quant.get("input") == plan.stream_input and str(arr.dtype) == quant.get("dtype")
    if str(arr.dtype) != plan.dtype and not already_quantized:  # (quantized frames run main_int8)
        if not (np.issubdtype(arr.dtype, np.floating) and plan.dtype.startswith("float")):
            raise NrqcError(f"--stream {path}: {arr.dtype} data for input '{plan.stream_input}', which is {plan.dtype}")
        arr = arr.astype(plan.dtype)
    frames, left = frames_of(arr, plan, f"--stream {path}")
    if not len(frames):
        raise NrqcError(f"--stream {path}: {left} time step(s), fewer than one chunk of {plan.chunk} along axis "
                        f"{plan.time_axis} of input '{plan.stream_input}' {list(plan.shape)}: nothing to run")
    return frames, left


def initial_states(plan: StreamPlan, options: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Zeros for every state input, or `--initial-state NAME=FILE.npy`."""
    states = {p.input: np.zeros(p.shape, p.dtype) for p in plan.states}
    for opt in options:
        name, sep, path = opt.partition("=")
        if not sep:
            raise NrqcError(f"--initial-state {opt}: expected NAME=FILE.npy")
        pair = next((p for p in plan.states if p.input == name), None)
        if pair is None:
            raise NrqcError(f"--initial-state {opt}: '{name}' is not a state input "
                            f"(state inputs: {', '.join(p.input for p in plan.states) or 'none'})")
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise NrqcError(f"--initial-state {opt}: cannot read {path} as .npy ({type(e).__name__})") from None
        if tuple(arr.shape) != pair.shape:
            raise NrqcError(f"--initial-state {opt}: shape {list(arr.shape)}, state '{name}' is {list(pair.shape)}")
        states[name] = arr.astype(pair.dtype)
    return states


@dataclass
class StreamResult:
    outputs: dict[str, np.ndarray]  # every output, stacked over frames: [K, *shape]
    seconds: list[float]  # wall time of each call (frame in, outputs and next state back)
    final_states: dict[str, np.ndarray]
    instructions: list[int] | None = None  # per frame, where the stream runs counted (Cortex-M in QEMU)


def run_stream(session, manifest: dict, plan: StreamPlan, frames: np.ndarray, states: dict[str, np.ndarray],
               fixed: dict[str, np.ndarray] | None = None, progress=None, every_state: bool = True,
               log=lambda m: None) -> StreamResult:
    """Run `frames` ([K, *chunk]) through `session` one call per frame, each call's state
    outputs fed to the next call. `session` has `step(feeds) -> handles` (feeds may hold
    handles) and `numpy(handle)` (nrqc.runtime.ArtifactSession; see Backend.open_session).

    Each frame reads the outputs that are not state; the states are read every frame with
    `every_state` (to save them), else only after the last frame (as a deployed caller would).

    A session with `run_frames` (the Cortex-M firmware in QEMU) runs the whole stream at once,
    the state carried inside the device, and counts each frame's instructions."""
    if hasattr(session, "run_frames"):
        got = session.run_frames(plan, frames, states, dict(fixed or {}), every_state=every_state, log=log)
        if progress is not None:
            progress.update(len(frames))
        outs = got["outputs"]
        final = {p.input: outs[p.output][-1] for p in plan.states}
        if not every_state:
            outs = {n: v for n, v in outs.items() if n not in {p.output for p in plan.states}}
        return StreamResult(outs, [], final, got.get("instructions"))
    out_names = [o["name"] for o in manifest["outputs"]]
    index = {n: k for k, n in enumerate(out_names)}
    state_outs = {p.output for p in plan.states}
    read = [n for n in out_names if every_state or n not in state_outs]
    carried = dict(states)
    collected: dict[str, list] = {n: [] for n in read}
    seconds = []
    fixed = dict(fixed or {})
    for frame in frames:
        t0 = time.perf_counter()
        handles = session.step({**fixed, **carried, plan.stream_input: frame})
        values = [session.numpy(handles[index[n]]) for n in read]  # what the caller reads each frame
        seconds.append(time.perf_counter() - t0)
        for n, v in zip(read, values):
            collected[n].append(v)
        carried = {p.input: handles[index[p.output]] for p in plan.states}
        if progress is not None:
            progress.update(1)
    shapes = {o["name"]: o["shape"] for o in manifest["outputs"]}
    outputs = {n: (np.stack(v) if v else np.zeros((0, *shapes[n]), np.float32)) for n, v in collected.items()}
    final = {name: session.numpy(h) for name, h in carried.items()}
    return StreamResult(outputs, seconds, final)


def stream_onnxruntime(model_path, manifest: dict, plan: StreamPlan, frames: np.ndarray,
                       states: dict[str, np.ndarray], fixed: dict[str, np.ndarray] | None = None,
                       threads: int | None = None) -> StreamResult:
    """The same stream through onnxruntime on the source model (with the build's `--const`
    inputs fed back), timed per call the same way: the peer of `run_stream`."""
    from nrqc.reference import manifest_constants, ort_session

    sess = ort_session(model_path, threads)
    names = [o.name for o in sess.get_outputs()]
    wanted = [o["name"] for o in manifest["outputs"]]
    carried = dict(states)
    collected: dict[str, list] = {n: [] for n in wanted}
    seconds = []
    consts = {**manifest_constants(manifest), **(fixed or {})}
    for frame in frames:
        t0 = time.perf_counter()
        got = dict(zip(names, sess.run(None, {**consts, **carried, plan.stream_input: frame})))
        seconds.append(time.perf_counter() - t0)
        for n in wanted:
            collected[n].append(got[n])
        carried = {p.input: got[p.output] for p in plan.states}
    return StreamResult({n: np.stack(v) for n, v in collected.items()}, seconds,
                        {p.input: carried[p.input] for p in plan.states})


def frame_ms_of(manifest: dict, plan: StreamPlan, frame_ms: float | None = None,
                hop_ms: float | None = None) -> tuple[float | None, str]:
    """The audio duration one call covers, and where that figure comes from: `--frame-ms`,
    else the chunk length times `--hop-ms`, else the frontend the model records."""
    if frame_ms is not None:
        return float(frame_ms), "--frame-ms"
    if hop_ms is not None:
        return plan.chunk * float(hop_ms), f"{plan.chunk} steps x --hop-ms {hop_ms:g}"
    front = frontend_of(manifest)
    if front and plan.time_axis == 1:  # [1, frames, bands]: one step per frontend hop
        hop = 1000.0 * int(front["hop"]) / int(front["sample_rate"])
        return plan.chunk * hop, f"{plan.chunk} frames x {hop:g} ms hop (the model's recorded frontend)"
    return None, "unknown: give --frame-ms, or --hop-ms (ms per step of the time axis)"


def describe_plan(plan: StreamPlan) -> str:
    states = ", ".join(f"{p.input} <- {p.output} {list(p.shape)}" for p in plan.states) or "none"
    return (f"streaming '{plan.stream_input}' {list(plan.shape)} in chunks of {plan.chunk} along axis "
            f"{plan.time_axis}; state: {states}")
