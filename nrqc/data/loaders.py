"""Loaders for real corpora a user owns, turned into nrqc corpus folders.

- speech quality: a DNS-Challenge style folder with a CSV of clip paths and MOS values;
- anti-spoofing: an ASVspoof protocol file (``SPEAKER UTTERANCE … KEY`` per line, KEY
  'bonafide' or 'spoof', as in ASVspoof 2019 LA / 2021) and the folder of .flac/.wav;
- VAD: audio files with same-stem label files, either ``start end [label]`` segment lines
  in seconds (label speech/1/… kept, nonspeech/silence/0 dropped) or one 0/1 per frame.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from nrqc.data.audio import load_audio
from nrqc.data.corpus import split_indices, write_corpus
from nrqc.data.features import FRONTEND, log_mel, n_frames
from nrqc.errors import NrqcError

_FILE_COLS = ("filename", "file", "file_name", "filepath", "path", "clip", "deg", "audio", "wav")
_MOS_COLS = ("mos", "mos_ovrl", "ovrl", "p808_mos", "mean_opinion_score", "score", "rating")
_NON_SPEECH = {"0", "nonspeech", "non-speech", "silence", "sil", "noise", "ns"}


def read_mos_csv(csv_path: str | Path) -> list[tuple[Path, float]]:
    """[(audio path, MOS)] from a CSV with a file column and a MOS column (names matched
    case-insensitively); relative paths are taken from the CSV's folder."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise NrqcError(f"MOS CSV '{csv_path}' does not exist")
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        fcol = next((cols[c] for c in _FILE_COLS if c in cols), None)
        mcol = next((cols[c] for c in _MOS_COLS if c in cols), None)
        if fcol is None or mcol is None:
            raise NrqcError(f"MOS CSV '{csv_path}' needs a file column ({'/'.join(_FILE_COLS)}) and a MOS column "
                            f"({'/'.join(_MOS_COLS)}); it has {', '.join(reader.fieldnames or []) or 'no header'}")
        rows = []
        for lineno, row in enumerate(reader, start=2):
            try:
                mos = float(row[mcol])
            except (TypeError, ValueError):
                raise NrqcError(f"MOS CSV '{csv_path}' line {lineno}: '{row[mcol]}' in column '{mcol}' is not a number") from None
            p = Path(row[fcol].strip())
            rows.append((p if p.is_absolute() else csv_path.parent / p, mos))
    if not rows:
        raise NrqcError(f"MOS CSV '{csv_path}' has no rows")
    return rows


