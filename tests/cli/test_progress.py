"""Progress output: a live line on a terminal; in a log (not a terminal) about ten lines per
task plus a summary, whatever the number of updates."""
from __future__ import annotations

import io
import json

from nrqc.progress import Progress
from tests.conftest import run_cli


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_gets_about_ten_lines_for_ten_thousand_updates():
    out = io.StringIO()
    with Progress("work", 10_000, stream=out) as p:
        for i in range(10_000):
            p.update(1, note=f"item {i}")
    lines = out.getvalue().splitlines()
    assert 9 <= len(lines) <= 11, lines  # 10 %, 20 %, ... 90 %, then the summary
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("  work: 1000/10000 (10%")
    assert lines[-1].startswith("  work: done 10000/10000 in ") and lines[-1].endswith("item 9999")


def test_unknown_total_prints_by_time_only():
    out = io.StringIO()
    p = Progress("lines", stream=out, every=3600)
    for _ in range(5000):
        p.update()
    p.close()
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]
    assert out.getvalue().startswith("  lines: done 5000 in ")


def test_terminal_redraws_one_line():
    out = _Terminal()
    p = Progress("work", 50, stream=out)
    for _ in range(50):
        p.update()
    p.close("")
    text = out.getvalue()
    assert "\r" in text and "[" + "#" * 30 + "]" in text
    assert text.count("\n") == 0  # one live line, cleared at the end


def test_a_log_line_during_a_live_line_gets_its_own_line():
    out = _Terminal()
    p = Progress("work", 4, stream=out)
    p.update()
    p.around(lambda m: out.write(m + "\n"))("a message")
    p.update()
    p.close()
    lines = out.getvalue().split("\n")
    assert any(ln.endswith("a message") and ln.startswith("\r\033[K") for ln in lines), lines


def test_training_log_is_short_when_stderr_is_not_a_terminal(tmp_path):
    proc = run_cli("train", "synthetic", "--epochs", "60", "--out", tmp_path / "run", timeout=300)
    epoch_lines = [ln for ln in proc.stderr.splitlines() if "epoch" in ln]
    assert len(epoch_lines) <= 11, proc.stderr  # ten progress lines and a summary, not 60
    assert epoch_lines[-1].startswith("train: 60 epoch(s) run in ")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(m["history"]) == 60
    assert f"; last epoch 60: loss {m['history'][-1]['train_loss']:.4f} | val " in epoch_lines[-1]
