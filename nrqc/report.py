"""The human-readable compile report (report.txt)."""
from __future__ import annotations


def _kb(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):,.2f} MiB"


def layer_rows(layers: list[dict]) -> list[str]:
    head = f"{'layer':<44} {'op':<14} {'kernel':<48} {'act':>4} {'wgt':>4} {'MACs':>13} {'mul->add':>13}"
    rows = [head, "-" * len(head)]
    for layer in layers:
        rows.append(f"{layer['name'][:44]:<44} {layer['op']:<14} {str(layer['kernel'])[:48]:<48} "
                    f"{layer['act_bits']:>4} {str(layer['weight_bits'] or '-'):>4} {layer['macs']:>13,} "
                    f"{layer.get('multiplications_replaced', 0):>13,}")
    return rows


def compile_report(manifest: dict) -> str:
    lines = [
        f"nrqc {manifest['nrqc_version']} (TVM {manifest['tvm_version']}) compile report",
        f"model:   {manifest['source_model']}",
        f"target:  {manifest['target']} {manifest['tvm_target']}",
        "inputs:  " + ", ".join(f"{s['name']} {s['shape']} {s['dtype']}" for s in manifest["inputs"]),
        "outputs: " + ", ".join(f"{s['name']} {s['shape']} {s['dtype']}" for s in manifest["outputs"]),
        f"tuned:   {'yes, database ' + str(manifest['tuning']['database']) if manifest['tuning']['tuned'] else 'no'}",
        "",
        "memory",
        f"  weights:          {_kb(manifest['weights_bytes'])} "
        + "(" + ", ".join(f"{k} {_kb(v)}" for k, v in sorted(manifest["weights_bytes_by_dtype"].items())) + ")",
        f"  peak activations: {_kb(manifest['peak_activation_bytes'])} "
        f"(static plan {_kb(manifest['memory_plan'].get('planned_storage_bytes', 0))}, largest kernel scratch "
        f"{_kb(manifest['memory_plan'].get('max_kernel_scratch_bytes', 0))}, inputs+outputs "
        f"{_kb(manifest['memory_plan'].get('io_bytes', 0))})",
        f"  library:          {_kb(manifest['library_bytes'])}",
        f"  MACs/inference:   {manifest['macs']:,}",
        "",
        "layers",
        *("  " + r for r in layer_rows(manifest["layers"])),
    ]
    chosen = [layer for layer in manifest["layers"] if layer.get("strategy")]
    if chosen:
        lines += ["", "kernel strategies (what nrqc chose per layer, how, accumulator)"]
        for layer in chosen:
            st = layer["strategy"]
            cand = st.get("candidates_ms") or st.get("cost_model_cycles")
            acc = layer.get("accumulator")
            inp = st.get("input")  # an int8-input layer (the all-integer first layer)
            lines.append(f"  {layer['name']}: {st.get('strategy')} by {st.get('method')}"
                         + (f"; {inp['dtype']} input (scale {inp['scale']:g}, zero point {inp['zero_point']}, "
                            f"{inp['quantize']})" if inp else "")
                         + (f"; candidates {cand}" if cand else "")
                         + (f"; int32 accumulator, worst case |acc| {acc['worst_case_abs']:,} "
                            f"({acc['bits_needed']} bits)" if acc else ""))
    floats = [layer for layer in manifest["layers"] if layer.get("float_reason")]
    if floats:
        lines += ["", "layers left in float (not converted to a binary kernel)"]
        lines += [f"  {layer['name']}: {layer['float_reason']}" for layer in floats]
    if manifest.get("notes"):
        lines += ["", "notes", *("  " + n for n in manifest["notes"])]
    check = manifest.get("check", {})
    lines += ["", "numerical check", "  " + (check.get("summary") or f"not run: {check.get('reason')}")]
    lines += ["", "passes: " + " -> ".join(manifest["passes"])]
    return "\n".join(lines) + "\n"
