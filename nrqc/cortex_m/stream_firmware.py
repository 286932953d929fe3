"""A stream in one QEMU run: a test firmware that calls the library once per frame, the state
carried from call to call inside the firmware, with each frame's instruction count.

`nrqc run --stream` / `nrqc profile --stream` on a Cortex-M artifact link this harness (from
the artifact's library objects, so nothing is recompiled) and run it once for all frames:

- when the stream's state pairs are the ones the library holds (manifest "streaming", see
  nrqc.cortex_m.stream_api), each frame is one `nrqc_step` call and the state never leaves
  the library (`nrqc_stream_state(j)` is read only to print it);
- otherwise (other pairs named with `--state`) each frame is one `nrqc_run` with two state
  buffers per pair in the firmware, swapped after each call, as a caller without nrqc_step
  would do.

Frames are read one at a time through semihosting (`nrqc_stream.bin`); fixed inputs and the
initial states from `nrqc_input<i>.bin` / `nrqc_state<j>.bin`. Each frame's SysTick count
becomes instructions as in nrqc.cortex_m.firmware (QEMU -icount: one instruction per tick of
virtual time, calibrated on a known loop).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from nrqc import subproc
from nrqc.cortex_m import FIRMWARE_DIR, firmware
from nrqc.cortex_m.emit import c_type
from nrqc.cortex_m.stream_api import step_name
from nrqc.errors import NrqcError
from nrqc.manifest import target_of

_HELPERS = r"""/* nrqc stream harness: buffers and sequential semihosting reads (frames one at a time). */
#include <stdint.h>
#include <string.h>
static int semihost(int op, void *arg);
static void put(const char *s);
static void quit(int code);
static int stream_open(const char *name) {
  uint32_t a[3] = {(uint32_t)name, 1u /* "rb" */, (uint32_t)strlen(name)};
  int h = semihost(0x01, a);
  if (h < 0) { put("NRQC_ERROR cannot open "); put(name); put("\n"); quit(3); }
  return h;
}
static void stream_read(int h, void *buf, uint32_t n) {
  uint32_t a[3] = {(uint32_t)h, (uint32_t)buf, n};
  if (semihost(0x06, a) != 0) { put("NRQC_ERROR short read of a frame\n"); quit(3); }
}
"""


def _elems(shape) -> int:
    return max(int(np.prod(shape, dtype=np.int64)), 1)


def harness_sources(manifest: dict, plan, frames: int, run_name: str, in_dtypes: list[str], every_state: bool
                    ) -> tuple[str, str, bool]:
    """(nrqc_test_data.h, the main body, whether nrqc_step is used) for `frames` frames."""
    inputs, outputs = manifest["inputs"], manifest["outputs"]
    in_idx = {s["name"]: i for i, s in enumerate(inputs)}
    out_idx = {s["name"]: k for k, s in enumerate(outputs)}
    held = {(s["input"], s["output"]): j for j, s in enumerate((manifest.get("streaming") or {}).get("states", []))}
    use_step = bool(held) and sorted(held) == sorted((p.input, p.output) for p in plan.states)
    pairs = [(j, p, in_idx[p.input], out_idx[p.output]) for j, p in enumerate(plan.states)]
    st_in = {i: (j, p) for j, p, i, _ in pairs}
    st_out = {k: (j, p) for j, p, _, k in pairs}
    data = [_HELPERS]
    for i, s in enumerate(inputs):
        if i not in st_in:
            data.append(f"static {c_type(in_dtypes[i])} nrqc_in{i}[{_elems(s['shape'])}] __attribute__((aligned(16)));")
    for k, s in enumerate(outputs):
        if k not in st_out:
            data.append(f"static {c_type(s['dtype'])} nrqc_out{k}[{_elems(s['shape'])}] __attribute__((aligned(16)));")
    if not use_step:
        for j, p, _i, _k in pairs:
            data.append(f"static {c_type(p.dtype)} nrqc_sb{j}[2][{_elems(p.shape)}] __attribute__((aligned(16)));")

    def state_ptr(j, p, which):  # which: "cur" (this frame's state) or "next"
        if use_step:
            return f"nrqc_stream_state({held[(p.input, p.output)]})"
        return f"nrqc_sb{j}[{'cur' if which == 'cur' else 'cur ^ 1'}]"

    s_i = in_idx[plan.stream_input]
    body = ["  int cur = 0;", "  (void)cur;", "  rc = 0;", "  t_model = 0;"]
    for i, s in enumerate(inputs):
        if i not in st_in and i != s_i:
            body.append(f"  if (!read_file(\"nrqc_input{i}.bin\", nrqc_in{i}, sizeof(nrqc_in{i}))) "
                        f"{{ put(\"NRQC_ERROR no nrqc_input{i}.bin\\n\"); quit(3); }}")
    if use_step:
        body.append("  nrqc_stream_reset();")
    for j, p, _i, _k in pairs:
        body.append(f"  read_file(\"nrqc_state{j}.bin\", {state_ptr(j, p, 'cur')}, {_elems(p.shape)}u * "
                    f"sizeof({c_type(p.dtype)}));")
    if use_step:
        args = [f"nrqc_in{i}" for i in range(len(inputs)) if i not in st_in]
        args += [f"nrqc_out{k}" for k in range(len(outputs)) if k not in st_out]
        call = f"{step_name(run_name)}({', '.join(args)})"
    else:
        args = [f"nrqc_in{i}" if i not in st_in else state_ptr(*st_in[i], "cur") for i in range(len(inputs))]
        args += [f"nrqc_out{k}" if k not in st_out else state_ptr(*st_out[k], "next") for k in range(len(outputs))]
        call = f"{run_name}({', '.join(args)})"
    body += [f"  int h = stream_open(\"nrqc_stream.bin\");",
             f"  for (uint32_t f = 0; f < {frames}u; f++) {{",
             f"    stream_read(h, nrqc_in{s_i}, sizeof(nrqc_in{s_i}));",
             "    ticks_start();",
             f"    rc = {call};",
             "    uint64_t t = ticks_read();",
             "    t_model += t;",
             "    if (rc != 0) break;",
             "    put(\"NRQC_FRAME \"); put_u64(t); put(\"\\n\");"]
    for k, s in enumerate(outputs):
        if k not in st_out:
            body.append(f"    put(\"NRQC_FOUT {k} \"); put_hex((const uint8_t *)nrqc_out{k}, sizeof(nrqc_out{k})); "
                        f"put(\"\\n\");")
        else:
            j, p = st_out[k]
            when = "1" if every_state else f"f == {frames - 1}u"
            nbytes = f"{_elems(p.shape)}u * sizeof({c_type(p.dtype)})"
            body.append(f"    if ({when}) {{ put(\"NRQC_FOUT {k} \"); put_hex((const uint8_t *){state_ptr(j, p, 'next')}, "
                        f"{nbytes}); put(\"\\n\"); }}")
    body += ["    cur ^= 1;", "  }"]
    return "\n".join(data) + "\n", "\n".join(body), use_step


def run_stream_firmware(out: Path, manifest: dict, plan, frames: np.ndarray, states: dict[str, np.ndarray],
                        fixed: dict[str, np.ndarray], every_state: bool = True, log=lambda m: None) -> dict:
    """Stream `frames` ([K, *chunk]) through the artifact's library in one QEMU run.

    Returns {"outputs": {name: [K, *shape]} (a state output: every frame's with every_state,
    else the last frame's only), "instructions": [per frame], "entry": the C call used}."""
    out = Path(out)
    fw_dir, build = out / FIRMWARE_DIR, out / FIRMWARE_DIR / "build"
    objs = sorted(build.glob("*.o"))
    if not objs or not (fw_dir / "startup.c").exists():
        raise NrqcError(f"{out}: the library objects (firmware/build/*.o) are missing; recompile with `nrqc compile`")
    inputs, outputs = manifest["inputs"], manifest["outputs"]
    quant = manifest.get("int8_input") or {}
    int8 = quant.get("input") == plan.stream_input and str(frames.dtype) == quant.get("dtype")
    run_name = "nrqc_run_int8" if int8 else "nrqc_run"
    in_dtypes = [quant["dtype"] if int8 and s["name"] == quant["input"] else s["dtype"] for s in inputs]
    target = target_of(manifest)
    k = len(frames)
    data_h, body, use_step = harness_sources(manifest, plan, k, run_name, in_dtypes, every_state)
    log(f"cortex-m stream: {k} frame(s) in one QEMU run, each one "
        + (f"{step_name(run_name)} call (state held in the library)" if use_step else
           f"{run_name} call (state double-buffered in the firmware)"))
    with tempfile.TemporaryDirectory(prefix="nrqc-mstream-") as tmp:
        tmp = Path(tmp)
        fw = tmp / "fw"
        fw.mkdir()
        for name in ("startup.c", "link.ld"):
            shutil.copyfile(fw_dir / name, fw / name)
        (fw / "nrqc_test_data.h").write_text(data_h)
        (fw / "main.c").write_text(firmware._MAIN.replace("NRQC_HARNESS_BODY", body))
        elf = firmware.link_firmware(objs, fw, out, build, target.name)
        run_dir = tmp / "run"
        run_dir.mkdir()
        s_i = [s["name"] for s in inputs].index(plan.stream_input)
        (run_dir / "nrqc_stream.bin").write_bytes(np.ascontiguousarray(frames, dtype=in_dtypes[s_i]).tobytes())
        for i, s in enumerate(inputs):
            if s["name"] in fixed:
                (run_dir / f"nrqc_input{i}.bin").write_bytes(
                    np.ascontiguousarray(fixed[s["name"]], dtype=in_dtypes[i]).tobytes())
        for j, p in enumerate(plan.states):
            (run_dir / f"nrqc_state{j}.bin").write_bytes(np.ascontiguousarray(states[p.input], dtype=p.dtype).tobytes())
        try:
            proc = subproc.run(firmware.qemu_command(target, elf), cwd=run_dir, timeout=firmware.QEMU_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise NrqcError(f"{out}: the stream firmware did not finish {k} frame(s) within "
                            f"{firmware.QEMU_TIMEOUT} s in QEMU") from None
    text = proc.stdout + proc.stderr  # QEMU writes the semihosting console to stderr
    if "NRQC_DONE" not in text:
        raise NrqcError(f"{out}: the stream firmware did not complete in QEMU (exit {proc.returncode}): "
                        + " | ".join(text.strip().splitlines()[-5:]))
    rc = int(re.search(r"NRQC_RC (\d+)", text).group(1))
    ticks = {n: int(re.search(rf"NRQC_TICKS_{n.upper()} (\d+)", text).group(1)) for n in ("loop", "empty")}
    per_tick = firmware.CALIBRATION_INSTRUCTIONS / max(ticks["loop"] - ticks["empty"], 1)
    frames_text = text.split("NRQC_FRAME ")[1:]
    if rc != 0:
        raise NrqcError(f"{out}: {step_name(run_name) if use_step else run_name} returned {rc} in QEMU "
                        f"at frame {len(frames_text)}")
    got: dict[str, list] = {s["name"]: [] for s in outputs}
    instructions = []
    for chunk in frames_text:
        instructions.append(int(round((int(chunk.split("\n", 1)[0]) - ticks["empty"]) * per_tick)))
        for m in re.finditer(r"NRQC_FOUT (\d+) ([0-9a-f]*)\n", chunk):
            spec = outputs[int(m.group(1))]
            dt = np.dtype(spec["dtype"] if spec["dtype"] != "bool" else "uint8")
            got[spec["name"]].append(np.frombuffer(bytes.fromhex(m.group(2)), dt).reshape(spec["shape"]).copy())
    if len(instructions) != k:
        raise NrqcError(f"{out}: the stream firmware reported {len(instructions)} of {k} frame(s)")
    return {"outputs": {n: np.stack(v) for n, v in got.items() if v}, "instructions": instructions,
            "entry": step_name(run_name) if use_step else run_name, "state_in_library": use_step}


class FirmwareStreamSession:
    """`Backend.open_session` of a Cortex-M artifact: a whole stream in one QEMU run
    (`run_frames`, used by nrqc.streaming.run_stream), or one firmware run per call (`step`)."""

    def __init__(self, backend, out: Path, manifest: dict):
        self.backend, self.out, self.manifest = backend, Path(out), manifest

    def run_frames(self, plan, frames: np.ndarray, states: dict, fixed: dict, every_state: bool, count: bool = False,
                   estimate_cycles: bool = False, log=lambda m: None) -> dict:
        """The stream in one QEMU run; QEMU's instruction count comes with every run (`count`
        changes nothing). Cycles are left to the caller (`bare_metal`: the test firmware's
        one nrqc_run through llvm-mca is one frame's estimate)."""
        got = run_stream_firmware(self.out, self.manifest, plan, frames, states, fixed, every_state, log)
        return {**got, "bare_metal": True, "cycles": None,
                "where": f"QEMU {firmware.qemu_command(target_of(self.manifest), Path('x'))[2]} firmware",
                "instructions_what": "executed instructions of each call (QEMU -icount, SysTick around the call)"}

    def step(self, feeds: dict) -> list:
        return self.backend.run(self.out, self.manifest, feeds, None)

    def numpy(self, handle) -> np.ndarray:
        return np.asarray(handle)
