"""Labelled corpora as cached feature folders.

A corpus folder holds ``manifest.json`` (task, source, frontend, shapes, label meaning,
counts), ``features.npy`` float32 [N, frames, bands], ``labels.npy`` ([N] for quality /
antispoof, [N, frames] for VAD) and ``split.npy`` (0 train, 1 validation, 2 test).
:func:`synthesize` makes one from scratch here; :mod:`nrqc.data.loaders` makes one from a
real corpus.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from nrqc.data import synth
from nrqc.data.features import FRONTEND, log_mel, n_frames, power_spectrogram
from nrqc.errors import NrqcError

TASKS = ("quality", "vad", "antispoof")
LABELS = {
    "quality": "wide-band PESQ (ITU-T P.862.2, `pesq` package) of the degraded clip against the clean one",
    "vad": "per frame: 1 where the clean synthesized speech is within 40 dB of the utterance's loudest frame",
    "antispoof": "1 bona fide (espeak-ng voice), 0 spoofed (LPC-10 vocoder, Griffin-Lim resynthesis, pitch/formant conversion)",
}
DEFAULT_SHAPES = {"quality": (200, 64), "vad": (100, 80), "antispoof": (200, 64)}


def samples_for(frames: int) -> int:
    return FRONTEND["win"] + (frames - 1) * FRONTEND["hop"]


def _quality_item(rng, frames, bands):
    from pesq import NoUtterancesError, PesqError, pesq

    n = samples_for(frames)
    for _ in range(5):
        clean = np.zeros(n, np.float32)
        utt = synth.random_utterance(rng, (4, 10))[0][: n - 800]
        off = int(rng.integers(0, n - len(utt) + 1))
        clean[off: off + len(utt)] = utt
        x = clean.copy()
        if rng.random() < 0.5:
            x = synth.degrade(x, str(rng.choice(synth.DEGRADATIONS[1:])), rng)
        if rng.random() < 0.85:
            nz = synth.noise(str(rng.choice(synth.NOISES)), n, rng)
            x = synth.mix_at_snr(x, nz, float(rng.uniform(-5, 40)), float(np.mean(utt ** 2)))
        x = x / max(1.0, float(np.abs(x).max()))
        try:
            label = float(pesq(16000, clean, x, "wb"))
        except (NoUtterancesError, PesqError):
            continue
        return log_mel(x, bands, frames), np.float32(label)
    raise NrqcError("PESQ found no utterance in 5 synthesized clips in a row")


def vad_frame_labels(clean: np.ndarray, frames: int, floor_db: float = 40.0) -> np.ndarray:
    """Speech frames of a clean synthesized signal: energy within floor_db of its peak frame."""
    e = power_spectrogram(clean, FRONTEND["win"], FRONTEND["hop"], FRONTEND["n_fft"]).sum(axis=1)
    lab = (e > e.max() * 10 ** (-floor_db / 10)).astype(np.uint8) if e.size and e.max() > 0 else np.zeros(len(e), np.uint8)
    return np.pad(lab, (0, max(0, frames - len(lab))))[:frames]


def _vad_item(rng, frames, bands):
    """A stream of utterances separated by silences, in noise: `frames` frames."""
    n = samples_for(frames)
    clean = np.zeros(n, np.float32)
    pos = int(rng.integers(0, 8000))
    while pos < n:
        utt = synth.random_utterance(rng, (1, 4))[0]
        utt = utt[: n - pos]
        clean[pos: pos + len(utt)] = utt
        pos += len(utt) + int(rng.integers(1600, 16000))  # 0.1–1 s of silence
    labels = vad_frame_labels(clean, frames)
    x = clean
    if rng.random() < 0.3:
        x = synth.degrade(x, str(rng.choice(["reverb", "bandlimit", "gsm", "clip"])), rng)
    mask = np.pad(np.repeat(labels, FRONTEND["hop"]), (0, n))[:n].astype(bool)
    speech = clean[mask] if mask.any() else clean
    nz = synth.noise(str(rng.choice(synth.NOISES)), n, rng)
    x = synth.mix_at_snr(x, nz, float(rng.uniform(-5, 25)), float(np.mean(speech ** 2)) + 1e-8)
    x = x * 10 ** (rng.uniform(-20, 0) / 20)  # level variation
    return log_mel(x / max(1.0, float(np.abs(x).max())), bands, frames), labels


def _antispoof_item(rng, frames, bands, bona_fide: bool):
    n = samples_for(frames)
    utt = synth.fit_length(synth.random_utterance(rng, (4, 10))[0], n, rng)
    x = utt if bona_fide else synth.spoof(utt, str(rng.choice(synth.SPOOFS)), rng)
    # The same channel effects on both classes, so that band or codec alone is no cue.
    if rng.random() < 0.3:
        x = synth.degrade(x, str(rng.choice(["bandlimit", "gsm", "reverb"])), rng)
    x = synth.mix_at_snr(x, synth.noise(str(rng.choice(["white", "pink", "hum", "fan"])), n, rng),
                         float(rng.uniform(10, 40)))
    return log_mel(x / max(1.0, float(np.abs(x).max())), bands, frames), np.float32(bona_fide)


def _item(task, seed, i, frames, bands):
    rng = np.random.default_rng([seed, i])
    if task == "quality":
        return _quality_item(rng, frames, bands)
    if task == "vad":
        return _vad_item(rng, frames, bands)
    return _antispoof_item(rng, frames, bands, bona_fide=bool(i % 2 == 0))


def split_indices(n: int, seed: int, val: float = 0.1, test: float = 0.1) -> np.ndarray:
    split = np.zeros(n, np.int8)
    order = np.random.default_rng(seed + 7919).permutation(n)
    nv, nt = max(1, int(round(n * val))), max(1, int(round(n * test)))
    split[order[:nv]] = 1
    split[order[nv: nv + nt]] = 2
    return split


def write_corpus(out_dir: str | Path, task: str, feats: np.ndarray, labels: np.ndarray, split: np.ndarray,
                 source: dict) -> None:
    """Write the arrays and manifest; the manifest goes last (atomically), so a folder with a
    manifest is always complete."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in (("features", feats), ("labels", labels), ("split", split)):
        tmp = out / f"{name}.tmp.npy"
        np.save(tmp, arr)
        os.replace(tmp, out / f"{name}.npy")
    manifest = {"format": "nrqc-corpus-1", "task": task, "count": int(len(feats)),
                "frames": int(feats.shape[1]), "bands": int(feats.shape[2]), "frontend": FRONTEND,
                "labels": LABELS[task] if source.get("kind") == "synthesized" else source.get("labels", ""),
                "splits": {k: int((split == v).sum()) for k, v in (("train", 0), ("val", 1), ("test", 2))},
                "source": source}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / "manifest.json")


