"""Test firmware around the model library: arm-none-eabi-gcc build, QEMU run, sizes.

The firmware (firmware/ in the artifact) is a test harness, not part of the library:
a vector table and reset handler, semihosting calls written out (no rdimon, no printf),
the stored seeded input in flash, and SysTick-based instruction counting. At run time it
reads `nrqc_input<i>.bin` through semihosting from QEMU's working directory when that
file exists (so `nrqc run` feeds any input without relinking), runs `nrqc_run` once,
and prints each output's raw bytes in hex and the measured tick counts.

Instruction counts: QEMU runs with `-icount shift=0`, i.e. its virtual clock advances
exactly 1 ns per executed guest instruction, and SysTick (processor clock) is driven by
that virtual clock. The firmware times `nrqc_run` and a calibration loop of exactly
2 x 1,000,000 instructions (subs/bne) with SysTick; instructions per inference =
ticks(nrqc_run) x 2,000,000 / ticks(loop). That is a deterministic count of executed
instructions (resolution: one SysTick period, 40 instructions at mps2's 25 MHz), not a
cycle count: QEMU models no pipeline, caches or flash wait states.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from nrqc import subproc
from nrqc.errors import NrqcError

CALIBRATION_INSTRUCTIONS = 2 * 1_000_000
QEMU_TIMEOUT = 600

_LINKER_SCRIPT = """/* mps2-an386 / mps2-an500: 4 MB SSRAM1 at 0x0 (code, const data), SSRAM2/3 at 0x20000000 (data). */
MEMORY
{
  FLASH (rx)  : ORIGIN = 0x00000000, LENGTH = 4M
  RAM   (rwx) : ORIGIN = 0x20000000, LENGTH = 4M
}
ENTRY(Reset_Handler)
SECTIONS
{
  .text : { KEEP(*(.isr_vector)) *(.text*) *(.rodata*) . = ALIGN(4); } > FLASH
  .ARM.exidx : { *(.ARM.exidx*) } > FLASH
  .data : { *(.data*) . = ALIGN(4); } > RAM
  .bss (NOLOAD) : { __bss_start__ = .; *(.bss*) *(COMMON) . = ALIGN(4); __bss_end__ = .; } > RAM
  end = .;
  __stack_top = ORIGIN(RAM) + LENGTH(RAM);
}
"""

_MAIN = r"""/* nrqc test firmware: run the model once over semihosting. Not part of the library. */
#include <stdint.h>
#include <string.h>
#include "nrqc_model.h"
#include "nrqc_test_data.h"

static int semihost(int op, void *arg) {
  register int r0 __asm__("r0") = op;
  register void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}
