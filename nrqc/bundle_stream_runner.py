"""Stream a model with state on the Raspberry Pi: the runner nrqc copies into an arm_cpu deploy
bundle as ``stream_model.py`` (see DEPLOY.md). It needs only the official aarch64
``apache-tvm`` wheel's runtime (``tvm_ffi`` + ``libtvm_runtime.so``, no ``import tvm``) and numpy.

usage: python3 stream_model.py FRAMES.npy OUT.npz --state IN=OUT [--state ...]
                               [--initial-state NAME=FILE.npy] [--input NAME=FILE.npy] [--frame-ms MS]
                               [--every-state]

FRAMES.npy holds K frames of the streamed input, ``[K, *its shape]``. Each frame is one call of
``main``; the state outputs are passed back as the next call's state inputs as the tensors the
VM returned (no copy to numpy between frames). OUT.npz gets every output that is not state,
stacked per frame, and each state output after the last frame (``<name>`` holding ``[1, *shape]``;
with --every-state, every frame's, read each frame).
Prints the per-frame latency (median) and, with --frame-ms, the real-time factor.

``nrqc run/profile --stream`` on an arm_cpu artifact without ``--rpc`` runs this same file on the
emulated board; with ``NRQC_ICOUNT_MODE`` set (only there) it prints where the library is loaded
and calls libc's ``getppid`` before the first frame and after each frame, so that the host can
split qemu's instruction log per frame.
"""
import argparse
import ctypes
import json
import os
import sys
import time
from pathlib import Path

KDL_CPU = 1
POOLED_ALLOCATOR = 2


def _load_tvm_runtime():
    for d in sys.path:
        p = os.path.join(d, "tvm", "lib", "libtvm_runtime.so")
        if os.path.exists(p):
            ctypes.CDLL(p, ctypes.RTLD_GLOBAL)
            return
    raise SystemExit("libtvm_runtime.so not found: install the apache-tvm wheel (see DEPLOY.md)")


def _flat(out):
    if hasattr(out, "__dlpack__"):
        return [out]
    res = []
    for o in out:
        res.extend(_flat(o))
    return res


def _pairs(options, what):
    out = []
    for opt in options:
        name, sep, value = opt.partition("=")
        if not sep:
            raise SystemExit(f"{what} {opt}: expected NAME=VALUE")
        out.append((name, value))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="Stream frames through the bundle's model, carrying its state.")
    ap.add_argument("frames")
    ap.add_argument("out")
    ap.add_argument("--state", action="append", default=[], metavar="IN=OUT")
    ap.add_argument("--initial-state", action="append", default=[], metavar="NAME=FILE.npy")
    ap.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    ap.add_argument("--frame-ms", type=float, default=None)
    ap.add_argument("--every-state", action="store_true", help="also save each frame's state (read to numpy)")
    args = ap.parse_args()
    import numpy as np
    import tvm_ffi

    here = Path(__file__).resolve().parent
    manifest = json.loads((here / "manifest.json").read_text())
    lib_path = str(here / manifest.get("library", "model.so"))
    counting = os.environ.get("NRQC_ICOUNT_MODE")
    _load_tvm_runtime()
    mod = tvm_ffi.load_module(lib_path)
    mark = ctypes.CDLL(None).getppid
    if counting:
        base = ctypes.c_void_p.from_address(ctypes.CDLL(lib_path)._handle).value or 0  # link_map.l_addr
        print(f"NRQC_ICOUNT_LIB {base:#x} {lib_path}", flush=True)
        print(f"NRQC_ICOUNT_MARK {ctypes.cast(mark, ctypes.c_void_p).value:#x}", flush=True)
        if counting == "probe":
            os._exit(0)
    states = dict(_pairs(args.state, "--state"))  # input -> output
    out_names = [o["name"] for o in manifest["outputs"]]
    for i, o in states.items():
        if o not in out_names:
            raise SystemExit(f"--state {i}={o}: the model has no output '{o}'")
    fixed = {n: np.load(f) for n, f in _pairs(args.input, "--input")}
    carried = {}
    for spec in manifest["inputs"]:
        if spec["name"] in states:
            carried[spec["name"]] = np.zeros(spec["shape"], spec["dtype"])
    for n, f in _pairs(args.initial_state, "--initial-state"):
        carried[n] = np.load(f).astype(carried[n].dtype)
    carried = {n: tvm_ffi.from_dlpack(np.ascontiguousarray(v)) for n, v in carried.items()}
    streamed = [s for s in manifest["inputs"] if s["name"] not in states and s["name"] not in fixed]
    if len(streamed) != 1:
        raise SystemExit(f"cannot tell which input to stream: {', '.join(s['name'] for s in streamed)}")
    stream = streamed[0]["name"]
    fixed = {n: tvm_ffi.from_dlpack(np.ascontiguousarray(v)) for n, v in fixed.items()}
    frames = np.load(args.frames)
    vm = mod["vm_load_executable"]()
    vm["vm_initialization"](KDL_CPU, 0, POOLED_ALLOCATOR)
    main_fn = vm["main"]
    index = {n: k for k, n in enumerate(out_names)}
    kept = [n for n in out_names if args.every_state or n not in states.values()]
    collected = {n: [] for n in kept}
    seconds = []
    if counting:
        mark()
    for frame in frames:
        feeds = {**fixed, **carried, stream: tvm_ffi.from_dlpack(np.ascontiguousarray(frame))}
        t0 = time.perf_counter()
        outs = _flat(main_fn(*[feeds[s["name"]] for s in manifest["inputs"]]))
        values = [np.from_dlpack(outs[index[n]]).copy() for n in kept]
        seconds.append(time.perf_counter() - t0)
        if counting:
            mark()
        for n, v in zip(kept, values):
            collected[n].append(v)
        carried = {i: outs[index[o]] for i, o in states.items()}  # stays a runtime tensor
    result = {n: np.stack(v) for n, v in collected.items()}
    for i, o in states.items():
        if not args.every_state:
            result[o] = np.from_dlpack(carried[i]).copy()[None]
    np.savez(args.out, **result)
    med = float(np.median(seconds)) * 1e3 if seconds else float("nan")
    line = f"{len(frames)} frame(s), median {med:.3f} ms per frame"
    if args.frame_ms:
        line += f", real-time factor {med / args.frame_ms:.4f}"
    print(line, flush=True)
    print("NRQC_ICOUNT_DONE", flush=True)
    sys.stdout.flush()
    os._exit(0)  # (the VM's threads and the runtime's teardown are not waited for)


if __name__ == "__main__":
    sys.exit(main())