def read_asvspoof_protocol(protocol: str | Path, audio_dir: str | Path | None = None) -> list[tuple[Path, int]]:
    """[(audio path, 1 bona fide / 0 spoof)]; audio files are UTTERANCE.flac or .wav in
    `audio_dir` (default: the protocol's folder, or its 'flac' subfolder)."""
    protocol = Path(protocol)
    if not protocol.is_file():
        raise NrqcError(f"ASVspoof protocol '{protocol}' does not exist")
    dirs = [Path(audio_dir)] if audio_dir else [protocol.parent / "flac", protocol.parent]
    out = []
    for lineno, line in enumerate(protocol.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        keys = [p for p in parts if p in ("bonafide", "spoof")]
        if len(parts) < 2 or not keys:
            raise NrqcError(f"ASVspoof protocol '{protocol}' line {lineno}: expected 'SPEAKER UTTERANCE ... bonafide|spoof'")
        utt = parts[1]
        path = next((d / f"{utt}{ext}" for d in dirs for ext in (".flac", ".wav") if (d / f"{utt}{ext}").is_file()), None)
        if path is None:
            raise NrqcError(f"ASVspoof protocol '{protocol}' line {lineno}: no audio {utt}.flac or {utt}.wav in {', '.join(map(str, dirs))}")
        out.append((path, 1 if keys[-1] == "bonafide" else 0))
    if not out:
        raise NrqcError(f"ASVspoof protocol '{protocol}' lists no utterances")
    return out


def read_vad_labels(path: str | Path, frames: int, hop_s: float = FRONTEND["hop"] / FRONTEND["sample_rate"]) -> np.ndarray:
    """Per-frame 0/1 labels (frame i covers [i·hop, i·hop + win)); a frame is speech when its
    centre lies in a speech segment."""
    path = Path(path)
    if not path.is_file():
        raise NrqcError(f"VAD label file '{path}' does not exist")
    text = path.read_text().split("\n")
    lines = [l.strip() for l in text if l.strip()]
    tokens = " ".join(lines).replace(",", " ").split()
    # Per-frame format: only 0/1 tokens, all on one line or one per line.
    per_frame = (len(lines) == 1 or all(len(l.split()) == 1 for l in lines))
    if tokens and per_frame and all(t in ("0", "1") for t in tokens):
        lab = np.array([int(t) for t in tokens], np.uint8)  # one 0/1 per frame
        return np.pad(lab, (0, max(0, frames - len(lab))))[:frames]
    lab = np.zeros(frames, np.uint8)
    centres = (np.arange(frames) * FRONTEND["hop"] + FRONTEND["win"] / 2) / FRONTEND["sample_rate"]
    for lineno, line in enumerate(lines, start=1):
        parts = line.replace(",", " ").split()
        try:
            start, end = float(parts[0]), float(parts[1])
        except (IndexError, ValueError):
            raise NrqcError(f"VAD label file '{path}' line {lineno}: expected 'START END [LABEL]' in seconds") from None
        if end < start:
            raise NrqcError(f"VAD label file '{path}' line {lineno}: end {end} is before start {start}")
        if len(parts) > 2 and parts[2].lower() in _NON_SPEECH:
            continue
        lab[(centres >= start) & (centres < end)] = 1
    return lab


def _windows(n_total: int, frames: int) -> list[int]:
    return list(range(0, max(1, n_total - frames + 1), frames))


def prepare_corpus(task: str, src: str | Path, out_dir: str | Path, frames: int, bands: int, seed: int = 0,
                   progress=None) -> Path:
    """Features for a real corpus in `src` (auto-detected by task) into corpus folder `out_dir`."""
    src = Path(src)
    feats, labels = [], []
    if task == "quality":
        csvs = sorted(src.glob("*.csv"))
        if not csvs:
            raise NrqcError(f"data folder '{src}' has no MOS CSV for the quality task")
        for path, mos in read_mos_csv(csvs[0]):
            feats.append(log_mel(load_audio(path), bands, frames))
            labels.append(np.float32(mos))
            progress and progress(1)
        desc = f"MOS from {csvs[0].name}"
    elif task == "antispoof":
        protos = sorted(p for p in src.glob("*.txt") if "bonafide" in p.read_text()[:100000] or "spoof" in p.read_text()[:100000])
        if not protos:
            raise NrqcError(f"data folder '{src}' has no ASVspoof protocol file (*.txt with bonafide/spoof keys)")
        for path, key in read_asvspoof_protocol(protos[0]):
            feats.append(log_mel(load_audio(path), bands, frames))
            labels.append(np.float32(key))
            progress and progress(1)
        desc = f"ASVspoof keys from {protos[0].name}: 1 bonafide, 0 spoof"
    elif task == "vad":
        audio = sorted(p for ext in ("*.wav", "*.flac") for p in src.glob(ext))
        if not audio:
            raise NrqcError(f"data folder '{src}' has no .wav/.flac files for the VAD task")
        for a in audio:
            lab_file = next((a.with_suffix(s) for s in (".lab", ".txt", ".vad") if a.with_suffix(s).is_file()), None)
            if lab_file is None:
                raise NrqcError(f"VAD audio '{a}' has no label file {a.stem}.lab/.txt/.vad next to it")
            x = load_audio(a)
            total = max(frames, n_frames(len(x)))
            f_all = log_mel(x, bands, total)
            l_all = read_vad_labels(lab_file, total)
            for s in _windows(total, frames):
                feats.append(f_all[s: s + frames])
                labels.append(l_all[s: s + frames])
            progress and progress(1)
        desc = "VAD labels from label files: 1 speech"
    else:
        raise NrqcError(f"no real-corpus loader for task '{task}'")
    feats, labels = np.stack(feats), np.stack(labels)
    write_corpus(out_dir, task, feats, labels, split_indices(len(feats), seed),
                 {"kind": "real", "path": str(src.resolve()), "labels": desc})
    return Path(out_dir)
