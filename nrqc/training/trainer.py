"""Training loop shared by every task: data, loss with the complexity term, metrics,
checkpoints every epoch, resumption and early stopping.

The complexity term (only when the model has learned widths) is
``α · MACs(K) / MACs(full)`` for ``complexity_weight=α``, or, to hold a budget,
``10 · relu(MACs(K) − B) / MACs(full)`` for ``budget_macs=B``; both are differentiable
in every K through :func:`nrqc.training.complexity.model_cost`.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nrqc.errors import NrqcError
from nrqc.progress import Progress, is_terminal
from nrqc.training import metrics as M
from nrqc.training.bootstrap import LEVEL, RESAMPLES, task_intervals
from nrqc.training.calibrate import POOLED_MODES, calibrate_thresholds, pooled_binary_layers, recalibrate_constant_pooled
from nrqc.training.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from nrqc.training.complexity import model_cost, summary
from nrqc.training.diagnostics import binary_unit_stats
from nrqc.training.warm_start import load_init, warm_start

TASKS = ("quality", "vad", "antispoof", "synthetic")
LR_SCHEDULES = ("constant", "cosine")
# Small defaults that train in minutes on 2 CPU cores.
DEFAULTS = {
    "quality": {"epochs": 8, "batch_size": 16, "lr": 2e-3, "samples": 400},
    "vad": {"epochs": 60, "batch_size": 32, "lr": 3e-3, "samples": 1000},
    "antispoof": {"epochs": 10, "batch_size": 16, "lr": 2e-3, "samples": 400},
    "synthetic": {"epochs": 40, "batch_size": 64, "lr": 3e-3, "samples": 4096},
}


@dataclass
class TrainConfig:
    task: str
    variant: str = "float"
    arch: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    lr_k: float = 0.05
    complexity_weight: float = 0.0
    budget_macs: float | None = None
    patience: int = 5
    seed: int = 0
    samples: int | None = None
    init: str | None = None  # warm start: copy the weights of this checkpoint first
    lr_schedule: str = "constant"  # or "cosine": lr·½(1 + cos(π·epoch/epochs)) per epoch
    # Thresholds of the globally max-pooled binary layer (see calibrate.py): "median", or
    # "spread" (spread quantiles, and constant channels re-calibrated after every epoch).
    pooled_calibration: str = "median"
    # The first layer of BAM variants: "int8" (int8 input features and weights, the
    # default) or "float" (float weights on float features); None = the variant's default.
    first_layer: str | None = None
    build_kwargs: dict = field(default_factory=dict)

    def resolved(self) -> "TrainConfig":
        if self.task not in TASKS:
            raise NrqcError(f"unknown task '{self.task}' (choose {', '.join(TASKS)})")
        if self.pooled_calibration not in POOLED_MODES:
            raise NrqcError(f"unknown --pooled-calibration '{self.pooled_calibration}' (choose {', '.join(POOLED_MODES)})")
        if self.lr_schedule not in LR_SCHEDULES:
            raise NrqcError(f"unknown --lr-schedule '{self.lr_schedule}' (choose {', '.join(LR_SCHEDULES)})")
        from nrqc.models.zoo import FIRST_LAYERS, default_first_layer

        self.first_layer = self.first_layer or default_first_layer(self.variant)
        if self.first_layer not in FIRST_LAYERS:
            raise NrqcError(f"unknown --first-layer '{self.first_layer}' (choose {', '.join(FIRST_LAYERS)})")
        if self.first_layer == "int8" and not self.variant.startswith("bam"):
            raise NrqcError(f"--first-layer int8 needs --variant bam or bam-reparam, not '{self.variant}'")
        d = DEFAULTS[self.task]
        for k in ("epochs", "batch_size", "lr", "samples"):
            if getattr(self, k) is None:
                setattr(self, k, d[k])
        from nrqc.models import default_arch

        self.arch = self.arch or default_arch(self.task)
        return self


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_cache(cfg: TrainConfig, cache_dir: Path, data_dir: Path | None, samples_given: bool) -> None:
    """OUT/data is reused by later runs with the same --out; refuse when it is not the data
    this run asks for (a changed --data or --samples would otherwise be silently ignored).
    Without --samples a synthesized cache is taken as it is (cfg.samples follows it)."""
    import json

    mf = cache_dir / "manifest.json"
    if not mf.is_file():
        return
    m = json.loads(mf.read_text())
    src = m.get("source") or {}
    have = (f"{m.get('count')} synthesized examples" if src.get("kind") == "synthesized"
            else f"the corpus read from {src.get('path')}")
    fix = f"use another --out or delete '{cache_dir}'"
    if data_dir is not None:
        if src.get("kind") != "real" or src.get("path") != str(data_dir.resolve()):
            raise NrqcError(f"'{cache_dir}' holds {have}, not the corpus in --data {data_dir}; {fix}")
    elif src.get("kind") == "synthesized":
        if samples_given and m.get("count") != cfg.samples:
            raise NrqcError(f"'{cache_dir}' holds {have}, not --samples {cfg.samples}; {fix}")
        cfg.samples = int(m.get("count"))
    elif samples_given:
        raise NrqcError(f"'{cache_dir}' holds {have}; --samples {cfg.samples} asks for synthesized data; {fix}")


def load_data(cfg: TrainConfig, data_dir: Path | None, cache_dir: Path, progress: bool = True,
              samples_given: bool = True) -> dict:
    """{'x': tensor [N, ...], 'y': tensor, 'split': array, 'manifest': dict}."""
    if cfg.task == "synthetic":
        from nrqc.training.synthetic import make_synthetic

        x, y = make_synthetic(cfg.samples, seed=cfg.seed)
        from nrqc.data.corpus import split_indices

        return {"x": torch.from_numpy(x), "y": torch.from_numpy(y), "split": split_indices(len(x), cfg.seed),
                "manifest": {"source": {"kind": "synthetic teacher"}, "features": x.shape[1]}}
    from nrqc.data.corpus import load_corpus, synthesize
    from nrqc.data.loaders import prepare_corpus

    _check_data_dir(data_dir)
    target = data_dir if data_dir is not None else cache_dir
    # --data: an nrqc corpus is used in place, a real corpus is read into the cache, an
    # existing empty folder gets a synthesized corpus.
    real = (data_dir is not None and data_dir.is_dir() and not (data_dir / "manifest.json").is_file()
            and any(data_dir.iterdir()))
    if data_dir is None or real:
        _check_cache(cfg, cache_dir, data_dir, samples_given)
    if not (target / "manifest.json").is_file():
        frames, bands = cfg.build_kwargs.get("frames"), cfg.build_kwargs.get("bands")
        if real:
            from nrqc.data.corpus import DEFAULT_SHAPES

            frames = frames or DEFAULT_SHAPES[cfg.task][0]
            bands = bands or DEFAULT_SHAPES[cfg.task][1]
            target = cache_dir
            if not (target / "manifest.json").is_file():
                _log(f"nrqc train: reading the corpus in {data_dir} into {target}")
                bar = Progress("read corpus (examples)") if progress else None
                prepare_corpus(cfg.task, data_dir, target, frames, bands, cfg.seed,
                               progress=bar.update if bar else None)
                if bar:
                    bar.close()
        else:
            _log(f"nrqc train: synthesizing {cfg.samples} {cfg.task} examples into {target} (espeak-ng + sox)")
            t0 = time.time()
            bar = Progress("synthesize", cfg.samples) if progress else None
            synthesize(cfg.task, target, cfg.samples, seed=cfg.seed, frames=frames, bands=bands,
                       progress=bar.update if bar else None)
            if bar:
                bar.close("")
            _log(f"nrqc train: synthesized {cfg.samples} examples in {time.time() - t0:.0f} s")
    c = load_corpus(target)
    if c["manifest"]["task"] != cfg.task:
        raise NrqcError(f"data folder '{target}' holds a {c['manifest']['task']} corpus, not {cfg.task}")
    return {"x": torch.from_numpy(c["features"]), "y": torch.from_numpy(c["labels"].astype(np.float32)),
            "split": c["split"], "manifest": c["manifest"]}


def _check_data_dir(data_dir: Path | None) -> None:
    """A mistyped --data must not quietly become a new synthesized corpus."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise NrqcError(f"--data {data_dir}: {'not a folder' if Path(data_dir).exists() else 'no such folder'} "
                        f"(omit --data to synthesize a corpus into the run folder, or create an empty folder "
                        f"to synthesize one there)")


