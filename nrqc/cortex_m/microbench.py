"""Run one call of nrqc's hand-written Cortex-M kernels (kernels/nrqc_dsp.h) in QEMU.

A throw-away firmware: the inputs as const arrays (flash), the outputs and any workspace as
static arrays (RAM), one timed call, the outputs printed as hex. The same harness and
instruction count as a model's test firmware (nrqc.cortex_m.firmware): used by the kernel
tests (bit-exact against numpy) and by bench/bench_cortex_m.py (instructions per kernel).
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

KERNEL_HEADER_DIR = Path(__file__).parent / "kernels"


@dataclasses.dataclass
class KernelRun:
    outputs: dict[str, np.ndarray]
    instructions: int
    text_bytes: int  # code size of the firmware's kernel function (the call site, specialized)


def run_call(target, call: str, inputs: dict[str, np.ndarray], outputs: dict[str, tuple[tuple, str]],
             scratch: dict[str, tuple[int, str]] | None = None, workdir: Path | None = None) -> KernelRun:
    """Build a firmware whose timed region is `call` (C, e.g. "nrqc_b01_i8_conv(x, w, ...)"
    naming the arrays by their keys) and run it once in QEMU on `target` (a Cortex-M
    TargetDescription). outputs: name -> (shape, dtype); scratch: name -> (elements, dtype)."""
    from nrqc.cortex_m import firmware
    from nrqc.cortex_m.emit import c_array_literal, c_type

    with tempfile.TemporaryDirectory(prefix="nrqc-mb-", dir=workdir) as tmp:
        d = Path(tmp)
        data = ["#include <stdint.h>"]
        for name, arr in inputs.items():
            arr = np.ascontiguousarray(arr)
            data.append(f"static const {c_type(str(arr.dtype))} {name}[{max(arr.size, 1)}] "
                        f"__attribute__((aligned(16))) = {{\n{c_array_literal(arr)}\n}};")
        for name, (shape, dtype) in outputs.items():
            data.append(f"static {c_type(dtype)} {name}[{max(int(np.prod(shape)), 1)}] __attribute__((aligned(16)));")
        for name, (elems, dtype) in (scratch or {}).items():
            data.append(f"static {c_type(dtype)} {name}[{max(int(elems), 1)}] __attribute__((aligned(16)));")
        (d / "nrqc_test_data.h").write_text("\n".join(data) + "\n")
        # the kernel call in its own non-inlined function: its code size is the kernel's
        (d / "nrqc_model.h").write_text('#include "nrqc_dsp.h"\n#include "nrqc_test_data.h"\n'
                                        f"__attribute__((noinline)) int nrqc_mb_call(void) {{ return {call}; }}\n")
        body = ["  ticks_start();", "  rc = nrqc_mb_call();", "  t_model = ticks_read();"]
        for k, name in enumerate(outputs):
            body.append(f"  put(\"NRQC_OUT {k} \"); put_hex((const uint8_t *){name}, sizeof({name})); put(\"\\n\");")
        main = firmware._MAIN.replace('#include "nrqc_test_data.h"\n', "").replace(
            "NRQC_HARNESS_BODY", "\n".join(body))
        (d / "main.c").write_text(main)
        (d / "startup.c").write_text(firmware._STARTUP)
        (d / "link.ld").write_text(firmware._LINKER_SCRIPT)
        elf = d / "mb.elf"
        gcc = firmware._require("arm-none-eabi-gcc")
        firmware._run([gcc, *firmware.lib_cflags(target.name), "-nostartfiles", "--specs=nosys.specs",
                       "-T", str(d / "link.ld"), "-Wl,--gc-sections", "-I", str(d), "-I", str(KERNEL_HEADER_DIR),
                       str(d / "startup.c"), str(d / "main.c"), "-o", str(elf)], "building the kernel firmware")
        from nrqc.onnx_model import TensorSpec

        specs = [TensorSpec(name, tuple(shape), dtype) for name, (shape, dtype) in outputs.items()]
        got = firmware.run_firmware(target, elf, specs)
        nm = firmware._run([firmware._require("arm-none-eabi-nm"), "-S", str(elf)], "arm-none-eabi-nm")
        size = next((int(ln.split()[1], 16) for ln in nm.splitlines() if ln.endswith(" nrqc_mb_call")), 0)
    return KernelRun(dict(zip(outputs, got["outputs"])), got["instructions"], size)
