"""`nrqc train` on each task through the CLI on tiny corpora, and early stopping.

Every run's reported test metrics are recomputed here from the saved checkpoint and the
corpus split with independent code (scipy, brute-force pair counts / threshold sweeps)."""
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import stats

from nrqc.cli import main
from nrqc.data.audio import write_wav
from nrqc.data.corpus import load_corpus, write_corpus
from nrqc.training.checkpoint import load_checkpoint, model_from_checkpoint
from nrqc.training.trainer import EarlyStopping


def _cli(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    return r


def _test_predictions(out, data_dir=None):
    """Predictions of OUT/checkpoint.pt on the test split of the corpus it trained on."""
    c = load_corpus(data_dir or out / "data")
    net = model_from_checkpoint(load_checkpoint(out / "checkpoint.pt"))
    te = c["split"] == 2
    with torch.no_grad():
        pred = net(torch.from_numpy(c["features"][te])).reshape(int(te.sum()), -1).squeeze(1).numpy()
    return pred.astype(np.float64), c["labels"][te].astype(np.float64)


def _auc_pairs(s, y):
    """P(positive > negative), ties 1/2, by counting every pair."""
    pos, neg = s[y > 0.5], s[y < 0.5]
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


def _eer_sweep(s, y):
    """Mean of FAR and FRR at the threshold (over every score and +inf) where they are closest."""
    best = None
    for t in sorted(set(s.tolist())) + [math.inf]:
        far = float(np.mean(s[y < 0.5] >= t))
        frr = float(np.mean(s[y > 0.5] < t))
        if best is None or abs(far - frr) < best[0]:
            best = (abs(far - frr), (far + frr) / 2)
    return best[1]


def test_early_stopping_logic():
    stop = EarlyStopping(patience=2)
    seen = []
    for epoch, score in enumerate([0.1, 0.3, 0.2, 0.31, 0.25, 0.3, 0.9], start=1):
        if stop.stop:
            break
        seen.append((epoch, stop.update(score)))
    # best 0.31 at epoch 4, then two epochs without a better score: epochs 5 and 6
    assert seen == [(1, True), (2, True), (3, False), (4, True), (5, False), (6, False)]
    assert stop.best == 0.31 and stop.bad_epochs == 2 and stop.stop
    nan = EarlyStopping(patience=1)
    assert nan.update(0.0) and not nan.update(-math.inf) and nan.stop  # NaN Pearson scores −inf


def test_quality_stops_early_on_validation_pearson(tmp_path):
    # A tiny quality corpus written directly (32 frames x 16 bands) whose MOS is noise: the
    # validation Pearson wanders, so --patience 1 stops the run after the first bad epoch.
    rng = np.random.default_rng(0)
    n = 40
    feats = rng.normal(size=(n, 32, 16)).astype(np.float32)
    labels = rng.uniform(1, 4.5, n).astype(np.float32)
    split = np.array([0] * 28 + [1] * 6 + [2] * 6, np.int8)
    write_corpus(tmp_path / "corpus", "quality", feats, labels, split, {"kind": "real", "labels": "noise"})
    out = tmp_path / "run"
    _cli(["train", "quality", "--variant", "float", "--data", str(tmp_path / "corpus"), "--epochs", "12",
          "--patience", "1", "--batch-size", "7", "--out", str(out)])
    m = json.loads((out / "metrics.json").read_text())
    val = [h["val"]["pearson"] for h in m["history"]]
    # the stopping epoch, recomputed from the history: the first epoch not better than the best so far
    expected = next(e for e in range(1, len(val)) if val[e] <= max(val[:e])) + 1
    assert m["stopped_early"] and m["epochs_run"] == expected < 12
    assert m["best_epoch"] == int(np.argmax(val)) + 1 and m["val"]["pearson"] == max(val)
    pred, y = _test_predictions(out, tmp_path / "corpus")
    assert m["test"]["pearson"] == pytest.approx(stats.pearsonr(pred, y)[0], abs=1e-6)
    assert m["test"]["spearman"] == pytest.approx(stats.spearmanr(pred, y)[0], abs=1e-6)
    assert m["test"]["mse"] == pytest.approx(float(np.mean((pred - y) ** 2)), rel=1e-5)


def test_cli_train_antispoof_on_a_corpus_folder(tmp_path):
    # Bona fide clips carry more energy in the low bands: learnable in 2 epochs.
    rng = np.random.default_rng(2)
    n = 40
    labels = (np.arange(n) % 2).astype(np.float32)
    feats = rng.normal(size=(n, 32, 16)).astype(np.float32)
    feats[labels == 1, :, :4] += 1.5
    split = np.array([0, 0, 0, 0, 1, 2] * 6 + [0, 1, 2, 0], np.int8)
    write_corpus(tmp_path / "corpus", "antispoof", feats, labels, split, {"kind": "real", "labels": "1 bonafide"})
    out = tmp_path / "run"
    _cli(["train", "antispoof", "--variant", "float", "--data", str(tmp_path / "corpus"), "--epochs", "2",
          "--batch-size", "8", "--out", str(out)])
    m = json.loads((out / "metrics.json").read_text())
    assert m["arch"] == "antispoof_cnn" and m["epochs_run"] == 2 and (out / "checkpoint.pt").is_file()
    assert {"eer", "auc"} == set(m["test"]) == set(m["val"]) and m["complexity"]["macs"] > 0
    pred, y = _test_predictions(out, tmp_path / "corpus")
    assert m["test"]["auc"] == pytest.approx(_auc_pairs(pred, y), abs=1e-9)
    assert m["test"]["eer"] == pytest.approx(_eer_sweep(pred, y), abs=1e-9)


@pytest.mark.slow  # espeak-ng + sox + PESQ synthesis, then bam4 on [200, 64]: 10-30 s on 2 shared cores
def test_cli_train_quality_synthesized(tmp_path):
    out = tmp_path / "q"
    _cli(["train", "quality", "--samples", "30", "--epochs", "2", "--out", str(out)])  # bam4, bam
    assert (out / "checkpoint.pt").is_file() and (out / "data" / "manifest.json").is_file()
    m = json.loads((out / "metrics.json").read_text())
    assert m["arch"] == "bam4" and m["variant"] == "bam" and m["epochs_run"] == 2
    assert m["data"]["count"] == 30 and m["data"]["source"]["kind"] == "synthesized"
    assert {"pearson", "spearman", "mse"} <= set(m["val"]) and m["complexity"]["macs"] > 0
    pred, y = _test_predictions(out)
    assert 1.0 <= y.min() and y.max() <= 4.7  # wide-band PESQ labels
    assert m["test"]["mse"] == pytest.approx(float(np.mean((pred - y) ** 2)), rel=1e-5)
    r = stats.pearsonr(pred, y)[0] if np.ptp(pred) > 0 else 0.0
    assert m["test"]["pearson"] == pytest.approx(r, abs=1e-6)


@pytest.mark.slow  # synthesis of 40 clips + antispoof_cnn on [200, 64]: about 10 s
def test_cli_train_antispoof_synthesized(tmp_path):
    out = tmp_path / "a"
    _cli(["train", "antispoof", "--variant", "float", "--samples", "40", "--epochs", "2", "--out", str(out)])
    m = json.loads((out / "metrics.json").read_text())
    assert m["arch"] == "antispoof_cnn" and m["epochs_run"] == 2 and (out / "checkpoint.pt").is_file()
    assert {"eer", "auc"} == set(m["test"]) == set(m["val"])
    pred, y = _test_predictions(out)
    assert set(y.tolist()) == {0.0, 1.0}  # both bona fide and spoofed clips in the test split
    assert m["test"]["auc"] == pytest.approx(_auc_pairs(pred, y), abs=1e-9)
    assert m["test"]["eer"] == pytest.approx(_eer_sweep(pred, y), abs=1e-9)


def test_cli_train_vad_on_a_real_format_folder(tmp_path):
    # 6 clips of 3 s: noise, then a harmonic "voice" between START and END given in a .lab file.
    src = tmp_path / "vad"
    src.mkdir()
    rng = np.random.default_rng(1)
    t = np.arange(48000) / 16000
    for i in range(6):
        start, end = 0.3 + 0.1 * i, 1.3 + 0.1 * i  # both 100-frame windows hold speech and silence
        voice = sum(np.sin(2 * np.pi * (150 + 20 * i) * h * t) / h for h in range(1, 6)) * 0.2
        x = 0.01 * rng.normal(size=t.size) + voice * ((t >= start) & (t < end))
        write_wav(src / f"clip{i}.wav", x.astype(np.float32))
        (src / f"clip{i}.lab").write_text(f"0.0 {start:.2f} silence\n{start:.2f} {end:.2f} speech\n")
    out = tmp_path / "run"
    _cli(["train", "vad", "--variant", "float", "--data", str(src), "--epochs", "2", "--batch-size", "4",
          "--out", str(out)])
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["source"]["kind"] == "real" and m["data"]["count"] == 12  # 2 windows of 100 frames per clip
    assert {"f1", "auc", "eer", "accuracy"} == set(m["test"])
    pred, y = _test_predictions(out)
    p, lab = pred.reshape(-1) > 0, y.reshape(-1) > 0.5
    f1 = 2 * (p & lab).sum() / (p.sum() + lab.sum())
    assert m["test"]["f1"] == pytest.approx(float(f1), abs=1e-9)
    assert m["test"]["accuracy"] == pytest.approx(float((p == lab).mean()), abs=1e-9)
    c = load_corpus(out / "data")  # the labels came from the .lab files, per 10 ms frame
    assert 0.2 < c["labels"].mean() < 0.6


def test_one_class_validation_split_still_writes_a_checkpoint(tmp_path):
    # Every validation frame is speech: AUC (the VAD criterion) is NaN in every epoch.
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(10, 100, 80)).astype(np.float32)
    labels = (rng.random((10, 100)) < 0.5).astype(np.uint8)
    split = np.array([0] * 8 + [1, 2], np.int8)
    labels[8] = 1
    write_corpus(tmp_path / "corpus", "vad", feats, labels, split, {"kind": "real", "labels": "test"})
    out = tmp_path / "run"
    _cli(["train", "vad", "--variant", "float", "--data", str(tmp_path / "corpus"), "--epochs", "2", "--out", str(out)])
    m = json.loads((out / "metrics.json").read_text())
    assert all(math.isnan(h["val"]["auc"]) for h in m["history"]) and m["best_epoch"] == 2


