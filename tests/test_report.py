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
from archbench.report.analysis import time_order
from archbench.report.conclusions import bottom_line
from archbench.stats import mcnemar_exact
from tests.fixed_records import (
    SITUATIONS,
    consistent_gap_record,
    disagreeing_seeds_record,
    fixed_record,
    incomplete_record,
    loaded_record,
    merged_record,
    mixed_conditions_record,
    one_seed_record,
)

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
    assert "**big** is the most accurate, ahead of every other model beyond both training randomness and " \
        "test-set noise" in md
    assert "no significant difference" in md


def test_swapping_the_numbers_swaps_the_conclusions():
    rec = fixed_record({"small": (0.90, 0.91), "big": (0.80, 0.81), "twin": (0.905, 0.90)})
    md = render_report_markdown(rec)
    assert "**big** is the most accurate" not in md
    assert "No single model is shown the most accurate: **small** leads by" in md
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
    for png in (tmp_path / "plots").glob("*.png"):
        assert png.with_suffix(".svg").stat().st_size > 1000, f"no SVG beside {png.name}"
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


# --- golden reports of the situations a verdict must survive (tests/fixed_records.py) ------------

@pytest.mark.parametrize("situation", sorted(SITUATIONS))
def test_situation_report_matches_golden_file(situation):
    check_golden(f"report_{situation}.md", render_report_markdown(SITUATIONS[situation]()))


def _bottom_line(md: str) -> str:
    return md.split("## Bottom line\n\n", 1)[1].split("\n\n", 1)[0]


def test_bottom_line_comes_first_in_two_to_four_sentences():
    for name, make in SITUATIONS.items():
        md = render_report_markdown(make())
        assert md.index("## Bottom line") < md.index("## Comparison"), name
        an = analyze(make())
        assert 2 <= len(bottom_line(an, make())) <= 4, name


def test_one_seed_says_what_it_cannot_know():
    rec = one_seed_record()
    md = render_report_markdown(rec)
    pair = analyze(rec)["pairs"][0]
    assert pair["scope"].startswith("test images only") and set(pair["unmeasured"]) == {"mlp", "cnn"}
    assert pair["p_value"] == pytest.approx(mcnemar_exact(120, 80))
    line = _bottom_line(md)
    assert "cannot separate architectures" in line and "is not established" in line
    assert "On these trained networks, mlp scored higher than cnn" in md  # the McNemar result, in the detail
    assert "**mlp** is more accurate" not in md
    # The command that measures it repeats the run's own options with 5 seeds.
    assert ("`archbench run --models mlp,cnn --seeds 0,1,2,3,4 --train-limit 5000 --test-limit 2000 --epochs 2`"
            in md)


def test_disagreeing_seeds_show_each_seed_and_no_verdict():
    rec = disagreeing_seeds_record()
    an = analyze(rec)
    (pair,) = an["pairs"]
    per_seed = [s["p_value"] for s in pair["mcnemar_per_seed"]]
    assert [f"{p:.1e}" for p in per_seed[:2]] == ["5.6e-07", "7.9e-08"] and round(per_seed[2], 2) == 0.55
    assert pair["difference"] == pytest.approx(0.011)
    assert not pair["significant"] and pair["scope"] == "seeds and test images"
    md = render_report_markdown(rec)
    for shown in ("p = 5.6e-07", "p = 7.9e-08", "p = 0.5451", "+1.10 pp"):
        assert shown in md
    assert "Neither model is shown more accurate" in _bottom_line(md)
    assert "**cnn** is more accurate" not in md


def test_a_consistent_gap_over_5_seeds_is_a_verdict():
    rec = consistent_gap_record()
    (pair,) = analyze(rec)["pairs"]
    assert pair["significant"] and pair["winner"] == "cnn"
    acc = {m: [u["test"]["accuracy"] for u in rec["models"][m]["units"]] for m in ("cnn", "mlp")}
    wins = sum((a > b) + 0.5 * (a == b) for a in acc["cnn"] for b in acc["mlp"])
    poi = pair["probability_of_improvement"]
    assert (poi["value"], poi["pairs"], poi["wins"]) == (wins / 25, 25, wins) and 0 < poi["p_value"] < 0.05
    assert _bottom_line(render_report_markdown(rec)).startswith("**cnn** is more accurate: +1.10 pp over mlp")


