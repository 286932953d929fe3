"""`nrqc compile --dump-ir DIR`: the IR module after each pipeline step that ran, one file
per step, numbered in run order, each a parseable TVMScript module."""
from __future__ import annotations

import ast
import json

from nrqc.backends import backend_of_manifest
from nrqc.backends.host import HostLibraryBackend
from tests.conftest import run_cli
from tests.onnx_builders import small_conv_model


def test_dump_ir_writes_the_module_after_each_step_in_order(tmp_path):
    model = small_conv_model(tmp_path / "small.onnx")
    out, ir = tmp_path / "out", tmp_path / "ir"
    run_cli("compile", model, "--target", "x86", "-o", out, "--no-check", "--dump-ir", ir)
    manifest = json.loads((out / "manifest.json").read_text())
    ran = manifest["passes"]
    files = sorted(p.name for p in ir.iterdir())
    assert len(ran) > 20 and files == [f"{i + 1:02d}-{name}.py" for i, name in enumerate(ran)]
    for name in files:
        text = (ir / name).read_text()
        ast.parse(text, name)  # TVMScript is Python syntax
        assert "@I.ir_module" in text and "def main(" in text, name
    first, last = (ir / files[0]).read_text(), (ir / files[-1]).read_text()
    assert "R.nn.conv2d" in first and "call_tir" not in first  # straight from the importer
    assert "R.nn.conv2d" not in last and "T.prim_func" in last  # legalized into kernels
    # the artifact it wrote reopens through the back end that built it
    assert type(backend_of_manifest(manifest)) is HostLibraryBackend

