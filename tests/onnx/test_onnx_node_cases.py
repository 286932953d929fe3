"""ONNX backend node tests (generated from `onnx.backend.test.case.node`: each case's
`expect(...)` records a one-node model, its inputs and the reference outputs), compiled
by nrqc for x86 and run from disk in a fresh process.

Every case of an op nrqc claims (docs/onnx-ops.md) must either match the recorded outputs
or be refused when the model is loaded, with an NrqcError naming the node: no wrong result,
no crash in the pipeline. The default suite runs one case per claimed op; the full set
is `-m slow`.

`python -m tests.onnx.test_onnx_node_cases sweep OUT.jsonl [OP ...]` classifies every case of every
op the Relax frontend imports (or of the ops named) (one worker process per op, so a crash is attributed to its
case) — the data behind docs/onnx-ops.md.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "onnx-ops.md"


@lru_cache(maxsize=1)
def all_cases() -> dict[str, object]:
    """{case name: TestCase} of single-node cases (function-expanded variants left out)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    out = {c.name: c for c in cases if c.model is not None and len(c.model.graph.node) == 1
           and not c.name.endswith("_expanded") and "_expanded_ver" not in c.name}
    for case in list(out.values()):
        variant = const_variant(case)
        if variant is not None:
            out[variant.name] = variant
    return out


def op_of(case) -> str:
    return case.model.graph.node[0].op_type


# Suffix of a case variant whose shape-deciding inputs (Slice's starts/ends, Reshape's
# shape, Reduce axes, ...) or recurrent weights are initializers holding the case's recorded values, as exported
# models have them: the node tests feed them as graph inputs, which nrqc refuses at load
# (static shapes), so without the variant those ops would go unchecked.
CONST = "@const"


def const_variant(case):
    """The case with its shape-deciding graph inputs turned into initializers, or None when
    it has none."""
    import copy

    import onnx
    from onnx import numpy_helper

    from nrqc.onnx_model import _SHAPE_INPUTS
    from nrqc.onnx_recurrent import WEIGHT_INPUTS

    node = case.model.graph.node[0]
    # recurrent layers: their weights (graph inputs in the node tests) are initializers in exports
    positions = _SHAPE_INPUTS.get(node.op_type, ()) or WEIGHT_INPUTS.get(node.op_type, ())
    names = [node.input[i] for i in positions if i < len(node.input) and node.input[i]]
    feeds = dict(zip(_case_inputs(case), _arrays(case.data_sets[0][0])))
    names = [n for n in names if n in feeds]
    if not names:
        return None
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    keep = [i for i in model.graph.input if i.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(feeds[n]), n) for n in names)
    variant = copy.copy(case)
    variant.name = case.name + CONST
    variant.model = model
    variant.data_sets = [([v for k, v in feeds.items() if k not in names], outs) for _, outs in case.data_sets[:1]]
    return variant


def claimed_ops() -> dict[str, dict]:
    """The ops docs/onnx-ops.md claims, from its table: {op: {"passing": n, "refused": n}}."""
    ops = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`") and cells[1].isdigit() and cells[2].isdigit():
            ops[cells[0].strip("`")] = {"passing": int(cells[1]), "refused": int(cells[2])}
    return ops


def _arrays(values) -> list[np.ndarray]:
    """A case's recorded inputs/outputs as numpy arrays (some cases record TensorProtos)."""
    from onnx import TensorProto, numpy_helper

    return [numpy_helper.to_array(v) if isinstance(v, TensorProto) else v for v in values]


def _case_inputs(case) -> list[str]:
    inits = {i.name for i in case.model.graph.initializer}
    return [i.name for i in case.model.graph.input if i.name not in inits]


def compile_case(case, workdir: Path):
    """('compiled', out dir) or ('refused', message) or ('crashed', message)."""
    import onnx

    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.errors import NrqcError

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{case.name}.onnx"
    onnx.save(case.model, str(path))
    try:
        out = compile_model(path, "x86", workdir / f"{case.name}-x86", CompileOptions(check=False),
                            log=lambda *a: None)
    except NrqcError as e:
        msg = str(e)
        # a failure inside the pass pipeline or the build is a crash, not a refusal
        kind = "crashed" if "compilation failed in the pass pipeline" in msg else "refused"
        return kind, msg
    except Exception as e:  # noqa: BLE001 - classified, reported by the caller
        return "crashed", f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}"
    return "compiled", out


