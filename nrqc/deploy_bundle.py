"""DEPLOY.md: how to run a cross-compiled artifact on the Raspberry Pi itself.

``nrqc compile --target arm_cpu`` calls :func:`write_deploy_md` so that the artifact
directory is a self-contained deploy bundle: ``model.so`` + ``manifest.json`` +
``report.txt`` + ``DEPLOY.md`` (+ ``stream_model.py`` for a model with state inputs and
outputs: it streams frames carrying the state on the device). The commands are exact: the runtime on the Pi is the
official aarch64 ``apache-tvm`` wheel from PyPI, the same one the emulated board
(``nrqc emulate arm_cpu``) runs.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

STREAM_RUNNER = "stream_model.py"  # nrqc/bundle_stream_runner.py, copied into bundles of models with state
TVM_WHEEL = "apache-tvm==0.27.0.post1"
TVM_FFI_WHEEL = "apache-tvm-ffi==0.1.14.post1"
DEPLOY_MD = "DEPLOY.md"

_TEMPLATE = """\
# Deploying `{bundle}` on a Raspberry Pi

This directory is a self-contained deploy bundle for target **{target}**
(`{triple}`, `-mcpu={mcpu}`), compiled by nrqc {nrqc_version} with TVM {tvm_version}
from `{source_name}`:

| file | what |
|---|---|
| `{library}` | the model: a Relax VM executable, shared library for {triple} |
| `manifest.json` | inputs, outputs, memory plan, build facts |
| `report.txt` | the compile report |
| `DEPLOY.md` | this file |

Model inputs: {inputs_md}.
Model outputs: {outputs_md}.
{arch_warning}
## 1. Install the TVM runtime on the Pi (once)

64-bit Raspberry Pi OS (aarch64; bookworm's Python 3.11 or trixie's 3.13: the wheels
need Python >= 3.10 and glibc >= 2.28). The official PyPI wheels contain the runtime;
nothing is compiled on the Pi.

```sh
sudo apt-get install -y python3-venv
python3 -m venv ~/tvm-venv
~/tvm-venv/bin/pip install "{tvm_wheel}" "{tvm_ffi_wheel}" numpy
```

(`apache-tvm-ffi` is pinned: 0.1.15.x crashes in `tvm.ir.save_json`.)

Copy the bundle from the workstation:

```sh
scp -r {bundle} pi@raspberrypi.local:~/{bundle}
```

## 2a. Run it from the workstation through TVM RPC

On the Pi:

```sh
~/tvm-venv/bin/python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090
```

