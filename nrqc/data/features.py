"""Log-mel features at 16 kHz (numpy, deterministic), the frontend every model expects.

Frames of 25 ms (400 samples, Hann) every 10 ms (160 samples), 512-point FFT, a Slaney-
style triangular mel filterbank (HTK mel scale) over 0–8 kHz, natural log of the mel
power + 1e-6, then standardized with fixed constants: (ln − MEAN) / STD.  The constants
are part of the frontend (they are not fitted per dataset), so that an exported model is
self-contained given FRONTEND.
"""
from __future__ import annotations

import functools

import numpy as np

FRONTEND = {"sample_rate": 16000, "win": 400, "hop": 160, "n_fft": 512, "window": "hann",
            "mel_scale": "htk", "fmin": 0.0, "fmax": 8000.0, "log": "ln(power + 1e-6)",
            "mean": -6.0, "std": 4.0}


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(n_mels: int, n_fft: int = 512, sr: int = 16000, fmin: float = 0.0, fmax: float = 8000.0) -> np.ndarray:
    """[n_mels, n_fft//2 + 1] triangular filters, each with unit area in Hz (Slaney norm)."""
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, len(freqs)), dtype=np.float64)
    for i in range(n_mels):
        lo, c, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs - lo) / (c - lo)
        down = (hi - freqs) / (hi - c)
        fb[i] = np.maximum(0, np.minimum(up, down)) * 2.0 / (hi - lo)
    return fb.astype(np.float32)


def n_frames(n_samples: int, win: int = 400, hop: int = 160) -> int:
    return 0 if n_samples < win else 1 + (n_samples - win) // hop


def power_spectrogram(x: np.ndarray, win: int = 400, hop: int = 160, n_fft: int = 512) -> np.ndarray:
    n = n_frames(len(x), win, hop)
    if n == 0:
        return np.zeros((0, n_fft // 2 + 1), np.float32)
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    frames = x[idx] * np.hanning(win + 1)[:-1].astype(np.float32)
    return (np.abs(np.fft.rfft(frames, n_fft)) ** 2).astype(np.float32)


def log_mel(x: np.ndarray, n_mels: int = 80, frames: int | None = None) -> np.ndarray:
    """[frames, n_mels] standardized log-mel of 16 kHz audio; `frames` crops or pads (with
    the feature value of silence) to a fixed length."""
    f = FRONTEND
    p = power_spectrogram(np.asarray(x, np.float32), f["win"], f["hop"], f["n_fft"])
    mel = p @ mel_filterbank(n_mels, f["n_fft"], f["sample_rate"]).T
    feat = ((np.log(mel + 1e-6) - f["mean"]) / f["std"]).astype(np.float32)
    if frames is not None:
        silence = (np.log(1e-6) - f["mean"]) / f["std"]
        if len(feat) < frames:
            feat = np.concatenate([feat, np.full((frames - len(feat), n_mels), silence, np.float32)])
        feat = feat[:frames]
    return feat