def compare(case, got: list[np.ndarray], expected: list[np.ndarray]) -> str | None:
    """None when every output matches the recorded one (the case's rtol/atol), else why not."""
    if len(got) != len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        e = np.asarray(e)
        g = np.asarray(g)
        if g.shape != e.shape:
            return f"output {i}: shape {list(g.shape)}, expected {list(e.shape)}"
        if e.dtype.kind in "fc":
            ok = np.isclose(g.astype(np.float64), e.astype(np.float64), rtol=case.rtol, atol=case.atol,
                            equal_nan=True)
            # inf == inf is fine; isclose handles it
        elif e.dtype.kind in "OUS":
            ok = np.asarray(g == e)
        else:
            if g.dtype != e.dtype and not (g.dtype.kind == e.dtype.kind and g.itemsize == e.itemsize) \
                    or e.dtype.kind == "V":  # float8/int4/... come back as raw bytes: not comparable
                return f"output {i}: dtype {g.dtype}, expected {e.dtype}"
            ok = g == e
        if not np.all(ok):
            bad = np.argwhere(~np.asarray(ok))
            idx = tuple(int(j) for j in bad[0]) if bad.size else ()
            return (f"output {i}: {len(bad)} of {e.size} elements differ; first at {list(idx)}: "
                    f"got {g[idx]!r}, expected {e[idx]!r}")
    return None


_RUNNER = r"""
import json, sys
import numpy as np
from nrqc.runtime import ArtifactSession
jobs = json.loads(open(sys.argv[1]).read())
for job in jobs:
    try:
        s = ArtifactSession(job["out"])
        with np.load(job["feeds"]) as z:
            got = s.run({k: z[k] for k in z.files})
        np.savez(job["result"], *got)
        print(json.dumps({"case": job["case"], "ok": True}), flush=True)
    except Exception as e:
        print(json.dumps({"case": job["case"], "ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}), flush=True)
"""


def run_fresh(jobs: list[dict], timeout: int = 600) -> dict[str, dict]:
    """Run compiled cases in one new process: {case: {"ok": bool, "error"?: str}}; a case the
    process died in is reported as such (and the rest are run again after it)."""
    done: dict[str, dict] = {}
    pending = list(jobs)
    while pending:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(pending, f)
        proc = subprocess.run([sys.executable, "-c", _RUNNER, f.name], capture_output=True, text=True,
                              timeout=timeout)
        Path(f.name).unlink()
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                done[r["case"]] = r
        rest = [j for j in pending if j["case"] not in done]
        if proc.returncode != 0 and rest:  # died in rest[0]
            done[rest[0]["case"]] = {"case": rest[0]["case"], "ok": False,
                                     "error": f"the run process died (exit {proc.returncode}): "
                                              f"{(proc.stderr.strip().splitlines() or [''])[-1][:200]}"}
            rest = rest[1:]
        pending = rest if proc.returncode != 0 else []
    return done


def check_cases(names: list[str], workdir: Path) -> dict[str, tuple[str, str]]:
    """{case: (verdict, detail)}; verdict is pass, wrong, refused or crashed."""
    cases = all_cases()
    verdicts: dict[str, tuple[str, str]] = {}
    jobs = []
    for name in names:
        case = cases[name]
        kind, detail = compile_case(case, workdir)
        if kind != "compiled":
            verdicts[name] = (kind, detail)
            continue
        feeds = dict(zip(_case_inputs(case), _arrays(case.data_sets[0][0])))
        fpath = workdir / f"{name}-feeds.npz"
        np.savez(fpath, **feeds)
        jobs.append({"case": name, "out": str(detail), "feeds": str(fpath), "result": str(workdir / f"{name}-out.npz")})
    for name, r in run_fresh(jobs).items():
        if not r["ok"]:
            verdicts[name] = ("crashed", r["error"])
            continue
        with np.load(workdir / f"{name}-out.npz") as z:
            got = [z[f"arr_{i}"] for i in range(len(z.files))]
        why = compare(cases[name], got, _arrays(cases[name].data_sets[0][1]))
        verdicts[name] = ("pass", "") if why is None else ("wrong", why)
    return verdicts


# ------------------------------------------------------------------------------- tests


def _claimed_case_names(per_op: int | None) -> list[str]:
    claimed = claimed_ops()
    by_op: dict[str, list[str]] = {}
    for name, case in sorted(all_cases().items()):
        if op_of(case) in claimed:
            by_op.setdefault(op_of(case), []).append(name)
    names = []
    for op in sorted(by_op):
        names += by_op[op] if per_op is None else by_op[op][:per_op]
    return names


