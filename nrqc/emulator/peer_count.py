"""onnxruntime counted the way nrqc is counted: its official aarch64 build on the emulated board.

``nrqc profile OUT --against-onnxruntime`` puts onnxruntime's instructions and estimated
cycles next to nrqc's. Same board (the cached Debian arm64 root file system, onnxruntime
from the official aarch64 wheel installed with it), same ``qemu -cpu`` as the artifact's
target (onnxruntime picks its int8 kernels from the CPU's HWCAP at run time, so the core
matters: a Pi 4's Cortex-A72 has no dot product), same qemu TB logging, same llvm-mca
model, the same seeded input.

What is counted (``ort_guest.py``): instructions executed in onnxruntime's own code (its
Python extension, which holds the whole engine and the MLAS kernels) during one
``InferenceSession.run`` after one warm-up run, one thread. Not counted: session creation
and graph optimization (done once), the warm-up run, Python, numpy, libc/libm/libstdc++.
nrqc's count is model.so's code (load + VM creation + one call, see ``icount``): both are
the engine's own code for one inference, without the C/C++ runtime libraries around it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from nrqc.emulator import rootfs as _rootfs
from nrqc.emulator.icount import _guest_paths, counted_guest_run, require_tools, seeded_feeds
from nrqc.errors import NrqcError

WHAT = ("aarch64 instructions executed in onnxruntime's own library (its Python extension: engine + MLAS) "
        "during one InferenceSession.run after a warm-up run, 1 thread; excludes session creation, Python, "
        "libc/libm/libstdc++")
COUNTED_PHASE = 1  # phase 0: import, session, warm-up run; 1: the counted run; 2: after it


def onnx_input_specs(model_path: str | Path, shapes: dict | None = None):
    """TensorSpecs of an ONNX file's graph inputs (the initializers excluded), with the
    given shapes for the inputs they name (those the file leaves dynamic)."""
    import onnx

    from nrqc.onnx_model import graph_inputs

    model = onnx.load(str(model_path), load_external_data=False)
    names = {i.name for i in model.graph.input}
    return graph_inputs(model, {k: v for k, v in (shapes or {}).items() if k in names}, model_path)


def count_onnxruntime(model_path: str | Path, cpu: str, inputs: dict[str, np.ndarray] | None = None,
                      shapes: dict | None = None, seed: int = 0, estimate_cycles: bool = True, timeout: float = 3600,
                      log=lambda m: None) -> dict:
    """Instructions (and llvm-mca cycles for `cpu`) of one onnxruntime inference of
    `model_path` on the emulated board under ``qemu -cpu CPU``. Inputs: `inputs` by name,
    the rest seeded-random as nrqc's count draws them; `shapes` for inputs the file leaves
    dynamic.

    Returns ``{"instructions", "tb_executions", "outputs", "cpu", "onnxruntime", "what",
    "emulator", "seconds"[, "cycles"]}``."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise NrqcError(f"--against-onnxruntime {model_path}: no such ONNX file")
    require_tools(estimate_cycles)
    specs = onnx_input_specs(model_path, shapes)
    feeds = seeded_feeds(specs, inputs, seed)
    root = _rootfs.build_rootfs()
    host_dir, guest_dir = _guest_paths(root, cpu)
    try:
        shutil.copyfile(model_path, host_dir / "model.onnx")
        shutil.copyfile(Path(__file__).with_name("ort_guest.py"), host_dir / "ort_guest.py")
        np.savez(host_dir / "inputs.npz", **feeds)
        guest_args = [f"{guest_dir}/ort_guest.py", f"{guest_dir}/model.onnx", f"{guest_dir}/inputs.npz",
                      f"{guest_dir}/outputs.npz"]
        run = counted_guest_run(root, cpu, guest_args, {"OMP_NUM_THREADS": "1"},
                                f"onnxruntime on {model_path.name}", timeout, log)
        phases = len(run.counter.phases)
        if phases != 3:
            raise NrqcError(f"onnxruntime count of {model_path.name}: {phases - 1} marker call(s) in the log, "
                            f"expected 2: count not reliable")
        insns, execs, _missing = run.counter.total(COUNTED_PHASE)
        with np.load(host_dir / "outputs.npz") as z:
            outputs = [z[f"arr_{i}"] for i in range(len(z.files))]
        version = next((ln.split()[1] for ln in run.stdout.splitlines() if ln.startswith("NRQC_ORT_VERSION ")), "?")
        result = {"instructions": int(insns), "tb_executions": int(execs), "outputs": outputs, "cpu": cpu,
                  "onnxruntime": version, "what": WHAT, "emulator": run.emulator, "seconds": run.seconds,
                  "model": str(model_path)}
        if estimate_cycles:
            from nrqc.emulator.mca import estimate_cycles as _estimate

            blocks = run.counter.executed_blocks(COUNTED_PHASE)
            log(f"estimating {cpu} cycles of {len(blocks)} onnxruntime translation blocks with llvm-mca")
            result["cycles"] = _estimate(blocks, cpu)
        return result
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)