def _tiny_vad_cache(path, count, kind="synthesized"):
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(count, 100, 80)).astype(np.float32)
    labels = (feats[:, :, :8].mean(axis=2) > 0).astype(np.uint8)
    split = np.array(([0] * 8 + [1, 2]) * (count // 10), np.int8)
    write_corpus(path, "vad", feats, labels, split, {"kind": kind, "seed": 0, "path": "elsewhere"})


def test_a_cached_corpus_that_does_not_match_the_run_is_refused(tmp_path):
    out = tmp_path / "run"
    _tiny_vad_cache(out / "data", 20)  # as if an earlier run had synthesized 20 windows
    r = CliRunner().invoke(main, ["train", "vad", "--samples", "30", "--epochs", "1", "--out", str(out)])
    assert r.exit_code == 2 and "20 synthesized examples" in r.output and "--samples 30" in r.output
    # without --samples the cache is the run's data, and the recorded config says so
    _cli(["train", "vad", "--variant", "float", "--epochs", "1", "--out", str(out)])
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["count"] == 20 and m["config"]["samples"] == 20
    # a real corpus given with --data is not the cached synthesized one
    src = tmp_path / "wavs"
    src.mkdir()
    write_wav(src / "a.wav", np.zeros(16000, np.float32))
    (src / "a.lab").write_text("0.2 0.5\n")
    r = CliRunner().invoke(main, ["train", "vad", "--data", str(src), "--epochs", "1", "--out", str(out)])
    assert r.exit_code == 2 and "--data" in r.output and str(src) in r.output


def test_resume_refuses_a_changed_objective(tmp_path):
    args = ["train", "synthetic", "--variant", "reparam", "--samples", "256", "--out", str(tmp_path)]
    _cli(args + ["--complexity-weight", "0.5", "--epochs", "1"])
    for extra, flag in ((["--complexity-weight", "2"], "--complexity-weight 0.5"), (["--budget-macs", "300"], "not --budget-macs 300")):
        r = CliRunner().invoke(main, args + extra + ["--epochs", "2"])
        assert r.exit_code == 2 and flag in r.output and "--no-resume" in r.output, r.output
        assert "was trained with --complexity-weight 0.5" in r.output
    r = _cli(args + ["--complexity-weight", "0.5", "--epochs", "2", "--lr", "0.01"])  # same objective: resumes
    assert "changed settings (lr" in r.output
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["epochs_run"] == 2
    r = _cli(args + ["--complexity-weight", "2", "--epochs", "1", "--no-resume"])  # starting over is fine


def test_recurrent_vad_trains_with_learned_widths_and_exports(tmp_path):
    # vad_gru, reparam: the GRU's hidden width is a K in the whole-model complexity term.
    _tiny_vad_cache(tmp_path / "corpus", 20)
    out = tmp_path / "run"
    _cli(["train", "vad", "--arch", "vad_gru", "--variant", "reparam", "--complexity-weight", "5", "--lr-k", "0.5",
          "--data", str(tmp_path / "corpus"), "--epochs", "2", "--batch-size", "8", "--out", str(out)])
    m = json.loads((out / "metrics.json").read_text())
    assert m["arch"] == "vad_gru" and set(m["history"][-1]["widths"]) == {"bands", "conv1", "gru", "head1"}
    assert m["history"][-1]["widths"]["gru"] < 32  # the complexity term moved the recurrent K
    kept = m["complexity"]["widths"]
    b, c, h, h1 = kept["bands"], kept["conv1"], kept["gru"], kept["head1"]
    assert m["complexity"]["macs"] == 100 * (b * c * 3 + 3 * (c * h + h * h) + h * h1 + h1)  # hand count
    r = _cli(["export", str(out / "checkpoint.pt"), "-o", str(tmp_path / "m.onnx"), "--json"])
    s = json.loads(r.output)
    assert s["parity"]["agree_fraction"] == 1.0 and s["after"]["macs"] == m["complexity"]["macs"]
    import onnx

    gru = next(n for n in onnx.load(str(tmp_path / "m.onnx")).graph.node if n.op_type == "GRU")
    assert {a.name: a.i for a in gru.attribute}["hidden_size"] == h
