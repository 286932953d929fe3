"""Harness run inside the emulated board by ``nrqc.emulator.peer_count``: onnxruntime's
official aarch64 build on an ONNX file, one thread (stdlib + numpy + onnxruntime).

usage: ort_guest.py MODEL.onnx INPUTS.npz OUTPUTS.npz

Prints ``NRQC_ICOUNT_LIB BASE PATH`` for onnxruntime's code (its Python extension, which holds
the whole engine, MLAS kernels included) and ``NRQC_ICOUNT_MARK ADDR``, the
address of libc's ``getppid``, which the harness calls right before and right after the
counted run (nothing else here calls it): the host splits the qemu log at those calls.

Sequence: import onnxruntime, create the session (1 intra-op and 1 inter-op thread, no
spinning, sequential execution, CPU provider, default graph optimizations), one warm-up
run (its first-run allocations are not an inference's steady cost), mark, the counted run,
mark; the counted run's outputs are saved so the host can check them.
With ``NRQC_ICOUNT_MODE=probe`` it stops after printing the layout (the probe must see the
counted run's exact argv and environment sizes: load addresses depend on them).
"""
import ctypes
import os
import sys


def _libraries():
    """(base, path) of onnxruntime's code in this process: the Python extension (the C API's
    libonnxruntime.so next to it is not loaded by the Python API). dlopen of the loaded file
    returns glibc's struct link_map*, whose first field l_addr is the base."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ext

    handle = ctypes.CDLL(ext.__file__)._handle
    return [(ctypes.c_void_p.from_address(handle).value or 0, ext.__file__)]


def main() -> int:
    model, in_path, out_path = sys.argv[1:4]
    import numpy as np
    import onnxruntime as ort

    for base, path in _libraries():
        print(f"NRQC_ICOUNT_LIB {base:#x} {path}", flush=True)
    libc = ctypes.CDLL(None)
    mark = libc.getppid
    print(f"NRQC_ICOUNT_MARK {ctypes.cast(mark, ctypes.c_void_p).value:#x}", flush=True)
    if os.environ.get("NRQC_ICOUNT_MODE") == "probe":
        os._exit(0)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    data = np.load(in_path)
    feeds = {i.name: np.asarray(data[i.name], order="C") for i in sess.get_inputs()}
    sess.run(None, feeds)
    mark()
    out = sess.run(None, feeds)
    mark()
    np.savez(out_path, *out)
    print(f"NRQC_ORT_VERSION {ort.__version__}", flush=True)
    print("NRQC_ICOUNT_DONE", flush=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
