"""Harness run inside the emulated board by ``nrqc.emulator.icount`` (stdlib + TVM runtime + numpy).

usage: icount_guest.py LIB.so probe
       icount_guest.py LIB.so run INPUTS.npz OUTPUTS.npz NAME [NAME ...]

It uses the TVM *runtime* only (tvm_ffi + libtvm_runtime.so, no ``import tvm``): that is
what a deployed Pi needs, and it keeps the emulated start short (the counted run has TB
chaining disabled, which slows every instruction, imports included).

With ``NRQC_ICOUNT_MODE=probe`` in the environment, ``run`` stops after printing the
base (the probe must see the same argv and environment sizes as the counted run: the
guest's load addresses depend on them).

Prints ``NRQC_ICOUNT_LIB 0x... LIB.so``: the load address of LIB.so (its link map's l_addr,
no /proc needed). ``run`` then creates the Relax VM, calls ``main`` once on the inputs
(in the order NAME...) and saves the outputs, so that the counted run can be checked.
"""
import ctypes
import os
import sys

POOLED_ALLOCATOR = 2
KDL_CPU = 1


def _load_tvm_runtime():
    for d in sys.path:
        p = os.path.join(d, "tvm", "lib", "libtvm_runtime.so")
        if os.path.exists(p):
            ctypes.CDLL(p, ctypes.RTLD_GLOBAL)
            return p
    raise SystemExit("libtvm_runtime.so not found on sys.path (is the aarch64 apache-tvm wheel installed?)")


def _flatten(out):
    if hasattr(out, "__dlpack__"):
        return [out]
    if out.__class__.__name__ == "Shape":  # a static ONNX Shape output: the VM returns the shape itself
        import numpy as np

        return [np.asarray(tuple(out), dtype=np.int64)]
    res = []
    for o in out:
        res.extend(_flatten(o))
    return res


def main() -> int:
    lib_path, mode = sys.argv[1], sys.argv[2]
    import numpy as np
    import tvm_ffi

    _load_tvm_runtime()
    mod = tvm_ffi.load_module(lib_path)
    handle = ctypes.CDLL(lib_path)._handle  # glibc: dlopen's handle is the struct link_map*
    base = ctypes.c_void_p.from_address(handle).value or 0
    print(f"NRQC_ICOUNT_LIB {base:#x} {lib_path}", flush=True)
    # NRQC_ICOUNT_MODE=probe|count: the probe uses the counted run's exact argv and an
    # environment of the same size, since the load address shifts with them.
    if mode == "probe" or os.environ.get("NRQC_ICOUNT_MODE") == "probe":
        os._exit(0)
    in_path, out_path, names = sys.argv[3], sys.argv[4], sys.argv[5:]
    data = np.load(in_path)
    arrays = [np.asarray(data[n], order="C") for n in names]  # keeps 0-d inputs 0-d
    args = [tvm_ffi.from_dlpack(a) for a in arrays]
    vm = mod["vm_load_executable"]()
    vm["vm_initialization"](KDL_CPU, 0, POOLED_ALLOCATOR)
    out = vm["main"](*args)
    np.savez(out_path, *[o if isinstance(o, np.ndarray) else np.from_dlpack(o).copy() for o in _flatten(out)])
    print("NRQC_ICOUNT_DONE", flush=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
