"""Why a binary (bam) quality model trails its float twin: the measurements of issue 20.

    python bench/bench_bam_diagnose.py --float RUN_F --bam RUN_B [--bam RUN_B2 ...] [--json out.json]

RUN_* are `nrqc train quality` run folders trained on one corpus (checkpoint.pt,
metrics.json, the corpus from metrics.json).  Printed per model, on the validation and
test splits (no training here, a few seconds of CPU):

- training curves: validation Pearson per epoch, the best epoch, whether it stopped early;
- binary maps: always-on / always-off channel fractions per binary layer, the pooled
  layer's constant bits and how many distinct 64-bit codes the head sees;
- surrogate: beta per layer and the fraction of pre-activations within 1/beta of the
  threshold (where the SuperSpike gradient is above 1/4: the units that learn);
- int8 fake-quant: test Pearson with each int8 layer's weights put back to float;
- pooled-layer information: a ridge regression from the pooled features to the labels
  (fit on train, Pearson on test) for the float model's real-valued pooled features, the
  same features cut to one bit per channel at the median (what the calibration of the
  pooled threshold aims for), at quantiles spread over (0, 1) (a thermometer code), and
  the bam model's own pooled bits;
- float − bam on test with the paired bootstrap interval, when both runs wrote
  test_predictions.npz (runs that have not finished: rerun their `nrqc train` command with
  `--epochs` at the last epoch done, which only evaluates).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from nrqc.data.corpus import load_corpus
from nrqc.training import metrics as M
from nrqc.training.bootstrap import paired_task_differences
from nrqc.training.calibrate import pooled_binary_layers, pooled_quantiles
from nrqc.training.checkpoint import load_checkpoint, model_from_checkpoint
from nrqc.training.diagnostics import binary_unit_stats, layer_name
from nrqc.training.net import Block, GlobalMaxPool
from nrqc.training.trainer import predict


def _run(folder: str):
    m = json.loads((Path(folder) / "metrics.json").read_text())
    state = load_checkpoint(Path(folder) / "checkpoint.pt")  # the best epoch so far while a run trains
    m.setdefault("best_epoch", state["epoch"])
    return m, model_from_checkpoint(state)


@torch.no_grad()
def pooled_features(net, x: torch.Tensor, batch: int = 64) -> np.ndarray:
    """The GlobalMaxPool output (the head's input), [N, C]."""
    feats = []
    pool = next(m for m in net.layers if isinstance(m, GlobalMaxPool))
    h = pool.register_forward_hook(lambda mod, inp, out: feats.append(out.detach()))
    try:
        predict(net, x, batch)
    finally:
        h.remove()
    return torch.cat(feats).numpy()


def ridge_pearson(f_tr, y_tr, f_te, y_te, lam: float = 1.0) -> float:
    """Pearson on test of a ridge regression fit on train (features standardized)."""
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    a, b = (f_tr - mu) / sd, (f_te - mu) / sd
    a1 = np.hstack([a, np.ones((len(a), 1))])
    w = np.linalg.solve(a1.T @ a1 + lam * np.eye(a1.shape[1]), a1.T @ y_tr)
    return M.pearson(np.hstack([b, np.ones((len(b), 1))]) @ w, y_te)


@torch.no_grad()
def surrogate_support(net, x: torch.Tensor) -> dict:
    """Per binary layer: beta and the fraction of pre-activations with |z| < 1/beta."""
    out, pre = {}, {}
    hooks = []
    for i, m in enumerate(net.layers):
        if isinstance(m, Block) and m.binary is not None:
            hooks.append(m.binary.register_forward_hook(
                lambda mod, inp, o, i=i: pre.setdefault(i, []).append(inp[0].detach().reshape(-1))))
    try:
        predict(net, x)
    finally:
        for h in hooks:
            h.remove()
    for i, zs in pre.items():
        beta = net.layers[i].binary.beta
        z = torch.cat(zs)
        out[layer_name(i, net.layers[i])] = {"beta": beta, "near_threshold": round(float((z.abs() < 1 / beta).float().mean()), 4)}
    return out


def int8_ablation(net, x, y) -> dict:
    """Test Pearson with all int8 layers, and with each one's weights back to float."""
    base = M.pearson(predict(net, x), y)
    out = {"all_int8": base}
    int8 = [(i, m) for i, m in enumerate(net.layers) if isinstance(m, Block) and m.weight_mode == "int8"]
    for i, m in int8:
        m.weight_mode = "float"
        out[f"{layer_name(i, m)} float"] = M.pearson(predict(net, x), y)
        m.weight_mode = "int8"
    for _, m in int8:
        m.weight_mode = "float"
    out["all float weights"] = M.pearson(predict(net, x), y)
    for _, m in int8:
        m.weight_mode = "int8"
    return out


def thermometer_bits(f_tr, f, spread: bool) -> np.ndarray:
    """One bit per channel: above the channel's median on train, or above its quantile q_c
    from the `--pooled-calibration spread` levels (each channel cuts at another level)."""
    q = pooled_quantiles(f_tr.shape[1], "spread" if spread else "median").numpy()
    thr = np.array([np.quantile(f_tr[:, j], q[j]) for j in range(f_tr.shape[1])])
    return (f > thr).astype(np.float64)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--float", dest="float_run", required=True)
    ap.add_argument("--bam", action="append", required=True)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    mf, fnet = _run(a.float_run)
    corpus = load_corpus(mf["data"]["source"]["path"] if mf["data"]["source"].get("kind") == "real"
                         else Path(a.float_run) / "data")
    x = torch.from_numpy(corpus["features"])
    y = corpus["labels"].astype(np.float64)
    split = corpus["split"]
    tr, va, te = (np.flatnonzero(split == s) for s in (0, 1, 2))
    report = {"corpus": {"train": len(tr), "val": len(va), "test": len(te)}, "models": {}}
    ff = {s: pooled_features(fnet, x[idx]) for s, idx in (("train", tr), ("test", te))}
    report["pooled_information"] = {
        "float real-valued": ridge_pearson(ff["train"], y[tr], ff["test"], y[te]),
        "float, 1 bit at the median": ridge_pearson(thermometer_bits(ff["train"], ff["train"], False), y[tr],
                                                    thermometer_bits(ff["train"], ff["test"], False), y[te]),
        "float, 1 bit at spread quantiles": ridge_pearson(thermometer_bits(ff["train"], ff["train"], True), y[tr],
                                                          thermometer_bits(ff["train"], ff["test"], True), y[te]),
    }
    for folder in [a.float_run, *a.bam]:
        m, net = _run(folder)
        hist = [round(h["val"]["pearson"], 4) for h in m["history"]]
        r = {"variant": m["variant"], "config": {k: m["config"].get(k) for k in ("lr", "epochs", "init", "lr_schedule", "seed")},
             "val_pearson_per_epoch": hist, "train_loss_per_epoch": [round(h["train_loss"], 4) for h in m["history"]],
             "best_epoch": m["best_epoch"], "stopped_early": m["stopped_early"],
             "test_pearson": M.pearson(predict(net, x[te]), y[te])}
        if any(b.binary is not None for _, b in net.blocks()):
            r["binary_units_val"] = binary_unit_stats(net, x[va])
            r["surrogate_val"] = surrogate_support(net, x[va])
            r["int8_test_pearson"] = int8_ablation(net, x[te], y[te])
            bits = {s: pooled_features(net, x[idx]) for s, idx in (("train", tr), ("val", va), ("test", te))}
            r["pooled_layer"] = [layer_name(i, net.layers[i]) for i in sorted(pooled_binary_layers(net))]
            r["distinct_head_inputs_val"] = int(len(np.unique(bits["val"], axis=0)))
            r["ridge_on_pooled_bits_test"] = ridge_pearson(bits["train"], y[tr], bits["test"], y[te])
        npz = [Path(f) / "test_predictions.npz" for f in (a.float_run, folder)]
        if folder != a.float_run and all(f.is_file() for f in npz):
            (fp, bp), lab = [np.load(f)["pred"] for f in npz], np.load(npz[0])["label"]
            r["test_ci"] = m.get("test_ci")
            r["float_minus_this_test"] = paired_task_differences("quality", [fp], [bp], lab)
        report["models"][folder] = r
    print(json.dumps(report, indent=1, default=float))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
