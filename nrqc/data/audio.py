"""Audio I/O with the standard library and sox (which also reads FLAC, MP3-free)."""
from __future__ import annotations

import os
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from nrqc.errors import NrqcError

SR = 16000


def write_wav(path: str | Path, x: np.ndarray, sr: int = SR) -> None:
    """float in [−1, 1] -> 16-bit mono PCM, atomically."""
    path = Path(path)
    pcm = np.clip(np.round(np.asarray(x, np.float64) * 32768), -32768, 32767).astype("<i2")
    tmp = path.with_name(path.name + ".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    os.replace(tmp, path)


def _read_wav_pcm16(path: Path) -> tuple[np.ndarray, int] | None:
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                return None
            n, ch, sr = w.getnframes(), w.getnchannels(), w.getframerate()
            x = np.frombuffer(w.readframes(n), dtype="<i2").astype(np.float32) / 32768
    except (wave.Error, EOFError):
        return None
    return x.reshape(-1, ch).mean(axis=1), sr


def sox(*args: str) -> None:
    # -D: no dither, so that the same input always gives the same output (reproducible corpora).
    r = subprocess.run(["sox", "-D", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise NrqcError(f"sox {' '.join(args)} failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")


def load_audio(path: str | Path, sr: int = SR) -> np.ndarray:
    """Mono float32 at `sr`: 16-bit WAV directly, anything else (FLAC, other rates) via sox."""
    path = Path(path)
    if not path.is_file():
        raise NrqcError(f"audio file '{path}' does not exist")
    got = _read_wav_pcm16(path) if path.suffix.lower() == ".wav" else None
    if got is not None and got[1] == sr:
        return got[0]
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "a.wav"
        try:
            sox(str(path), "-b", "16", "-c", "1", "-r", str(sr), str(out))
        except NrqcError:
            raise NrqcError(f"audio file '{path}' could not be decoded by sox") from None
        return _read_wav_pcm16(out)[0]


def sox_effect(x: np.ndarray, effects: list[str], sr: int = SR, via: str = "wav") -> np.ndarray:
    """Run `x` through sox effects, or through a codec when `via` is a lossy format
    (gsm, amr-nb, lpc10, ogg): encode at 8 kHz (16 kHz for ogg) and decode back to `sr`."""
    with tempfile.TemporaryDirectory() as d:
        src, mid, out = Path(d) / "in.wav", Path(d) / f"mid.{via}", Path(d) / "out.wav"
        write_wav(src, x, sr)
        if via == "wav":
            sox(str(src), str(out), *effects)
        else:
            enc = ["-r", "8000"] if via in ("gsm", "amr-nb", "lpc10") else ["-C", "-1"]
            sox(str(src), *enc, "-c", "1", str(mid))
            sox(str(mid), "-b", "16", "-r", str(sr), str(out), *effects)
        y = _read_wav_pcm16(out)[0]
    # Keep the length (reverb tails, codec padding): crop or pad with zeros.
    return np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)].astype(np.float32)