On the workstation (replace the address with the Pi's):

```sh
nrqc deploy {bundle} --rpc raspberrypi.local:9090    # runs it there, checks it against onnxruntime here
nrqc profile {bundle} --rpc raspberrypi.local:9090   # measures it there
```

No board at hand? `nrqc emulate {target}` starts an emulated one (qemu user mode, same
wheel) and prints its address; its latencies are not Pi latencies.

## 2b. Or load the library directly on the Pi (TVM runtime only)

Save as `~/{bundle}/run_model.py` and run `~/tvm-venv/bin/python ~/{bundle}/run_model.py`
(pass `NAME=FILE.npy` arguments to use real inputs instead of random ones):

```python
import sys, time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

here = Path(__file__).resolve().parent
INPUTS = {inputs_py}  # name -> (shape, dtype), from manifest.json

files = dict(arg.split("=", 1) for arg in sys.argv[1:])
rng = np.random.default_rng(0)
dev = tvm.cpu()
lib = tvm.runtime.load_module(str(here / "{library}"))
vm = relax.VirtualMachine(lib, dev)
args = []
for name, (shape, dtype) in INPUTS.items():
    x = np.load(files[name]) if name in files else rng.standard_normal(shape).astype(dtype)
    args.append(tvm.runtime.tensor(x.astype(dtype), dev))

t0 = time.perf_counter()
out = vm["main"](*args)
print(f"inference: {{(time.perf_counter() - t0) * 1e3:.1f}} ms")
outs = [out] if hasattr(out, "numpy") else list(out)
for name, o in zip({output_names!r}, outs):
    a = o.numpy()
    print(name, a.shape, a.dtype, a.ravel()[:8])
```
{stream_section}"""

_STREAM_SECTION = """
## 2c. Stream it on the Pi (the state carried from call to call)

The model carries a state: {pairs_md}. `{runner}` (in this bundle; TVM runtime and numpy
only) runs K frames, one call of `main` each, and passes each state output back as the next
call's state input as the tensor the runtime returned (no copy to numpy between frames):

```sh
~/tvm-venv/bin/python ~/{bundle}/{runner} frames.npy out.npz {state_args} --frame-ms MS
```

- `frames.npy`: {frames} (`nrqc run {bundle} --stream
  signal.npy` on the workstation cuts a long signal the same way and runs this same script on
  the emulated board);
- `--initial-state NAME=FILE.npy`: a state's first value (default zeros);
- `out.npz`: every output that is not state, per frame, and the state after the last frame
  (`--every-state`: every frame's); `--frame-ms` (the audio one frame covers) adds the
  real-time factor to the printed per-frame latency.
"""

_ARCH_WARNING_32 = """
> **32-bit ARM (armv7l, 32-bit Raspberry Pi OS): there is no official TVM wheel.** PyPI
> has no armv7l `apache-tvm` / `apache-tvm-ffi` wheel, so step 1 below does not work
> on a 32-bit OS (nor does `nrqc emulate`). Either install the 64-bit OS and compile with
> `--target arm_cpu`, or build the TVM runtime (no compiler, no LLVM) from source on the
> Pi, from the release this bundle was compiled with (TVM {tvm_version}; needs CMake >= 3.24
> and a C++17 compiler, both in Raspberry Pi OS bookworm; takes a while on a Pi):
>
> ```sh
> sudo apt-get install -y git cmake ninja-build g++ python3-venv python3-dev
> git clone --recursive --branch v0.27.0 https://github.com/apache/tvm ~/tvm-src
> cmake -S ~/tvm-src -B ~/tvm-src/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DUSE_LLVM=OFF
> cmake --build ~/tvm-src/build --target runtime     # -> ~/tvm-src/build/libtvm_runtime.so
> python3 -m venv ~/tvm-venv
> ~/tvm-venv/bin/pip install numpy ~/tvm-src/3rdparty/tvm-ffi   # builds tvm_ffi from source
> ```
>
> Then load the library with the runtime only (this is what nrqc's emulated runs do):
>
> ```
> import ctypes, os, numpy as np, tvm_ffi
> ctypes.CDLL(os.path.expanduser("~/tvm-src/build/libtvm_runtime.so"), ctypes.RTLD_GLOBAL)
> vm = tvm_ffi.load_module("{library}")["vm_load_executable"]()
> vm["vm_initialization"](1, 0, 2)   # kDLCPU, device 0, pooled allocator
> out = vm["main"](*[tvm_ffi.from_dlpack(np.zeros(shape, dtype)) for shape, dtype in INPUTS.values()])
> ```
>
> (`INPUTS` as in the script of section 2b.) These commands were not run here: nrqc
> has no armv7 board or runtime to test them on; the bundle itself is only compiled.
> For RPC, `~/tvm-venv/bin/pip install -e ~/tvm-src/python` and
> `TVM_LIBRARY_PATH=~/tvm-src/build` give `python -m tvm.exec.rpc_server` (untested).
"""


def _spec_md(specs: list[dict]) -> str:
    if not specs:
        return "none"
    return ", ".join(f"`{s['name']}` {list(s['shape'])} {s['dtype']}" for s in specs)


def render_deploy_md(manifest: dict, bundle_name: str = "model-bundle") -> str:
    """The text of DEPLOY.md for an artifact's manifest."""
    tvm_target = manifest.get("tvm_target") or {}
    triple = tvm_target.get("mtriple", "aarch64-linux-gnu")
    inputs = manifest.get("inputs", [])
    outputs = manifest.get("outputs", [])
    inputs_py = "{" + ", ".join(f"{s['name']!r}: ({tuple(s['shape'])!r}, {s['dtype']!r})" for s in inputs) + "}"
    source = manifest.get("source_model") or "?"
    return _TEMPLATE.format(
        bundle=bundle_name,
        target=manifest.get("target", "arm_cpu"),
        triple=triple,
        mcpu=tvm_target.get("mcpu", "generic"),
        nrqc_version=manifest.get("nrqc_version", "?"),
        tvm_version=manifest.get("tvm_version", "?"),
        source_name=Path(source).name,
        library=manifest.get("library", "model.so"),
        inputs_md=_spec_md(inputs),
        outputs_md=_spec_md(outputs),
        arch_warning=(_ARCH_WARNING_32.format(tvm_version=manifest.get("tvm_version", "?"),
                                              library=manifest.get("library", "model.so"))
                      if not triple.startswith("aarch64") else ""),
        tvm_wheel=TVM_WHEEL,
        tvm_ffi_wheel=TVM_FFI_WHEEL,
        inputs_py=inputs_py,
        output_names=[s["name"] for s in outputs],
        stream_section=_stream_section(manifest, bundle_name),
    )


def stream_pairs(manifest: dict):
    """The state pairs of a model with state (nrqc.streaming.pairs_by_name), or []."""
    from nrqc.errors import NrqcError
    from nrqc.streaming import pairs_by_name

    try:
        return pairs_by_name(manifest)
    except NrqcError:
        return []


def _stream_section(manifest: dict, bundle_name: str) -> str:
    from nrqc.errors import NrqcError
    from nrqc.streaming import plan_stream

    pairs = stream_pairs(manifest)
    if not pairs:
        return ""
    try:
        plan = plan_stream(manifest)
        frames = f"`[K, {', '.join(str(d) for d in plan.shape)}]` {plan.dtype}, K frames of `{plan.stream_input}`"
    except NrqcError:  # several inputs besides the state: the others are given once with --input
        frames = "K frames of the streamed input, `[K, *its shape]` (the other inputs: `--input NAME=FILE.npy`)"
    return _STREAM_SECTION.format(
        pairs_md=", ".join(f"input `{p.input}` {list(p.shape)} -> output `{p.output}`" for p in pairs),
        runner=STREAM_RUNNER, bundle=bundle_name, state_args=" ".join(f"--state {p.input}={p.output}" for p in pairs),
        frames=frames)


def write_deploy_md(out_dir: Path, manifest: dict, bundle_name: str | None = None) -> Path:
    """Write ``out_dir/DEPLOY.md`` (atomically) and return its path.

    ``bundle_name`` is the directory name the user copies to the Pi; by default the
    name of ``out_dir``, unless that is a temporary staging name (starting with "."), in
    which case "model-bundle" is used.
    """
    out_dir = Path(out_dir)
    if bundle_name is None:
        bundle_name = out_dir.name
        if bundle_name.startswith("."):  # staging dir of nrqc.artifact.staged_directory: ".OUT.tmp-xxxx"
            inner = bundle_name[1:].split(".tmp-")[0]
            bundle_name = inner or "model-bundle"
    path = out_dir / DEPLOY_MD
    tmp = out_dir / f".{DEPLOY_MD}.{os.getpid()}.tmp"
    tmp.write_text(render_deploy_md(manifest, bundle_name))
    os.replace(tmp, path)
    if stream_pairs(manifest):  # the runner section 2c names
        shutil.copyfile(Path(__file__).with_name("bundle_stream_runner.py"), out_dir / STREAM_RUNNER)
    return path
