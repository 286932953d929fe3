"""Speech data with nothing downloaded: a synthesizer (espeak-ng + sox + generated noise)
that writes labelled corpora, log-mel features, and loaders for real corpora a user owns
(DNS-Challenge style MOS CSV, ASVspoof protocol files, VAD label files)."""
from nrqc.data.features import FRONTEND, log_mel

__all__ = ["FRONTEND", "log_mel"]
