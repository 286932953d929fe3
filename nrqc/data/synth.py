"""Synthesized speech: espeak-ng voices, rates and pitches; generated noise; sox degradations.

Every function takes a numpy Generator so corpora are reproducible from a seed.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from nrqc.data.audio import SR, load_audio, sox_effect
from nrqc.errors import NrqcError

WORDS = ("the a one two three four five six seven eight nine ten red green blue yellow black white house "
         "river mountain city garden window table chair paper music water light night morning evening "
         "quickly slowly always never often maybe because although however speech voice signal model "
         "small large bright quiet loud warm cold happy tired open closed begin finish travel listen "
         "speak answer question number letter station market winter summer autumn spring doctor teacher "
         "engineer computer phone message street bridge forest ocean island planet orange purple silver "
         "golden wooden simple careful strong gentle every nothing something people children family").split()
LANGS = ("en-us", "en", "en-gb-scotland", "en-029", "en-gb-x-rp", "de", "fr", "es", "it", "nl")
VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3", "+f4", "+f5",
            "+klatt", "+klatt2", "+croak", "+whisper")
NOISES = ("white", "pink", "brown", "babble", "hum", "fan")
DEGRADATIONS = ("none", "reverb", "clip", "bandlimit", "gsm", "amr-nb", "ogg")


def sentence(rng: np.random.Generator, words: tuple[int, int] = (3, 9)) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(*words))))


def espeak(text: str, voice: str = "en-us", rate: int = 160, pitch: int = 50) -> np.ndarray:
    """espeak-ng speech at 16 kHz, float32."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "s.wav"
        r = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(out), text],
                           capture_output=True, text=True)
        if r.returncode != 0 or not out.is_file():
            raise NrqcError(f"espeak-ng failed for voice '{voice}': {r.stderr.strip()[:200]}")
        return load_audio(out, SR)


def random_utterance(rng: np.random.Generator, words=(3, 9)) -> tuple[np.ndarray, dict]:
    info = {"voice": str(rng.choice(LANGS)) + str(rng.choice(VARIANTS)), "rate": int(rng.integers(110, 230)),
            "pitch": int(rng.integers(15, 90)), "text": sentence(rng, words)}
    x = espeak(info["text"], info["voice"], info["rate"], info["pitch"])
    peak = np.abs(x).max()
    return (x / peak * 0.5 if peak > 0 else x).astype(np.float32), info


def fit_length(x: np.ndarray, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Crop (at a random offset) or zero-pad to n samples."""
    if len(x) >= n:
        off = int(rng.integers(0, len(x) - n + 1)) if rng is not None else 0
        return x[off: off + n]
    return np.pad(x, (0, n - len(x)))


def _colored(n: int, rng, exponent: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1
    y = np.fft.irfft(spec / f ** (exponent / 2), n)
    return y / (y.std() + 1e-12)


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise of a given kind."""
    if kind == "white":
        y = rng.standard_normal(n)
    elif kind == "pink":
        y = _colored(n, rng, 1.0)
    elif kind == "brown":
        y = _colored(n, rng, 2.0)
    elif kind == "babble":  # several talkers at once
        y = sum(fit_length(np.tile(random_utterance(rng)[0], 4), n, rng) for _ in range(3))
    elif kind == "hum":  # mains hum with harmonics over a little white noise
        t = np.arange(n) / SR
        f0 = rng.choice([50.0, 60.0])
        y = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in range(1, 8)) + 0.05 * rng.standard_normal(n)
    elif kind == "fan":  # low-passed noise with a slow amplitude modulation
        y = _colored(n, rng, 1.5) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * np.arange(n) / SR))
    else:
        raise ValueError(f"unknown noise {kind!r}")
    y = np.asarray(y, dtype=np.float64)
    return (y / (y.std() + 1e-12)).astype(np.float32)


def mix_at_snr(clean: np.ndarray, nz: np.ndarray, snr_db: float, speech_power: float | None = None) -> np.ndarray:
    p = speech_power if speech_power is not None else float(np.mean(clean ** 2))
    return (clean + nz * np.sqrt(p / (10 ** (snr_db / 10)) / (np.mean(nz ** 2) + 1e-12))).astype(np.float32)


def degrade(x: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Reverberation, clipping, band limitation or a low-bit-rate codec (sox)."""
    if kind == "none":
        return x
    if kind == "reverb":
        return sox_effect(x, ["reverb", str(int(rng.integers(30, 90))), "50", str(int(rng.integers(40, 100)))])
    if kind == "clip":
        g = 10 ** (rng.uniform(6, 20) / 20)
        return (np.clip(x * g, -0.5, 0.5) / g * 1.0).astype(np.float32)
    if kind == "bandlimit":
        lo, hi = int(rng.integers(100, 500)), int(rng.integers(2500, 4500))
        return sox_effect(x, ["sinc", f"{lo}-{hi}"])
    if kind in ("gsm", "amr-nb", "ogg", "lpc10"):
        return sox_effect(x, [], via=kind)
    raise ValueError(f"unknown degradation {kind!r}")


def griffin_lim(x: np.ndarray, iters: int = 16, rng: np.random.Generator | None = None) -> np.ndarray:
    """Vocoder-style resynthesis: keep the STFT magnitude, re-estimate the phase."""
    win, hop, nfft = 512, 128, 512
    w = np.hanning(win + 1)[:-1]
    n = len(x)
    pad = np.pad(np.asarray(x, np.float64), (win, win + hop))
    idx = np.arange(win)[None, :] + hop * np.arange((len(pad) - win) // hop)[:, None]
    mag = np.abs(np.fft.rfft(pad[idx] * w, nfft))
    rng = rng or np.random.default_rng(0)
    phase = np.exp(2j * np.pi * rng.random(mag.shape))
    starts = hop * np.arange(len(idx))

    def overlap_add(frames):
        out = np.zeros(len(pad))
        for s0, fr in zip(starts, frames):
            out[s0: s0 + win] += fr
        return out

    norm = np.maximum(overlap_add(np.broadcast_to(w ** 2, (len(idx), win))), 1e-8)
    y = pad
    for _ in range(iters):
        y = overlap_add(np.fft.irfft(mag * phase, nfft)[:, :win] * w) / norm
        spec = np.fft.rfft(y[idx] * w, nfft)
        phase = np.exp(1j * np.angle(spec))
    return y[win: win + n].astype(np.float32)


SPOOFS = ("lpc10", "griffin_lim", "pitch_convert", "gsm_griffin_lim")


def spoof(x: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Resynthesized or converted speech from a bona fide utterance."""
    if kind == "lpc10":  # LPC-10 vocoder: buzz/hiss excitation through an all-pole filter
        y = sox_effect(x, [], via="lpc10")
    elif kind == "griffin_lim":
        y = griffin_lim(x, rng=rng)
    elif kind == "pitch_convert":  # crude voice conversion: pitch and formant shift
        y = sox_effect(x, ["pitch", str(int(rng.choice([-1, 1]) * rng.integers(200, 500))),
                           "equalizer", str(int(rng.integers(800, 2500))), "1q", str(int(rng.integers(-8, 9)))])
    elif kind == "gsm_griffin_lim":
        y = griffin_lim(sox_effect(x, [], via="gsm"), iters=8, rng=rng)
    else:
        raise ValueError(f"unknown spoof {kind!r}")
    peak = np.abs(y).max()
    return (y / peak * 0.5 if peak > 0 else y).astype(np.float32)
