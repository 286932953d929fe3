"""Real-corpus loaders on tiny files the tests write, and the log-mel frontend."""
import numpy as np
import pytest

from nrqc.data.audio import load_audio, write_wav
from nrqc.data.corpus import load_corpus
from nrqc.data.features import log_mel, mel_filterbank, n_frames
from nrqc.data.loaders import prepare_corpus, read_asvspoof_protocol, read_mos_csv, read_vad_labels
from nrqc.errors import NrqcError


def _tone(sec, f=440.0, amp=0.3):
    t = np.arange(int(16000 * sec)) / 16000
    return (amp * np.sin(2 * np.pi * f * t)).astype(np.float32)


def test_wav_round_trip_and_resampling(tmp_path):
    x = _tone(0.5)
    write_wav(tmp_path / "a.wav", x)
    np.testing.assert_allclose(load_audio(tmp_path / "a.wav"), x, atol=1 / 32767)
    write_wav(tmp_path / "b.wav", _tone(0.5)[::2], sr=8000)  # resampled by sox to 16 kHz
    assert abs(len(load_audio(tmp_path / "b.wav")) - 8000) <= 2


def test_log_mel_matches_direct_computation():
    x = _tone(0.3, f=1000.0)
    f = log_mel(x, 40)
    assert f.shape == (n_frames(len(x)), 40) == (1 + (4800 - 400) // 160, 40)
    # Independent reference: the frame-3 periodogram through the filterbank, by hand.
    frame = x[3 * 160: 3 * 160 + 400] * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400))
    p = np.abs(np.fft.rfft(frame, 512)) ** 2
    ref = (np.log(mel_filterbank(40) @ p + 1e-6) + 6.0) / 4.0
    np.testing.assert_allclose(f[3], ref, rtol=1e-4, atol=1e-4)
    # A 1 kHz tone peaks in the band whose centre is nearest 1 kHz (HTK mel: 1000 Hz = 1000 mel).
    centres = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 42)[1:-1] / 2595) - 1)
    assert int(np.argmax(f[3])) == int(np.argmin(np.abs(centres - 1000)))


def test_mos_csv(tmp_path):
    write_wav(tmp_path / "c1.wav", _tone(0.2))
    (tmp_path / "mos.csv").write_text("Filename,MOS\nc1.wav,3.5\n")
    rows = read_mos_csv(tmp_path / "mos.csv")
    assert rows == [(tmp_path / "c1.wav", 3.5)]
    (tmp_path / "bad.csv").write_text("name,quality\nc1.wav,3\n")
    with pytest.raises(NrqcError, match="bad.csv"):
        read_mos_csv(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("file,mos\nc1.wav,high\n")
    with pytest.raises(NrqcError, match="line 2"):
        read_mos_csv(tmp_path / "bad2.csv")


def test_asvspoof_protocol(tmp_path):
    (tmp_path / "flac").mkdir()
    write_wav(tmp_path / "flac" / "LA_T_1.wav", _tone(0.2))
    write_wav(tmp_path / "flac" / "LA_T_2.wav", _tone(0.2))
    (tmp_path / "proto.txt").write_text("LA_0079 LA_T_1 - - bonafide\nLA_0079 LA_T_2 - A01 spoof\n")
    assert read_asvspoof_protocol(tmp_path / "proto.txt") == [
        (tmp_path / "flac" / "LA_T_1.wav", 1), (tmp_path / "flac" / "LA_T_2.wav", 0)]
    (tmp_path / "p2.txt").write_text("LA_0079 LA_T_9 - - bonafide\n")
    with pytest.raises(NrqcError, match="LA_T_9"):
        read_asvspoof_protocol(tmp_path / "p2.txt")


def test_vad_label_formats(tmp_path):
    (tmp_path / "seg.lab").write_text("0.10 0.30 speech\n0.30 0.50 silence\n0.50 0.60\n")
    lab = read_vad_labels(tmp_path / "seg.lab", 60)
    centres = (np.arange(60) * 160 + 200) / 16000
    expected = (((centres >= 0.1) & (centres < 0.3)) | ((centres >= 0.5) & (centres < 0.6))).astype(np.uint8)
    np.testing.assert_array_equal(lab, expected)
    (tmp_path / "frames.txt").write_text("0 0 1 1 1 0\n")
    np.testing.assert_array_equal(read_vad_labels(tmp_path / "frames.txt", 8), [0, 0, 1, 1, 1, 0, 0, 0])
    (tmp_path / "bad.lab").write_text("0.5 0.2\n")
    with pytest.raises(NrqcError, match="bad.lab"):
        read_vad_labels(tmp_path / "bad.lab", 10)


def test_prepare_real_vad_corpus(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_wav(src / "a.wav", np.concatenate([np.zeros(8000, np.float32), _tone(1.0), np.zeros(8000, np.float32)]))
    (src / "a.lab").write_text("0.5 1.5 speech\n")
    prepare_corpus("vad", src, tmp_path / "out", frames=50, bands=16)
    c = load_corpus(tmp_path / "out")
    assert c["features"].shape[1:] == (50, 16) and c["labels"].shape == (len(c["features"]), 50)
    assert c["manifest"]["source"]["kind"] == "real"
    # 2 s = 198 frames -> three whole 50-frame windows (frames 0..149); speech 0.5–1.5 s.
    centres = (np.arange(150) * 160 + 200) / 16000
    np.testing.assert_array_equal(c["labels"].reshape(-1), ((centres >= 0.5) & (centres < 1.5)).astype(np.uint8))
    # and the features see the tone exactly where the labels say speech
    energy = c["features"].reshape(-1, 16).max(axis=1)
    assert energy[c["labels"].reshape(-1) == 1].mean() > energy[c["labels"].reshape(-1) == 0].mean() + 1.0


def test_prepare_real_quality_and_antispoof_corpora(tmp_path):
    q = tmp_path / "dns"
    q.mkdir()
    for i in range(4):
        write_wav(q / f"c{i}.wav", _tone(0.5, f=300.0 * (i + 1)))
    (q / "mos.csv").write_text("clip,mos_ovrl\n" + "".join(f"c{i}.wav,{1.5 + i * 0.5}\n" for i in range(4)))
    prepare_corpus("quality", q, tmp_path / "qc", frames=40, bands=24)
    c = load_corpus(tmp_path / "qc")
    assert c["features"].shape == (4, 40, 24) and c["labels"].tolist() == [1.5, 2.0, 2.5, 3.0]
    np.testing.assert_allclose(c["features"][2], log_mel(load_audio(q / "c2.wav"), 24, 40))

    a = tmp_path / "asv"
    (a / "flac").mkdir(parents=True)
    for u in ("U1", "U2", "U3"):
        write_wav(a / "flac" / f"{u}.wav", _tone(0.3))
    (a / "ASVspoof2019.LA.cm.train.trn.txt").write_text("S1 U1 - - bonafide\nS1 U2 - A07 spoof\nS2 U3 - A19 spoof\n")
    prepare_corpus("antispoof", a, tmp_path / "ac", frames=20, bands=16)
    assert load_corpus(tmp_path / "ac")["labels"].tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(NrqcError, match="no MOS CSV"):
        prepare_corpus("quality", a / "flac", tmp_path / "x", frames=20, bands=16)