def _loss(task, out, y):
    if task in ("quality", "synthetic"):
        return F.mse_loss(out.reshape(-1), y.reshape(-1))
    return F.binary_cross_entropy_with_logits(out.reshape(-1), y.reshape(-1))


def predict(net, x: torch.Tensor, batch: int = 64) -> np.ndarray:
    """Eval-mode outputs, one row per example: [N] scores or [N, frames] logits."""
    net.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(net(x[i: i + batch]))
    return torch.cat(outs).reshape(len(x), -1).squeeze(1).numpy()


def evaluate(task: str, net, x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> dict:
    return M.task_metrics(task, predict(net, x, batch), y.numpy())


def _score(task: str, m: dict) -> float:
    """Higher is better: the early-stopping / best-checkpoint criterion."""
    key, sign = {"quality": ("pearson", 1), "synthetic": ("mse", -1), "vad": ("auc", 1), "antispoof": ("eer", -1)}[task]
    v = m[key]
    return -math.inf if v != v else sign * v  # NaN (e.g. one class only) never counts as better


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs in a row without a better validation score (higher is
    better; NaN scores arrive as −inf and never improve).  Its state travels in last.pt."""

    patience: int
    best: float = -math.inf
    bad_epochs: int = 0

    def update(self, score: float) -> bool:
        """Record one epoch's score; True if it is a new best."""
        if score > self.best:
            self.best, self.bad_epochs = score, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def stop(self) -> bool:
        return self.bad_epochs >= self.patience


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of the weights in epoch `epoch` (0-based).  Cosine decays from lr
    towards 0 over --epochs, so the last epochs make small steps: binary thresholds stop
    flipping back and forth between epochs (see docs/training.md, issue 20)."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    return cfg.lr


def _complexity_term(net, cfg: TrainConfig, full_macs: float):
    if len(net.gates) == 0:
        return None
    macs = model_cost(net, "soft")["macs"]
    if cfg.budget_macs is not None:
        return 10.0 * F.relu(macs - cfg.budget_macs) / full_macs
    if cfg.complexity_weight:
        return cfg.complexity_weight * macs / full_macs
    return None


def _objective(c: dict) -> str:
    """The complexity term of a config, as the CLI spells it."""
    if c.get("budget_macs") is not None:
        return f"--budget-macs {c['budget_macs']:g}"
    return f"--complexity-weight {c.get('complexity_weight') or 0:g}"


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    os.replace(tmp, path)


def train(cfg: TrainConfig, out_dir: str | Path, data_dir: str | Path | None = None, resume: bool = True,
          progress: bool = True, threads: int | None = None) -> dict:
    """Train, writing out_dir/checkpoint.pt (best on validation), out_dir/last.pt (for
    resumption) and out_dir/metrics.json; returns the metrics dict."""
    from nrqc.models import build

    samples_given = cfg.samples is not None
    cfg = cfg.resolved()
    if cfg.budget_macs is not None and cfg.complexity_weight:
        raise NrqcError("give either --complexity-weight or --budget-macs, not both")
    if (cfg.budget_macs is not None or cfg.complexity_weight) and "reparam" not in cfg.variant:
        raise NrqcError(f"--complexity-weight/--budget-macs need a reparameterized variant (reparam or bam-reparam), not '{cfg.variant}'")
    init_state = load_init(cfg.init, cfg.arch, cfg.task) if cfg.init else None
    # Tiny models run faster on one thread than on two contended ones.
    torch.set_num_threads(threads or (1 if cfg.task in ("synthetic", "vad") else 2))
    if cfg.task != "synthetic":
        _check_data_dir(Path(data_dir) if data_dir else None)  # before the run folder is made
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(cfg, Path(data_dir) if data_dir else None, out / "data", progress, samples_given)
    x, y, split = data["x"], data["y"], data["split"]
    if cfg.task == "synthetic":
        cfg.build_kwargs.setdefault("features", int(x.shape[1]))
    else:
        cfg.build_kwargs.setdefault("frames", int(x.shape[1]))
        cfg.build_kwargs.setdefault("bands", int(x.shape[2]))
    cfg.build_kwargs["first_layer"] = cfg.first_layer
    torch.manual_seed(cfg.seed)
    net = build(cfg.arch, cfg.variant, **cfg.build_kwargs)
    if init_state is not None:
        copied = warm_start(net, init_state, cfg.init)
        _log(f"nrqc train: warm start from {cfg.init} ({len(copied)} layers copied)")
    weights = [p for n, p in net.named_parameters() if not n.startswith("gates.")]
    # Adam moves each K by about its learning rate per step, so wide layers get a
    # proportionally larger step (lr_k per 16 units) to cross their range in the same time.
    opt = torch.optim.Adam([{"params": weights, "lr": cfg.lr}] +
                           [{"params": [g.k], "lr": cfg.lr_k * max(1.0, g.n / 16)} for g in net.gates.values()])
    full_macs = float(model_cost(net, "full")["macs"])
    history, start_epoch = [], 0
    stopper = EarlyStopping(cfg.patience)
    last = out / "last.pt"
    if resume and last.is_file():
        state = load_checkpoint(last)
        if state["train_config"]["task"] != cfg.task or state["variant"] != cfg.variant or state["arch"] != cfg.arch:
            raise NrqcError(f"'{last}' is a {state['arch']}/{state['variant']} run; use another --out or --no-resume")
        old_first = state["build_kwargs"].get("first_layer", "float")
        if old_first != cfg.first_layer:
            raise NrqcError(f"'{last}' was trained with --first-layer {old_first}, not {cfg.first_layer}; "
                            f"use another --out or --no-resume")
        old = state["train_config"]
        # A different α or budget is a different objective: continuing would mix two runs.
        if _objective(old) != _objective(asdict(cfg)):
            raise NrqcError(f"'{last}' was trained with {_objective(old)}, not {_objective(asdict(cfg))}; "
                            f"resume with the same value, or use another --out or --no-resume")
        changed = [f"{k} {old.get(k)} -> {getattr(cfg, k)}" for k in ("lr", "lr_k", "batch_size", "seed")
                   if old.get(k) != getattr(cfg, k)]
        if changed:
            _log(f"nrqc train: warning: resuming {last} with changed settings ({', '.join(changed)})")
        net.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        history, start_epoch = state["history"], state["epoch"]
        stopper.best, stopper.bad_epochs = state["best"], state["bad_epochs"]
        torch.set_rng_state(state["rng"])
        _log(f"nrqc train: resuming {last} after epoch {start_epoch}")
    tr, va, te = (torch.from_numpy(np.flatnonzero(split == s)) for s in (0, 1, 2))
    if start_epoch == 0:
        net.calibrate_input(x[tr])  # before the thresholds, which see the quantized input
    if start_epoch == 0 and any(b.binary is not None for _, b in net.blocks()):
        calibrate_thresholds(net, x[tr[torch.randperm(len(tr))[:128]]], pooled=cfg.pooled_calibration)
    revive = cfg.pooled_calibration == "spread" and bool(pooled_binary_layers(net))
    t_start = time.time() - (history[-1]["elapsed_s"] if history else 0.0)
    stopped_early = False
    line = ""
    epochs_bar = (Progress("train", cfg.epochs - start_epoch, prefix="")
                  if progress and not is_terminal() and cfg.epochs > start_epoch else None)
    for epoch in range(start_epoch, cfg.epochs):
        if stopper.stop and cfg.task == "quality":  # early stopping on validation Pearson
            stopped_early = True
            break
        net.train()
        opt.param_groups[0]["lr"] = lr_at(cfg, epoch)  # a function of the epoch: resumes exactly
        perm = tr[torch.randperm(len(tr))]
        nb = math.ceil(len(perm) / cfg.batch_size)
        # The batches of an epoch: a live line on a terminal only; a log gets the epoch's line.
        bar = Progress(f"epoch {epoch + 1}/{cfg.epochs}", nb) if progress and is_terminal() else None
        tot, n = 0.0, 0
        for b in range(nb):
            idx = perm[b * cfg.batch_size: (b + 1) * cfg.batch_size]
            loss = _loss(cfg.task, net(x[idx]), y[idx])
            term = _complexity_term(net, cfg, full_macs)
            total = loss + term if term is not None else loss
            opt.zero_grad()
            total.backward()
            opt.step()
            for g in net.gates.values():
                g.clamp_()
            tot += float(loss.detach()) * len(idx)
            n += len(idx)
            if bar:
                bar.update(1, f"loss {tot / n:.4f}")
        if bar:
            bar.close("")
        # Dead (or saturated) pooled channels are constant inputs to the head and get no
        # gradient to recover: re-set their thresholds on a batch of training clips.
        if net.input_gate is not None:
            # The band gate may have cut bands this epoch: the checkpoint (and its export)
            # gets the input scale over the bands it keeps.
            net.calibrate_input(x[tr])
        revived = recalibrate_constant_pooled(net, x[tr[torch.randperm(len(tr))[:128]]]) if revive else None
        val = evaluate(cfg.task, net, x[va], y[va])
        comp = summary(net, "kept")
        soft = float(model_cost(net, "soft")["macs"].detach())
        rec = {"epoch": epoch + 1, "train_loss": tot / max(1, n), "val": val, "macs_soft": soft,
               "macs": comp["macs"], "params": comp["params"], "bytes": comp["bytes"],
               "widths": {k: round(float(g.width().detach()), 3) for k, g in net.gates.items()},
               "elapsed_s": time.time() - t_start}
        if revived is not None:
            rec["pooled_recalibrated"] = revived
        if net.input_quant is not None:
            rec["input_scale"] = float(net.input_quant.scale)
        history.append(rec)
        improved = stopper.update(_score(cfg.task, val))
        # With learned widths the final epoch is the model (an earlier "best" would undo the
        # width learning); early stopping and best-of still decide for fixed-width models.
        # While the criterion is undefined (NaN: e.g. AUC of a one-class validation split)
        # nothing can be "best", so the latest epoch is kept rather than no checkpoint.
        undefined = stopper.best == -math.inf
        if undefined and not improved and epoch == start_epoch:
            _log(f"nrqc train: the validation criterion is undefined ({val}); keeping the latest epoch")
        keep = improved or len(net.gates) > 0 or undefined
        if keep:
            save_checkpoint(out / "checkpoint.pt", net, cfg.arch, cfg.variant, cfg.build_kwargs,
                            epoch=epoch + 1, val=val, train_config=asdict(cfg))
        save_checkpoint(last, net, cfg.arch, cfg.variant, cfg.build_kwargs, optimizer=opt.state_dict(),
                        epoch=epoch + 1, best=stopper.best, bad_epochs=stopper.bad_epochs, history=history,
                        rng=torch.get_rng_state(), train_config=asdict(cfg))
        vs = " ".join(f"{k} {v:.4f}" for k, v in val.items())
        ws = " ".join(f"{k}={v:.2f}" for k, v in rec["widths"].items())
        line = (f"epoch {epoch + 1}: loss {rec['train_loss']:.4f} | val {vs} | MACs {comp['macs']:,.0f}"
                f"{' | K ' + ws if ws else ''}{' *' if improved else ''}")
        if epochs_bar is None:
            _log(line)  # every epoch on a terminal
        else:
            epochs_bar.update(1, note=line)  # about ten of them in a log

        _write_json(out / "metrics.json", _metrics(cfg, history, None, None, full_macs, data, out, False))
    if epochs_bar is not None:
        epochs_bar.close(f"train: {len(history) - start_epoch} epoch(s) run in {time.time() - t_start:.0f} s"
                         f"{' (stopped early)' if stopped_early else ''}{'; last ' + line if line else ''}")
    # Final: the best checkpoint on validation, evaluated on the test split.
    from nrqc.training.checkpoint import model_from_checkpoint

    if not (out / "checkpoint.pt").is_file():
        raise NrqcError(f"no checkpoint in '{out}': --epochs {cfg.epochs} trained nothing")
    best_state = load_checkpoint(out / "checkpoint.pt")
    best_net = model_from_checkpoint(best_state)
    pred = predict(best_net, x[te])
    test = M.task_metrics(cfg.task, pred, y[te].numpy())
    # The test set is small (40-200 clips by default): a point estimate alone cannot tell
    # two models apart, so every metric gets its 95 % bootstrap interval over the examples.
    test_ci = task_intervals(cfg.task, pred, y[te].numpy(), seed=cfg.seed)
    np.savez(out / "test_predictions.npz", pred=pred, label=y[te].numpy(), index=te.numpy())
    result = _metrics(cfg, history, test, best_state, full_macs, data, out, stopped_early, best_net)
    result["test_ci"] = test_ci
    result["bootstrap"] = {"resamples": RESAMPLES, "level": LEVEL, "examples": int(len(te)),
                           "unit": {"vad": "window", "synthetic": "example"}.get(cfg.task, "clip"),
                           "predictions": str(out / "test_predictions.npz")}
    if any(b.binary is not None for _, b in best_net.blocks()):
        result["binary_units"] = binary_unit_stats(best_net, x[va])
    _write_json(out / "metrics.json", result)
    return result


def _metrics(cfg, history, test, best_state, full_macs, data, out, stopped_early, best_net=None) -> dict:
    r = {"task": cfg.task, "arch": cfg.arch, "variant": cfg.variant, "config": asdict(cfg),
         "data": {"source": data["manifest"].get("source"), "count": int(len(data["x"])),
                  "splits": {k: int((data["split"] == v).sum()) for k, v in (("train", 0), ("val", 1), ("test", 2))}},
         "epochs_run": len(history), "stopped_early": stopped_early,
         "train_seconds": round(history[-1]["elapsed_s"], 1) if history else 0.0,
         "full_macs": full_macs, "first_layer": cfg.first_layer, "history": history}
    if best_state is not None:
        r["best_epoch"] = best_state["epoch"]
        r["val"] = best_state["val"]
        r["test"] = test
        r["complexity"] = summary(best_net, "kept")
        r["checkpoint"] = str(out / "checkpoint.pt")
        if best_net.input_quant is not None:
            r["input_quant"] = input_quant_record(best_net)
    return r


def input_quant_record(net) -> dict:
    """How the model quantizes its input (the exported QuantizeLinear), for metrics.json."""
    from nrqc.training.quant import INPUT_PERCENTILE, INPUT_QMAX

    kept = net.kept(net.input_gate)
    return {"dtype": "int8", "scale": float(net.input_quant.scale), "zero_point": 0,
            "calibration": f"P{INPUT_PERCENTILE:g}(|x|) / {INPUT_QMAX} over the training features",
            "bands": kept if kept is not None else net.input_shape(1)[-1]}
