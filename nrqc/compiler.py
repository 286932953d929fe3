"""`nrqc compile`: the driver. Load and validate the ONNX model, set up the pipeline
context, and hand both to the target's back end (nrqc.backends), which builds, checks and
writes the artifact directory."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from nrqc.artifact import check_output_dir
from nrqc.backends import backend_for
from nrqc.layer_table import build_layer_table
from nrqc.onnx_model import load_model
from nrqc.pipeline import CompileContext
from nrqc.targets import get_target


@dataclasses.dataclass
class CompileOptions:
    shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    constants: dict[str, str] = dataclasses.field(default_factory=dict)  # `--const NAME=VALUE`
    check: bool = True
    atol: float = 1e-4
    rtol: float = 1e-4
    db: str | None = None
    seed: int = 0
    rpc: str | None = None  # run the check on this board (HOST:PORT), see nrqc.board_check
    mcpu: str | None = None  # x86: build for this named CPU instead of this host's (`--mcpu`)
    dump_ir: str | None = None  # write the IR module after each pipeline step to this folder (`--dump-ir`)


def compile_model(model_path: str | Path, target_name: str, out: str | Path | None,
                  options: CompileOptions | None = None, log=print) -> Path:
    options = options or CompileOptions()
    target = get_target(target_name, options.mcpu)
    m = load_model(model_path, options.shapes, options.constants)
    for line in m.rewrites:
        log(f"folded {line}")
    out = Path(out) if out else Path(f"{m.path.stem}-{target.name}")
    check_output_dir(out)  # a read-only or impossible output folder fails now, not after the build
    ctx = CompileContext(target=target, onnx_model=m.shaped, layers=build_layer_table(m.shaped),
                         options={"db": options.db, "source_model": str(m.path)},
                         dump_ir_dir=Path(options.dump_ir) if options.dump_ir else None)
    return backend_for(target).build(m, ctx, out, options, log=log)
