import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from archbench.errors import UsageError
from archbench.records import merge_records
from archbench.report import analyze, render_report_markdown, write_reports
from tests.fixed_records import fixed_record

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("ARCHBENCH_REGEN_GOLDEN") == "1"


def check_golden(name: str, text: str):
    path = GOLDEN / name
    if REGEN or not path.exists():
        path.write_text(text)
        if not REGEN:
            pytest.fail(f"golden file {path} was missing and has been written; review it and rerun")
    assert text == path.read_text(), f"{name} differs from its golden file (ARCHBENCH_REGEN_GOLDEN=1 rewrites it)"


def test_report_markdown_matches_golden_file():
    check_golden("report_fixed.md", render_report_markdown(fixed_record()))


def test_verdicts_follow_the_numbers():
    an = analyze(fixed_record())
    assert an["ranked"][0] == "big"
    pairs = {(p["a"], p["b"]): p for p in an["pairs"]}
    assert pairs[("big", "small")]["significant"] and pairs[("big", "small")]["winner"] == "big"
    twin = pairs.get(("twin", "small")) or pairs.get(("small", "twin"))
    assert not twin["significant"]
    md = render_report_markdown(fixed_record())
    assert "**big** is the most accurate, significantly ahead of every other model" in md
    assert "no significant difference" in md


def test_swapping_the_numbers_swaps_the_conclusions():
    rec = fixed_record({"small": (0.90, 0.91), "big": (0.80, 0.81), "twin": (0.905, 0.90)})
    md = render_report_markdown(rec)
    assert "**big** is the most accurate" not in md
    an = analyze(rec)
    assert an["ranked"][-1] == "big"
    # Costs did not change: `small` stays the cheapest in parameters.
    assert "cheapest: **small**, **twin** (tied)" in md


def test_pareto_front():
    an = analyze(fixed_record())
    # big is the most accurate, small/twin the cheapest: both ends are on the front.
    assert "big" in an["pareto"]["params"]
    assert set(an["pareto"]["params"]) & {"small", "twin"}


def test_single_model_single_seed_uses_the_binomial_interval():
    rec = fixed_record({"small": (0.8,)})
    a = analyze(rec)["models"]["small"]["accuracy"]
    assert a["n"] == 1 and "Wilson" in a["ci"]["method"]
    assert "1 run" in render_report_markdown(rec)


def test_write_reports_makes_plots_and_self_contained_html(tmp_path):
    paths = write_reports(fixed_record(), tmp_path)
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") >= 6
    assert "src=\"plots/" not in html and "http" not in html.split("<style>")[0]
    assert (tmp_path / "plots" / "confusion_1_big.png").stat().st_size > 5000
    assert "Which model is more accurate?" in paths["markdown"].read_text()


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="no chromium on this machine (make test installs Debian's as root)")
def test_report_html_loads_in_headless_chromium(tmp_path):
    write_reports(fixed_record(), tmp_path)
    shot = tmp_path / "screenshot.png"
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--window-size=1200,3000", f"--screenshot={shot}", (tmp_path / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 20_000
    console_errors = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()]
    assert not console_errors, console_errors
    dom = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom",
         (tmp_path / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert "Which model is more accurate?" in dom.stdout and dom.stdout.count("<img") >= 6


def test_merge_refuses_a_different_test_set():
    a, b = fixed_record(), fixed_record()
    b["name"] = "other"
    b["dataset"]["test_labels"] = b["dataset"]["test_labels"][::-1]
    with pytest.raises(UsageError, match="incompatible: dataset test_labels"):
        merge_records([a, b], "m")
    b = fixed_record()
    b["name"] = "other"
    b["dataset"]["name"] = "mnist"
    with pytest.raises(UsageError, match="incompatible: dataset name — 'tiny' vs 'mnist'"):
        merge_records([a, b], "m")


def test_merge_renames_clashing_models():
    a, b = fixed_record(), fixed_record()
    b["name"] = "day2"
    m = merge_records([a, b], "m")
    assert "small@fixed" in m["models"] and "small@day2" in m["models"]
    assert m["merged_from"] == ["fixed", "day2"]
    assert "Merged from runs" in render_report_markdown(m)


def test_compare_cli_merges_run_dirs(tmp_path):
    dirs = []
    for name, keep in (("r1", ["small"]), ("r2", ["big"])):
        rec = fixed_record()
        rec["name"] = name
        rec["models"] = {k: v for k, v in rec["models"].items() if k in keep}
        d = tmp_path / name
        d.mkdir()
        (d / "results.json").write_text(json.dumps(rec))
        dirs.append(str(d))
    out = tmp_path / "cmp"
    p = subprocess.run([sys.executable, "-m", "archbench", "compare", *dirs, "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    merged = json.loads((out / "results.json").read_text())
    assert set(merged["models"]) == {"small", "big"}
    assert "**big** is more accurate than small" in (out / "report.md").read_text()
    assert (out / "report.html").exists()


def test_report_rebuild_is_deterministic(tmp_path):
    rec = fixed_record()
    a = render_report_markdown(copy.deepcopy(rec))
    b = render_report_markdown(json.loads(json.dumps(rec)))
    assert a == b
