"""The VAD recipe's complexity trade-off (slow: synthesizes a corpus and trains twice)."""
import pytest

from nrqc.data.corpus import synthesize
from nrqc.training.trainer import TrainConfig, train


@pytest.mark.slow
def test_vad_alpha_trades_macs_for_accuracy(tmp_path):
    synthesize("vad", tmp_path / "data", 400, seed=0)
    runs = {a: train(TrainConfig("vad", "reparam", complexity_weight=a, epochs=15), tmp_path / f"a{a}",
                     tmp_path / "data", progress=False) for a in (0.01, 1.0)}
    lo, hi = runs[0.01]["complexity"], runs[1.0]["complexity"]
    assert hi["macs"] < 0.7 * lo["macs"]
    assert hi["widths"]["bands"] < 80
    assert runs[1.0]["test"]["auc"] > 0.8
