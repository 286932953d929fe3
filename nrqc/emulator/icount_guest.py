"""Harness run inside the emulated board by ``nrqc.emulator.icount`` (stdlib + TVM + numpy only).

usage: icount_guest.py LIB.so probe
       icount_guest.py LIB.so run INPUTS.npz OUTPUTS.npz NAME [NAME ...]

Prints ``NRQC_ICOUNT_BASE 0x...``: the load address of LIB.so (its link map's l_addr,
no /proc needed). ``run`` then calls the Relax VM's ``main`` once on the inputs (in the
order NAME...) and saves the outputs, so that the counted run can be checked.
"""
import ctypes
import os
import sys


def main() -> int:
    lib_path, mode = sys.argv[1], sys.argv[2]
    import numpy as np
    import tvm
    from tvm import relax

    lib = tvm.runtime.load_module(lib_path)
    handle = ctypes.CDLL(lib_path)._handle  # glibc: dlopen's handle is the struct link_map*
    base = ctypes.c_void_p.from_address(handle).value or 0
    print(f"NRQC_ICOUNT_BASE {base:#x}", flush=True)
    if mode == "probe":
        os._exit(0)
    in_path, out_path, names = sys.argv[3], sys.argv[4], sys.argv[5:]
    data = np.load(in_path)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(data[n], dev) for n in names]
    vm = relax.VirtualMachine(lib, dev)
    out = vm["main"](*args)
    outs = [out] if hasattr(out, "numpy") else list(out)
    np.savez(out_path, *[o.numpy() for o in outs])
    print("NRQC_ICOUNT_DONE", flush=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