static void put(const char *s) { semihost(0x04, (void *)s); }
static void put_u32(uint32_t v) {
  char b[11]; int i = 10; b[i] = 0;
  do { b[--i] = (char)('0' + v % 10); v /= 10; } while (v);
  put(b + i);
}
static void put_hex(const uint8_t *p, uint32_t n) {
  static const char hx[] = "0123456789abcdef";
  char line[65]; uint32_t k = 0;
  for (uint32_t i = 0; i < n; i++) {
    line[k++] = hx[p[i] >> 4]; line[k++] = hx[p[i] & 15];
    if (k == 64) { line[k] = 0; put(line); k = 0; }
  }
  line[k] = 0; put(line);
}
static void quit(int code) {
  uint32_t block[2] = {0x20026u, (uint32_t)code};  /* ADP_Stopped_ApplicationExit */
  semihost(0x18, code == 0 ? (void *)0x20026u : (void *)block);
  for (;;) {}
}
/* Read file `name` into buf (exactly n bytes); 1 on success, 0 if absent. */
static int read_file(const char *name, void *buf, uint32_t n) {
  uint32_t open_args[3] = {(uint32_t)name, 1u /* "rb" */, (uint32_t)strlen(name)};
  int h = semihost(0x01, open_args);
  if (h < 0) return 0;
  uint32_t flen_args[1] = {(uint32_t)h};
  int len = semihost(0x0C, flen_args);
  if (len != (int)n) { put("NRQC_ERROR input file "); put(name); put(" has the wrong size\n"); quit(3); }
  uint32_t read_args[3] = {(uint32_t)h, (uint32_t)buf, n};
  int left = semihost(0x06, read_args);
  uint32_t close_args[1] = {(uint32_t)h};
  semihost(0x02, close_args);
  if (left != 0) { put("NRQC_ERROR short read\n"); quit(3); }
  return 1;
}

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
static volatile uint32_t systick_wraps;
void SysTick_Handler(void) { systick_wraps++; }
static void ticks_start(void) {
  SYST_CSR = 0; SYST_RVR = 0xFFFFFFu; SYST_CVR = 0; SYST_CSR = 7u;
  while (SYST_CVR == 0) {}  /* wait for the first reload, then count from there */
  systick_wraps = 0;
}
static uint64_t ticks_read(void) {
  uint32_t w, v;
  do { w = systick_wraps; v = SYST_CVR; } while (w != systick_wraps);
  return (uint64_t)w * 0x1000000u + (0xFFFFFFu - v);
}
static void put_u64(uint64_t v) {
  char b[21]; int i = 20; b[i] = 0;
  do { b[--i] = (char)('0' + (int)(v % 10)); v /= 10; } while (v);
  put(b + i);
}