def synthesize(task: str, out_dir: str | Path, count: int, seed: int = 0, frames: int | None = None,
               bands: int | None = None, progress=None, workers: int = 2) -> Path:
    """Synthesize `count` labelled examples into a corpus folder."""
    if task not in TASKS:
        raise NrqcError(f"cannot synthesize data for task '{task}' (choose {', '.join(TASKS)})")
    frames = frames or DEFAULT_SHAPES[task][0]
    bands = bands or DEFAULT_SHAPES[task][1]
    feats = np.zeros((count, frames, bands), np.float32)
    labels = np.zeros((count, frames) if task == "vad" else (count,), np.uint8 if task == "vad" else np.float32)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, (f, y) in enumerate(pool.map(lambda i: _item(task, seed, i, frames, bands), range(count))):
            feats[i], labels[i] = f, y
            if progress:
                progress(1)
    write_corpus(out_dir, task, feats, labels, split_indices(count, seed),
                 {"kind": "synthesized", "seed": seed, "generator": "espeak-ng + sox + generated noise"})
    return Path(out_dir)


def load_corpus(path: str | Path) -> dict:
    """The arrays and manifest of a corpus folder."""
    path = Path(path)
    mf = path / "manifest.json"
    if not mf.is_file():
        raise NrqcError(f"'{path}' is not a corpus folder (no manifest.json)")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise NrqcError(f"'{mf}' is not valid JSON ({e.msg} at line {e.lineno})") from None
    if manifest.get("format") != "nrqc-corpus-1":
        raise NrqcError(f"'{mf}' is not an nrqc corpus manifest")
    arrays = {k: np.load(path / f"{k}.npy") for k in ("features", "labels", "split")}
    return {"manifest": manifest, **arrays}
