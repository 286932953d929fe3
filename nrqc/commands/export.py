"""`nrqc export CHECKPOINT -o model.onnx`: the pruned, folded model in ONNX (BAM contract)."""
from __future__ import annotations

import json

import click


def _fmt(d: dict) -> str:
    w = " ".join(str(v) for v in d["widths"].values())
    extra = f", {d['mflops_per_s']} MFLOP/s" if "mflops_per_s" in d else ""
    return (f"input {d['input_shape']}, widths [{w}], {d['macs']:,} MACs{extra}, {d['params']:,} params, "
            f"{d['weight_bytes']:,} B weights, {d['activation_peak_bytes']:,} B peak activations")


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the ONNX model.")
@click.option("--no-check", is_flag=True, help="Skip the onnxruntime-vs-PyTorch parity check.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--frames", type=int, default=None,
              help="Input window in frames (frame-level VADs: every layer runs along time, so the same weights "
                   "serve any window; a shorter one needs less RAM). Default: the training window.")
def command(checkpoint: str, out: str, no_check: bool, as_json: bool, frames: int | None):
    """Slice a trained checkpoint to its learned widths, fold BatchNorm into thresholds,
    and write ONNX (opset 17) with Heaviside as Greater+Cast, int8 weights as
    DequantizeLinear and, for an all-integer first layer, the input as
    QuantizeLinear+DequantizeLinear (docs/bam-onnx-contract.md)."""
    from nrqc.training.onnx_export import export_checkpoint

    s = export_checkpoint(checkpoint, out, check=not no_check, frames=frames)
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    click.echo(f"wrote {s['onnx']} ({s['task']}, {s['variant']}, opset {s['opset']})")
    click.echo(f"  input  '{s['input']['name']}' {s['input']['shape']}  output '{s['output']['name']}': {s['output']['meaning']}")
    if "quantized_to" in s["input"]:
        i = s["input"]
        click.echo(f"  first layer all-integer: input QuantizeLinear to {i['quantized_to']} (scale {i['scale']:.6g}, "
                   f"zero point {i['zero_point']}), int8 weights; a device may feed the int8 features directly")
    click.echo(f"  before: {_fmt(s['before'])}")
    click.echo(f"  after:  {_fmt(s['after'])}")
    if "parity" in s:
        p = s["parity"]
        click.echo(f"  onnxruntime vs PyTorch: max |diff| {p['max_abs_diff']:.3g} over {p['trials']} inputs, "
                   f"{100 * p['agree_fraction']:.1f}% of outputs agree")