def test_loaded_machine_calls_no_time_winner():
    rec = loaded_record()
    an = analyze(rec)
    assert an["host"]["loaded"] and an["host"]["max_load"] == 4.1 and an["host"]["cores"] == 2
    assert an["time_axes"]["train_time"]["reason"] == "loaded" and "train_time" not in an["pareto"]
    md = render_report_markdown(rec)
    assert "no winner on time: the machine was loaded (1-minute load average 4.10 on 2 usable cores" in md
    assert "more train time" not in md and "less train time" not in md
    # the same record with a quiet host makes the difference a verdict again
    for entry in rec["models"].values():
        for u in entry["units"]:
            u["host"]["load_start"][0] = u["host"]["load_end"][0] = 1.0
    rec["environment"]["load_average"][0] = 0.2
    assert analyze(rec)["time_axes"]["train_time"]["reason"] is None


def test_time_verdict_needs_a_difference_beyond_the_spread():
    rec = consistent_gap_record()
    axis = analyze(rec)["time_axes"]["train_time"]
    assert time_order(axis, "mlp", "cnn") == "mlp"
    slow = rec["models"]["mlp"]["units"][0]  # one mlp unit as slow as cnn's: the ranges overlap
    scale = 95.0 / slow["timings"]["train_seconds"]
    slow["timings"]["train_seconds"] *= scale
    slow["timings"]["samples_per_second"] /= scale
    for h in slow["history"]:
        h["seconds"] *= scale
    axis = analyze(rec)["time_axes"]["train_time"]
    assert time_order(axis, "mlp", "cnn") is None
    assert "no winner: the measured ranges overlap" in render_report_markdown(rec)


def test_mixed_batch_sizes_compare_memory_per_sample():
    rec = mixed_conditions_record()
    an = analyze(rec)
    mem = an["axes"]["peak_memory"]
    assert not mem["comparable"] and mem["reason"] == "batch sizes differ"
    per = mem["per_sample"]["cnn_bn"]
    bd = rec["models"]["cnn_bn"]["measurements"]["memory"]["train_step"]["breakdown"]
    assert per["per_sample_bytes"] == (bd["input"] + bd["activations"] + bd["temporaries"]) / 256
    md = render_report_markdown(rec)
    assert "batch sizes differ (mlp 64, cnn_bn 256, resnet_small 128)" in md
    assert "no cheapest peak is named" in md and "cnn_bn trains in bf16 with adamw" in md
    assert "precisions differ (mlp fp32, cnn_bn bf16, resnet_small fp32)" in md
    assert "| cnn_bn | batch 256, fp32, Adam |" in md  # the conditions table


def test_merge_of_different_recipes_shows_each_models_own():
    rec = merged_record()
    md = render_report_markdown(rec)
    assert "| run | quick-mlp | full-cnn |" in md and "| epochs | 1 (cli) | 2 (cli) |" in md
    assert "| train_limit | 5000 | all |" in md
    assert "Training recipes differ between models" in md and "the same for every model" not in md
    assert "### Configuration of run `quick-mlp`" in md and "### Configuration of run `full-cnn`" in md
    assert "train images per epoch differ by run (mlp 5,000, cnn 60,000)" in md
    assert "thread counts differ (mlp 4, cnn 2)" in md
    an = analyze(rec)
    assert an["models"]["mlp"]["conditions"]["epochs"] == 1 and an["models"]["cnn"]["conditions"]["epochs"] == 2


def test_recipe_table_shows_what_the_record_says_not_todays_defaults():
    """A record rebuilt later keeps its own run's options and defaults: which
    recipe rows show follows its config.train and config.sources, not the
    TRAIN_DEFAULTS of the archbench that rebuilds it."""
    from archbench.config import TRAIN_DEFAULTS
    from archbench.report.document import render_markdown
    from archbench.report.sections import recipe_blocks

    rec = fixed_record()
    train, sources = rec["config"]["train"], rec["config"]["sources"]["train"]
    assert TRAIN_DEFAULTS["warmup"] != 0.1 and "mixup" not in TRAIN_DEFAULTS
    for m in train:
        train[m]["warmup"], sources[m]["warmup"] = 0.1, "default"  # that run's default, not today's
        train[m]["mixup"], sources[m]["mixup"] = 0.2, "cli"  # an option archbench no longer has
        train[m]["label_smoothing"] = TRAIN_DEFAULTS["label_smoothing"]  # given, equal to today's default
        sources[m]["label_smoothing"] = "cli"
    md = render_report_markdown(rec)
    assert "| warmup |" not in md
    assert "| mixup | 0.2 (cli) | 0.2 (cli) | 0.2 (cli) |" in md
    assert f"| label_smoothing | {TRAIN_DEFAULTS['label_smoothing']} (cli) |" in md
    rows = [line.split(" |")[0] for line in md.splitlines() if line.startswith("| ")]
    assert rows.index("| label_smoothing") < rows.index("| mixup")  # the record's order
    # Models of merged runs whose defaults differ: the row shows, each value its own run's default.
    train["big"]["warmup"] = 0.3
    assert "| warmup | 0.1 | 0.3 | 0.1 |" in render_markdown(recipe_blocks(rec["config"], rec))


