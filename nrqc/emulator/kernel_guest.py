"""Harness run inside the emulated board by ``nrqc.emulator.kernel_count``: one call of each
of several compiled kernels (tuning candidates), TVM runtime only (tvm_ffi + libtvm_runtime).

usage: kernel_guest.py SPEC.json

SPEC.json: ``[{"lib": PATH.so, "args": [[dtype, shape], ...]}, ...]``. Every library is
loaded first and ``NRQC_ICOUNT_LIB BASE PATH`` printed for each (the host counts each
library's own code range); with ``NRQC_ICOUNT_MODE=probe`` it stops there. Then each
kernel's ``main`` is called once on seeded random arguments, in order, and
``NRQC_KERNEL_DONE i`` printed after each.
"""
import ctypes
import json
import os
import sys


def _load_tvm_runtime():
    for d in sys.path:
        p = os.path.join(d, "tvm", "lib", "libtvm_runtime.so")
        if os.path.exists(p):
            ctypes.CDLL(p, ctypes.RTLD_GLOBAL)
            return
    raise SystemExit("libtvm_runtime.so not found on sys.path (is the aarch64 apache-tvm wheel installed?)")


def _array(np, rng, dtype, shape):
    if dtype.startswith("float") or dtype.startswith("bfloat"):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    lo = 0 if dtype.startswith("uint") else -8
    return rng.integers(lo, 8, shape).astype(dtype)


def main() -> int:
    import numpy as np
    import tvm_ffi

    _load_tvm_runtime()
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    mods = []
    for item in spec:
        mods.append(tvm_ffi.load_module(item["lib"]))
        handle = ctypes.CDLL(item["lib"])._handle  # glibc: dlopen's handle is the struct link_map*
        print(f"NRQC_ICOUNT_LIB {ctypes.c_void_p.from_address(handle).value or 0:#x} {item['lib']}", flush=True)
    if os.environ.get("NRQC_ICOUNT_MODE") == "probe":
        os._exit(0)
    rng = np.random.default_rng(0)
    for i, (item, mod) in enumerate(zip(spec, mods)):
        arrays = [_array(np, rng, dtype, tuple(shape)) for dtype, shape in item["args"]]
        mod["main"](*[tvm_ffi.from_dlpack(a) for a in arrays])
        print(f"NRQC_KERNEL_DONE {i}", flush=True)
    print("NRQC_ICOUNT_DONE", flush=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
