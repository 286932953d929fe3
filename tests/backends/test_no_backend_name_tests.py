"""Nothing outside targets/ decides by a back end's name: callers go through nrqc.backends,
which picks the implementation by the type of the target's back-end spec."""
from __future__ import annotations

import ast
from pathlib import Path

from nrqc.targets import BackendSpec

REPO = Path(__file__).resolve().parents[2]
# The names the specs record in manifests ("host", "linux-cross", "bare-metal"), written
# out so that a renamed spec does not silently shrink the rule.
BACKEND_NAMES = {"host", "linux-cross", "bare-metal"}


def _is_backend_name(node) -> bool:
    return isinstance(node, ast.Constant) and node.value in BACKEND_NAMES


def _reads_target_kind(node) -> bool:
    """`x.target_kind`, `x["target_kind"]`, `x.get("target_kind")`."""
    if isinstance(node, ast.Attribute):
        return node.attr == "target_kind"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "target_kind"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "target_kind"
    return False


def backend_name_tests(source: str, filename: str = "<source>") -> list[str]:
    """Comparisons that decide by a back end's name: a back-end name on either side of
    ==, !=, in, not in (also inside a tuple/list/set), or the manifest's target_kind
    compared with anything."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        flat = []
        for o in operands:
            flat += list(o.elts) if isinstance(o, (ast.Tuple, ast.List, ast.Set)) else [o]
        if any(_is_backend_name(o) for o in flat) or any(_reads_target_kind(o) for o in operands):
            found.append(f"{filename}:{node.lineno}: {ast.get_source_segment(source, node)}")
    return found


def test_the_rule_catches_what_it_forbids():
    bad = '''
if target.kind == "bare-metal": pass
if manifest.get("target_kind") != "host": pass
ok = desc.kind in ("linux-cross", "host")
if m["target_kind"] is None: pass
if "bare-metal" == k: pass
'''
    assert len(backend_name_tests(bad)) == 5
    fine = '''
if p.kind == "conv2d": pass
if buf.kind == "output": pass
name = "bare-metal rule: no float copy"
manifest = {"target_kind": desc.backend.name}
'''
    assert backend_name_tests(fine) == []


def test_the_names_are_the_specs_names():
    assert {cls().name for cls in BackendSpec.__subclasses__()} == BACKEND_NAMES


def test_no_back_end_name_tests_outside_targets():
    found = []
    for root in (REPO / "nrqc", REPO / "passes"):
        for path in sorted(root.rglob("*.py")):
            found += backend_name_tests(path.read_text(), str(path.relative_to(REPO)))
    assert not found, "decide through nrqc.backends (the spec's type), not the back end's name:\n" + "\n".join(found)