def _assert_no_wrong(verdicts):
    bad = {n: v for n, v in verdicts.items() if v[0] in ("wrong", "crashed")}
    assert not bad, "\n".join(f"{n}: {v[0]}: {v[1]}" for n, v in sorted(bad.items()))
    for name, (verdict, detail) in verdicts.items():
        if verdict == "refused":  # one line, naming the model file and the node or input at fault
            assert "\n" not in detail and ".onnx" in detail and ("node" in detail or "input" in detail or "output '" in detail), (name, detail)


def test_every_claimed_op_has_cases():
    claimed = claimed_ops()
    assert claimed, "docs/onnx-ops.md lists the claimed ops"
    ops = {op_of(c) for c in all_cases().values()}
    assert set(claimed) <= ops


def test_claimed_ops_sample(tmp_path):
    """One case of every claimed op, each exact or refused cleanly (all of them: -m slow)."""
    names = _claimed_case_names(per_op=1)
    verdicts = check_cases(names, tmp_path)
    _assert_no_wrong(verdicts)
    assert sum(v[0] == "pass" for v in verdicts.values()) >= len(names) // 2


def test_refused_attribute_combinations_are_named(tmp_path):
    """The combinations nrqc refuses (wrong results otherwise) fail at load with the node named."""
    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.errors import NrqcError
    import onnx

    cases = all_cases()
    for name, needle in (("test_batchnorm_epsilon_training_mode", "training_mode"),
                         ("test_convtranspose_output_shape", "output_shape"),
                         # shape-deciding inputs fed by graph inputs (crashed in FuseOps / the memory plan)
                         ("test_slice", "Slice node 'y' takes its input 1 ('starts'"),
                         ("test_squeeze", "Squeeze node 'y' takes its input 1 ('axes'"),
                         # outputs the frontend does not produce (or produces with the wrong type)
                         ("test_dropout_default_mask", "its mask output"),
                         ("test_layer_normalization_2d_axis0", "its Mean / InvStdDev outputs"),
                         ("test_training_dropout", "training_mode input"),
                         # element types nrqc does not compile, and integer Pow (crashed the build)
                         ("test_cast_FLOAT_to_FLOAT8E4M3FN", "converts to element type FLOAT8E4M3FN"),
                         ("test_pow_types_int32_int32", "Pow node 'z' takes INT32 input 'x'")):
        assert name in cases, name
        path = tmp_path / f"{name}.onnx"
        onnx.save(cases[name].model, str(path))
        with pytest.raises(NrqcError) as err:
            compile_model(path, "x86", tmp_path / name, CompileOptions(check=False), log=lambda *a: None)
        assert needle in str(err.value) and "node" in str(err.value), str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(16))
def test_all_claimed_op_cases(tmp_path, chunk):
    names = _claimed_case_names(per_op=None)[chunk::16]
    _assert_no_wrong(check_cases(names, tmp_path))


# ------------------------------------------------------------------------------- sweep


def _sweep(out_path: Path, only: list[str]) -> None:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    from nrqc.onnx_recurrent import RECURRENT_OPS

    known = set(_get_convert_map()) | set(RECURRENT_OPS)
    ops = sorted({op_of(c) for c in all_cases().values() if op_of(c) in known and (not only or op_of(c) in only)})
    done = set()
    if out_path.exists():
        done = {json.loads(ln)["op"] for ln in out_path.read_text().splitlines() if ln.strip()}
    for op in ops:
        if op in done:
            continue
        proc = subprocess.run([sys.executable, "-m", "tests.onnx.test_onnx_node_cases", "op", op], cwd=REPO,
                              capture_output=True, text=True, timeout=3600)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        verdicts = json.loads(lines[-1]) if lines else {"error": proc.stderr[-500:]}
        with out_path.open("a") as f:
            f.write(json.dumps({"op": op, "verdicts": verdicts}) + "\n")
        print(op, {k: sum(v[0] == k for v in verdicts.values() if isinstance(v, list))
                   for k in ("pass", "wrong", "refused", "crashed")}, flush=True)


if __name__ == "__main__":  # from the repository root: python -m tests.onnx.test_onnx_node_cases ...
    if sys.argv[1] == "sweep":
        _sweep(Path(sys.argv[2]), sys.argv[3:])
    elif sys.argv[1] == "op":
        names = sorted(n for n, c in all_cases().items() if op_of(c) == sys.argv[2])
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(check_cases(names, Path(d))))