def test_incomplete_run_has_a_banner_and_no_claims_about_models_without_data():
    rec = incomplete_record()
    md = render_report_markdown(rec)
    head = md.split("## Bottom line")[0]
    assert "**Incomplete run**: 4 of 15 (model, seed) units finished" in head
    assert "No finished unit for cnn_bn, resnet_small and dct_cnn" in head
    assert "Missing seeds: cnn (1, 2)" in head
    assert "every other model" not in md
    assert "No claim is made about cnn_bn, resnet_small and dct_cnn" in md
    an = analyze(rec)
    assert set(an["ranked"]) == {"mlp", "cnn"}
    assert all({p["a"], p["b"]} <= {"mlp", "cnn"} for p in an["pairs"])


# --- compare: provenance and never overwriting a run ------------------------------------------

def _saved(tmp_path, rec):
    d = tmp_path / rec["name"]
    d.mkdir()
    (d / "results.json").write_text(json.dumps(rec))
    return str(d)


def test_compare_refuses_to_overwrite_an_existing_run(tmp_path, capsys):
    from archbench.cli import main

    a, b = fixed_record(), fixed_record()
    b["name"] = "other"
    dirs = [_saved(tmp_path, a), _saved(tmp_path, b)]
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "results.json").write_text("{}")
    assert main(["compare", *dirs, "--out", str(existing)]) == 2
    err = capsys.readouterr().err
    assert f"--out {existing} already exists and holds a run (results.json)" in err and "--force" in err
    assert (existing / "results.json").read_text() == "{}"
    assert main(["compare", *dirs, "--out", dirs[0], "--force"]) == 2
    assert "is one of the runs being compared" in capsys.readouterr().err
    assert json.loads((tmp_path / "fixed" / "results.json").read_text())["name"] == "fixed"
    assert main(["compare", *dirs, "--out", str(existing), "--force"]) == 0
    assert json.loads((existing / "results.json").read_text())["merged_from"] == ["fixed", "other"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", *dirs, "--out", str(empty)]) == 0


# --- plots -----------------------------------------------------------------------------------

def _figures(rec):
    import matplotlib

    from archbench.report.plots import STYLE, plot_jobs

    an = analyze(rec)
    out = {}
    for fname, _caption, build in plot_jobs(rec, an):
        with matplotlib.rc_context(STYLE):
            fig = build()
        if fig is not None:
            out[fname] = fig
    return out


def test_plots_are_readable_as_the_tables():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from archbench.report.plots import model_colors

    rec = mixed_conditions_record()
    figs = _figures(rec)
    colors = model_colors(rec)
    assert len(set(colors.values())) == len(colors)
    for fname, fig in figs.items():
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        box = fig.bbox
        drawn = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)  # every drawn artist, in pixels
        assert drawn.x0 >= box.x0 - 1 and drawn.x1 <= box.x1 + 1 and drawn.y0 >= box.y0 - 1 \
            and drawn.y1 <= box.y1 + 1, f"{fname}: something drawn lies outside the figure: {drawn} vs {box}"
    # one colour per model, the same in every plot that shows models
    lc = figs["learning_curves.png"].axes[0]
    assert {line.get_label().split(" ")[0]: line.get_color() for line in lc.get_lines()} == \
        {n: colors[n] for n in rec["models"]}
    pc = figs["per_class_accuracy.png"].axes[0]
    assert {c.get_label(): tuple(c.patches[0].get_facecolor()) for c in pc.containers} == \
        {n: tuple(colors[n]) for n in rec["models"]}
    # integer epoch ticks; accuracy in %, costs in the tables' units
    ticks = [t for t in lc.get_xticks() if lc.get_xlim()[0] <= t <= lc.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    labels = [ax.get_xlabel() for ax in figs["accuracy_vs_cost.png"].axes if ax.get_xlabel()]
    assert "peak training memory (MiB, log scale)" in labels
    assert "inference latency (batch 1, p50) (ms, log scale)" in labels  # resnet_small's p90 is 1.08 ms
    assert any(ax.get_ylabel() == "test accuracy, %" for ax in figs["accuracy_vs_cost.png"].axes)
    assert "test accuracy (%)" in [ax.get_title() for ax in figs["learning_curves.png"].axes]


def test_figures_are_laid_out_once_as_savefig_tight_would(tmp_path):
    """save_figure lays a figure out once for its PNG and SVG: the PNG is byte for byte what
    savefig(bbox_inches="tight") writes; the SVG the same picture, its size within a point or two."""
    import re

    import matplotlib

    from archbench.report.plots import PAD_INCHES, PNG_DPI, STYLE, confusion, save_figure

    rec = fixed_record()
    with matplotlib.rc_context(STYLE):
        save_figure(confusion(rec, "big"), tmp_path / "once.png")
        for suffix, dpi in ((".png", PNG_DPI), (".svg", "figure")):  # a colour bar and an equal-aspect image
            confusion(rec, "big").savefig(tmp_path / f"tight{suffix}", bbox_inches="tight", pad_inches=PAD_INCHES,
                                          dpi=dpi, metadata={"Date": None} if suffix == ".svg" else None)
    assert (tmp_path / "once.png").read_bytes() == (tmp_path / "tight.png").read_bytes()

    def size(svg):
        return [float(v) for v in re.search(r'viewBox="([^"]+)"', svg.read_text()).group(1).split()]

    once, tight = size(tmp_path / "once.svg"), size(tmp_path / "tight.svg")
    assert all(abs(a - b) <= 3 for a, b in zip(once, tight)), (once, tight)
    text = re.compile(r"<text[^>]*>([^<]*)</text>")
    assert text.findall((tmp_path / "once.svg").read_text()) == text.findall((tmp_path / "tight.svg").read_text())


def test_memory_measured_with_each_recipe_says_so():
    """Records whose measurements describe the step they measured (the
    trained recipe's precision, optimizer, batch) are compared under those
    conditions, per sample from the fitted line where batch sizes differ."""
    rec = mixed_conditions_record()
    for name, prec, opt in (("mlp", "fp32", "Adam"), ("cnn_bn", "bf16 autocast", "AdamW"),
                            ("resnet_small", "fp32", "AdamW")):
        meas = rec["models"][name]["measurements"]
        batch = meas["flops"]["train_step_batch_size"]
        meas["step"] = {"kind": "trained", "precision": prec, "optimizer": f"{opt} (torch.optim.{opt}, fused=True)",
                        "batch_size": batch}
        peak = meas["memory"]["train_step"]["peak_bytes"]
        meas["memory"]["per_sample"] = {"batch_sizes": [batch // 2, batch], "per_sample_bytes": 1000.0 * batch,
                                        "fixed_bytes": peak - 1000.0 * batch * batch}
    an = analyze(rec)
    assert an["models"]["cnn_bn"]["conditions"]["memory_precision"] == "bf16"
    assert an["axes"]["peak_memory"]["per_sample"]["cnn_bn"]["per_sample_bytes"] == 256_000
    md = render_report_markdown(rec)
    line = next(x for x in md.splitlines() if x.startswith("- **Peak training memory**"))
    assert "precisions differ (mlp fp32, cnn_bn bf16, resnet_small fp32)" in line
    assert "optimizers differ (mlp Adam, cnn_bn AdamW, resnet_small AdamW)" in line
    assert "does not reflect" not in line and "least: **mlp**" in line
    assert "| cnn_bn | batch 256, bf16, AdamW |" in md


def test_units_record_what_their_timings_ran_on():
    from archbench.env import host_snapshot, unit_host, usable_cpus

    host = unit_host(host_snapshot())
    assert host["usable_cpus"] == usable_cpus() >= 1 and host["torch_threads"] >= 1 and host["cpu"]
    for when in ("load_start", "load_end"):
        assert host[when] is None or (len(host[when]) == 3 and all(x >= 0 for x in host[when]))
    assert unit_host(None)["load_start"] is None  # no snapshot: unknown, not made up
