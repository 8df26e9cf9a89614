"""The progress display: a 2-job run in a pseudo-terminal leaves one clean
line per unit-epoch and labelled bars while it runs; without a terminal,
plain lines; in a notebook without ipywidgets, plain labelled lines and no
tqdm warning."""

import io
import os
import re
import sys
import warnings
from pathlib import Path

import pytest

from archbench.run.progress import LineBar, labelled, progress_factory, write
from tests.screen import run_in_pty, screen

ROOT = Path(__file__).resolve().parents[1]
COLS = 120
EPOCH_LINE = re.compile(r"^(mlp|cnn) seed ([01]) epoch ([12])/2: loss \d\.\d{4} acc \d\.\d{4} [\d,]+ img/s "
                        r"\| test acc \d\.\d{4}$")
BAR = re.compile(r"^(mlp|cnn) seed [01] epoch [12]/2: +\d+%\|")


def test_screen_model_replays_what_bars_send():
    raw = b"abc\r\nxyz\r\n\x1b[A\rbar 1\r\x1b[2Kdone\n\rlast"
    assert screen(raw, cols=20, rows=5) == ["abc", "done", "last"]
    assert screen(b"0123456789ab", cols=10, rows=3) == ["0123456789", "ab"]  # wrapped
    with pytest.raises(AssertionError):
        screen(b"\x1b]0;title\x07")


def test_two_jobs_in_a_terminal_leave_a_clean_screen(tmp_path, fashion_dir):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), COLUMNS=str(COLS), TERM="xterm")
    argv = [sys.executable, "-m", "archbench", "run", "--models", "mlp,cnn", "--seeds", "0,1", "--epochs", "2",
            "--train-limit", "3000", "--test-limit", "300", "--jobs", "2", "--no-timing", "--device", "cpu",
            "--out", str(tmp_path), "--name", "pty"]
    code, raw = run_in_pty(argv, env, cols=COLS, rows=30)
    lines = screen(raw, cols=COLS, rows=30)
    assert code == 0, "\n".join(lines)
    # Every unit-epoch: exactly one line, labelled, one speed, never a leftover bar or a glued log line.
    epochs = [m.groups() for m in map(EPOCH_LINE.match, lines) if m]
    assert sorted(epochs) == sorted((m, s, e) for m in ("mlp", "cnn") for s in "01" for e in "12"), lines
    assert not [ln for ln in lines if "%|" in ln], lines
    assert not [ln for ln in lines if "img/s" in ln and not EPOCH_LINE.match(ln)], lines
    assert not [ln for ln in lines if ln.count(" seed ") > 1], lines  # two units' text on one line
    assert "run: 4 of 4 units finished" in lines
    # While it ran: at most one bar per side-by-side slot, each labelled, with one speed.
    cuts = [m.start() for m in re.finditer(rb"\x1b\[A", raw)]
    cuts = cuts[::max(1, len(cuts) // 300)]  # at most ~300 moments, spread over the whole run
    bars_seen, run_bars = 0, set()
    for cut in cuts:
        tail = screen(raw[:cut], cols=COLS, rows=30)[-6:]
        live = [ln for ln in tail if "%|" in ln]
        assert len(live) <= 2, live
        for ln in live:
            assert BAR.match(ln) and ln.count("/s") == 1, live
        bars_seen += len(live)
        # Below the units' bars, the run's own: units finished, no speed.
        run_bars |= {m[1] for ln in tail if (m := re.match(r"^run: (\d)/4 units finished \|", ln)) and "/s" not in ln}
    assert bars_seen, "no live bar was ever on the screen"
    assert {"0", "2"} <= run_bars, run_bars


def test_without_a_terminal_one_plain_line_per_epoch():
    out = io.StringIO()
    make = labelled(progress_factory(False, file=out), "cnn", 3)
    bar = make(total=100, desc="epoch 1/2", unit="img")
    bar.update(60)
    bar.update(40)
    bar.set_postfix_str("loss 0.5000 acc 0.8000 1,234 img/s")
    bar.close()
    bar.close()
    assert out.getvalue() == "cnn seed 3 epoch 1/2: loss 0.5000 acc 0.8000 1,234 img/s\n"
    assert progress_factory(True) is None


def test_notebook_without_widgets_prints_labelled_lines_and_no_warning(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # as in a kernel without ipywidgets
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bar = labelled(progress_factory(False, notebook=True), "mlp", 1)(total=10, desc="epoch 2/2", unit="img")
        assert isinstance(bar, LineBar)
        bar.update(10)
        bar.set_postfix_str("loss 0.1000")
        bar.close()
    assert capsys.readouterr().out == "mlp seed 1 epoch 2/2: loss 0.1000\n"


def test_log_lines_go_above_a_live_bar():
    from tqdm import tqdm

    out = io.StringIO()
    bar = tqdm(total=10, desc="mlp seed 0 epoch 1/1", file=out, position=0, leave=False, mininterval=0)
    bar.update(5)
    write("[mlp] a log line", out)
    bar.close()
    assert "[mlp] a log line" in screen(out.getvalue().encode(), cols=80, rows=10)