int main(void) {
  int rc;
  uint64_t t_model, t_loop, t_empty;
NRQC_HARNESS_BODY
  ticks_start();
  t_empty = ticks_read();
  ticks_start();
  __asm__ volatile("mov r0, %0\n1: subs r0, r0, #1\n bne 1b" : : "r"(1000000u) : "r0", "cc");
  t_loop = ticks_read();
  put("NRQC_RC "); put_u32((uint32_t)rc); put("\n");
  put("NRQC_TICKS_MODEL "); put_u64(t_model); put("\n");
  put("NRQC_TICKS_LOOP "); put_u64(t_loop); put("\n");
  put("NRQC_TICKS_EMPTY "); put_u64(t_empty); put("\n");
  put("NRQC_DONE\n");
  quit(rc == 0 ? 0 : 1);
  return 0;
}
"""

_STARTUP = r"""/* Vector table and reset handler for the nrqc test firmware. */
#include <stdint.h>
extern uint32_t __bss_start__, __bss_end__, __stack_top;
extern int main(void);
void SysTick_Handler(void);
void Reset_Handler(void);
static void Fault_Handler(void) {
  register int r0 __asm__("r0") = 0x18;
  register uint32_t r1 __asm__("r1") = 0x20023u; /* ADP_Stopped_InternalError */
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  for (;;) {}
}
__attribute__((section(".isr_vector"), used)) const void *const nrqc_vectors[16] = {
  &__stack_top, (void *)Reset_Handler, (void *)Fault_Handler, (void *)Fault_Handler, (void *)Fault_Handler,
  (void *)Fault_Handler, (void *)Fault_Handler, 0, 0, 0, 0, (void *)Fault_Handler, (void *)Fault_Handler, 0,
  (void *)Fault_Handler, (void *)SysTick_Handler,
};
void Reset_Handler(void) {
  for (uint32_t *p = &__bss_start__; p < &__bss_end__; p++) *p = 0;
  *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: enable the FPU (CP10, CP11) */
  __asm__ volatile("dsb\n isb");
  main();
  for (;;) {}
}
"""


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise NrqcError(f"{tool} not found on PATH (install gcc-arm-none-eabi / qemu-system-arm)")
    return path


def _run(cmd: list[str], what: str, cwd: Path | None = None, timeout: int = 600) -> str:
    try:
        p = subproc.run(cmd, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise NrqcError(f"{what}: timed out after {timeout} s ({' '.join(cmd[:3])} ...)") from None
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-8:]
        raise NrqcError(f"{what} failed: " + " | ".join(tail))
    return p.stdout


def lib_cflags(target_name: str) -> list[str]:
    from nrqc.targets.cortex_m import gcc_flags

    return [*gcc_flags(target_name), "-O2", "-fno-short-enums", "-ffunction-sections", "-fdata-sections",
            "-Wno-unused-variable", "-Wno-unused-but-set-variable"]


def compile_library(lib_dir: Path, build: Path, target_name: str) -> list[Path]:
    """Compile the library sources into objects (with stack-usage files) under `build`."""
    from nrqc.cortex_m.emit import SOURCES

    gcc = _require("arm-none-eabi-gcc")
    build.mkdir(parents=True, exist_ok=True)
    objs = []
    for src in SOURCES:
        obj = build / (Path(src).stem + ".o")
        _run([gcc, *lib_cflags(target_name), "-fstack-usage", "-I", str(lib_dir), "-I", str(lib_dir / "include"),
              "-c", str(lib_dir / src), "-o", str(obj)], f"arm-none-eabi-gcc {src}")
        objs.append(obj)
    # The library needs nothing beyond string.h (memcpy/memset) and libgcc helpers.
    undefined = set()
    for obj in objs:
        out = _run([_require("arm-none-eabi-nm"), "-u", str(obj)], "arm-none-eabi-nm")
        undefined |= {ln.split()[-1] for ln in out.splitlines() if ln.strip()}
    defined = set()
    for obj in objs:
        out = _run([_require("arm-none-eabi-nm"), "--defined-only", str(obj)], "arm-none-eabi-nm")
        defined |= {ln.split()[-1] for ln in out.splitlines() if ln.strip()}
    foreign = sorted(s for s in undefined - defined if not s.startswith("__aeabi") and s not in ("memcpy", "memset"))
    return objs, foreign


def library_sizes(objs: list[Path], build: Path) -> dict:
    """text/data/bss of the library objects (arm-none-eabi-size, Berkeley format: .rodata
    counts as text); flash = text + data, RAM = data + bss (the arena is in bss)."""
    out = _run([_require("arm-none-eabi-size"), "-t", *map(str, objs)], "arm-none-eabi-size")
    total = [ln for ln in out.splitlines() if ln.strip().endswith("(TOTALS)")][0].split()
    text, data, bss = int(total[0]), int(total[1]), int(total[2])
    frames = {}
    for su in build.glob("*.su"):
        for ln in su.read_text().splitlines():
            parts = ln.split("\t")
            if len(parts) >= 2:
                frames[parts[0].split(":")[-1]] = int(parts[1])
    run_frame = frames.get("nrqc_run", 0)
    kernel_frame = max([v for k, v in frames.items() if k.startswith("__tvm_ffi_")] + [0])
    stub_frame = max([frames.get(k, 0) for k in ("TVMBackendAllocWorkspace", "TVMBackendFreeWorkspace")] + [0])
    return {"text": text, "data": data, "bss": bss, "flash_bytes": text + data, "ram_bytes": data + bss,
            "stack_bytes": run_frame + kernel_frame + stub_frame, "size_output": out.strip(), "frames": frames}


def symbol_sizes(objs: list[Path]) -> dict[str, int]:
    """Bytes of every defined function and object of the library objects (arm-none-eabi-nm -S)."""
    out = _run([_require("arm-none-eabi-nm"), "-S", "--defined-only", *map(str, objs)], "arm-none-eabi-nm")
    sizes = {}
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) == 4:  # address size type name (symbols without a size have 3 fields)
            sizes[parts[3]] = int(parts[1], 16)
    return sizes


def write_firmware_sources(fw: Path, inputs, outputs, stored: dict[str, np.ndarray], quant=None) -> None:
    """quant: the QuantizedInput of the int8 entry point, if any: the firmware then also runs
    nrqc_run_int8 on the stored input quantized in numpy (or on nrqc_input_q<i>.bin)."""
    from nrqc.cortex_m.emit import c_array_literal, c_type

    fw.mkdir(parents=True, exist_ok=True)
    (fw / "link.ld").write_text(_LINKER_SCRIPT)
    (fw / "startup.c").write_text(_STARTUP)
    data = ["/* The stored (seeded) test input, in flash. */", "#include <stdint.h>"]
    body = []
    for i, s in enumerate(inputs):
        ct = c_type(s.dtype)
        arr = np.asarray(stored[s.name], dtype=s.dtype)
        data.append(f"static const {ct} nrqc_test_in{i}[{max(arr.size, 1)}] __attribute__((aligned(16))) = {{")
        data.append(c_array_literal(arr))
        data.append("};")
        data.append(f"static {ct} nrqc_file_in{i}[{max(arr.size, 1)}] __attribute__((aligned(16)));")
        body.append(f"  const {ct} *in{i} = nrqc_test_in{i};")
        body.append(f"  if (read_file(\"nrqc_input{i}.bin\", nrqc_file_in{i}, sizeof(nrqc_file_in{i}))) "
                    f"in{i} = nrqc_file_in{i};")
    for k, s in enumerate(outputs):
        data.append(f"static {c_type(s.dtype)} nrqc_out{k}[{max(int(np.prod(s.shape)), 1)}] __attribute__((aligned(16)));")
    call_args = ", ".join([f"in{i}" for i in range(len(inputs))] + [f"nrqc_out{k}" for k in range(len(outputs))])
    if quant is not None:
        from nrqc.cortex_m.int8_input import quantize_like_onnx

        qi = quant.index
        ct = c_type(quant.dtype)
        arr = quantize_like_onnx(np.asarray(stored[inputs[qi].name]), quant)
        data.append(f"static const {ct} nrqc_test_q{qi}[{max(arr.size, 1)}] __attribute__((aligned(16))) = {{")
        data.append(c_array_literal(arr))
        data.append("};")
        data.append(f"static {ct} nrqc_file_q{qi}[{max(arr.size, 1)}] __attribute__((aligned(16)));")
        body.append(f"  const {ct} *q{qi} = nrqc_test_q{qi};")
        body.append(f"  if (read_file(\"nrqc_input_q{qi}.bin\", nrqc_file_q{qi}, sizeof(nrqc_file_q{qi}))) "
                    f"q{qi} = nrqc_file_q{qi};")
        qargs = ", ".join([(f"q{i}" if i == qi else f"in{i}") for i in range(len(inputs))]
                          + [f"nrqc_out{k}" for k in range(len(outputs))])
        body.append(f"  rc = nrqc_run_int8({qargs});")
        body.append("  if (rc != 0) { put(\"NRQC_ERROR nrqc_run_int8\\n\"); quit(1); }")
        for k in range(len(outputs)):
            body.append(f"  put(\"NRQC_OUTQ {k} \"); put_hex((const uint8_t *)nrqc_out{k}, sizeof(nrqc_out{k})); "
                        f"put(\"\\n\");")
    body.append("  ticks_start();")
    body.append(f"  rc = nrqc_run({call_args});")
    body.append("  t_model = ticks_read();")
    for k in range(len(outputs)):
        body.append(f"  put(\"NRQC_OUT {k} \"); put_hex((const uint8_t *)nrqc_out{k}, sizeof(nrqc_out{k})); put(\"\\n\");")
    (fw / "nrqc_test_data.h").write_text("\n".join(data) + "\n")
    (fw / "main.c").write_text(_MAIN.replace("NRQC_HARNESS_BODY", "\n".join(body)))


def link_firmware(lib_objs: list[Path], fw: Path, lib_dir: Path, build: Path, target_name: str) -> Path:
    from nrqc.targets.cortex_m import gcc_flags

    gcc = _require("arm-none-eabi-gcc")
    elf = fw / "firmware.elf"
    _run([gcc, *gcc_flags(target_name), "-O2", "-fno-short-enums", "-ffunction-sections", "-fdata-sections",
          "-nostartfiles", "--specs=nosys.specs", "-T", str(fw / "link.ld"), "-Wl,--gc-sections",
          "-I", str(lib_dir), "-I", str(fw), str(fw / "startup.c"), str(fw / "main.c"), *map(str, lib_objs),
          "-lm", "-o", str(elf)], "linking the test firmware")
    return elf


def qemu_command(target, elf: Path) -> list[str]:
    emu = list(target.backend.emulator) if target is not None else []
    machine = emu[emu.index("-M") + 1] if "-M" in emu else None
    if machine is None:
        raise NrqcError(f"target {getattr(target, 'name', '?')} has no QEMU machine in its description")
    return [_require("qemu-system-arm"), "-M", machine, "-nographic", "-monitor", "none", "-serial", "null",
            "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
            # absolute: QEMU runs in its own scratch directory (the semihosting files' home)
            "-kernel", str(Path(elf).resolve())]


def run_firmware(target, elf: Path, outputs, feeds: dict[int, np.ndarray] | None = None,
                 timeout: int = QEMU_TIMEOUT, qfeeds: dict[int, np.ndarray] | None = None) -> dict:
    """Run the firmware once in QEMU; returns outputs (numpy) and tick counts."""
    with tempfile.TemporaryDirectory(prefix="nrqc-qemu-") as tmp:
        for i, arr in (feeds or {}).items():
            Path(tmp, f"nrqc_input{i}.bin").write_bytes(np.ascontiguousarray(arr).tobytes())
        for i, arr in (qfeeds or {}).items():
            Path(tmp, f"nrqc_input_q{i}.bin").write_bytes(np.ascontiguousarray(arr).tobytes())
        cmd = qemu_command(target, elf)
        try:
            p = subproc.run(cmd, cwd=tmp, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise NrqcError(f"{elf}: QEMU did not finish within {timeout} s") from None
    text = p.stdout + p.stderr  # QEMU writes the semihosting console to stderr
    if "NRQC_DONE" not in text:
        raise NrqcError(f"{elf}: firmware did not complete in QEMU (exit {p.returncode}): "
                        + " | ".join((text + p.stderr).strip().splitlines()[-5:]))
    rc = int(re.search(r"NRQC_RC (\d+)", text).group(1))
    if rc != 0:
        raise NrqcError(f"{elf}: nrqc_run returned {rc} in QEMU")
    def parse(tag):
        res = []
        for k, spec in enumerate(outputs):
            m = re.search(rf"{tag} {k} ([0-9a-f]*)\n", text)
            if m is None:
                return None
            res.append(np.frombuffer(bytes.fromhex(m.group(1)), dtype=np.dtype(spec.dtype if spec.dtype != "bool"
                                                                               else "uint8")).reshape(spec.shape).copy())
        return res

    results = parse("NRQC_OUT")
    ticks = {k: int(re.search(rf"NRQC_TICKS_{k.upper()} (\d+)", text).group(1)) for k in ("model", "loop", "empty")}
    per_tick = CALIBRATION_INSTRUCTIONS / max(ticks["loop"] - ticks["empty"], 1)
    instructions = int(round((ticks["model"] - ticks["empty"]) * per_tick))
    return {"outputs": results, "outputs_int8": parse("NRQC_OUTQ"), "ticks": ticks, "instructions_per_tick": per_tick, "instructions": instructions}


def firmware_sizes(elf: Path) -> dict:
    out = _run([_require("arm-none-eabi-size"), str(elf)], "arm-none-eabi-size")
    text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}


def env_available() -> list[str]:
    return [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm") if not shutil.which(t)]


_ = os  # (os kept for callers that patch the environment)
