"""The synthesizer: espeak-ng speech, noise at a chosen SNR, sox degradations, labels."""
import numpy as np
import pytest

from nrqc.data import synth
from nrqc.data.corpus import load_corpus, synthesize, vad_frame_labels


def test_noise_mixing_hits_the_snr():
    rng = np.random.default_rng(0)
    clean = synth.random_utterance(rng)[0]
    for kind in synth.NOISES:
        nz = synth.noise(kind, len(clean), rng)
        assert nz.std() == pytest.approx(1.0, rel=1e-3)
        mix = synth.mix_at_snr(clean, nz, 5.0)
        snr = 10 * np.log10(np.mean(clean ** 2) / np.mean((mix - clean) ** 2))
        assert snr == pytest.approx(5.0, abs=1e-3)


def test_voices_differ_and_degradations_keep_length():
    a = synth.espeak("seven green bridges", "en-us+m3", 140, 30)
    b = synth.espeak("seven green bridges", "en-us+f2", 140, 80)
    assert len(a) > 8000 and len(b) > 8000 and not np.allclose(a[:8000], b[:8000])
    rng = np.random.default_rng(1)
    for kind in synth.DEGRADATIONS:
        y = synth.degrade(a, kind, rng)
        assert y.shape == a.shape and np.isfinite(y).all()
    # band limitation removes energy above its upper edge (≤ 4.5 kHz)
    y = synth.degrade(synth.noise("white", 32000, rng) * 0.1, "bandlimit", rng)
    spec = np.abs(np.fft.rfft(y)) ** 2
    assert spec[int(5000 / 8000 * len(spec)):].sum() < 0.01 * spec.sum()


def test_vad_labels_from_synthesis():
    clean = np.zeros(16000, np.float32)
    clean[4000:8000] = 0.3 * np.sin(np.arange(4000) * 0.2)
    lab = vad_frame_labels(clean, 98)
    centres = np.arange(98) * 160 + 200
    inside = (centres > 4000 + 200) & (centres < 8000 - 200)  # frames wholly inside the tone
    outside = (np.arange(98) * 160 + 400 <= 4000) | (np.arange(98) * 160 >= 8000)  # frames wholly outside
    assert lab[inside].all() and not lab[outside].any()


def test_synthesized_corpora(tmp_path):
    for task in ("quality", "vad", "antispoof"):
        synthesize(task, tmp_path / task, 6, seed=3)
        c = load_corpus(tmp_path / task)
        assert c["manifest"]["task"] == task and len(c["features"]) == 6 and np.isfinite(c["features"]).all()
    q = load_corpus(tmp_path / "quality")["labels"]
    assert ((q >= 1.0) & (q <= 4.65)).all() and q.std() > 0.1  # wide-band PESQ range
    s = load_corpus(tmp_path / "antispoof")["labels"]
    assert s.tolist() == [1, 0, 1, 0, 1, 0]
    # reproducible from the seed
    synthesize("vad", tmp_path / "vad2", 6, seed=3)
    np.testing.assert_array_equal(load_corpus(tmp_path / "vad2")["features"], load_corpus(tmp_path / "vad")["features"])


def test_pesq_orders_snrs():
    from pesq import pesq

    rng = np.random.default_rng(5)
    clean = synth.fit_length(synth.random_utterance(rng, (6, 9))[0], 40000)
    nz = synth.noise("pink", len(clean), rng)
    scores = [pesq(16000, clean, synth.mix_at_snr(clean, nz, snr), "wb") for snr in (0, 10, 30)]
    assert scores[0] < scores[1] < scores[2]
