"""Exports people can take with them: CSV/LaTeX tables and the page for all runs."""

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from archbench.report import analyze, write_reports
from archbench.report.exports import tex_escape
from archbench.report.index import write_index
from tests.fixed_records import fixed_record
from tests.test_report import _chromium


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def num(text):
    return None if text == "" else float(text)


def test_csv_tables_read_back_equal_the_record(tmp_path):
    rec = fixed_record()
    rec["models"]["twin"]["units"].append({"seed": 2, "status": "failed", "error": "boom, with a comma"})
    paths = write_reports(rec, tmp_path, formats=["csv", "tex"])
    assert paths == {"tables": tmp_path / "tables"} and not (tmp_path / "report.md").exists()
    per_seed = read_csv(tmp_path / "tables" / "per_seed.csv")
    units = [(m, u) for m, e in rec["models"].items() for u in e["units"]]
    assert len(per_seed) == len(units)
    for row, (m, u) in zip(per_seed, units):
        assert row["model"] == m and int(row["seed"]) == u["seed"] and row["status"] == u["status"]
        if u["status"] == "ok":
            assert num(row["test_accuracy_frac"]) == u["test"]["accuracy"]  # exact: floats written with repr
            assert num(row["train_time_s"]) == u["timings"]["train_seconds"]
        else:
            assert row["test_accuracy_frac"] == "" and row["error"] == "boom, with a comma"
    an = analyze(rec)
    comp = {r["model"]: r for r in read_csv(tmp_path / "tables" / "comparison.csv")}
    for m, s in an["models"].items():
        assert num(comp[m]["test_accuracy_mean_frac"]) == s["accuracy"]["mean"]
        assert num(comp[m]["peak_train_memory_bytes"]) == s["costs"]["peak_memory"]
        assert int(comp[m]["failed_units_count"]) == len(s["failed"])
    costs = {r["model"]: r for r in read_csv(tmp_path / "tables" / "costs.csv")}
    for m, e in rec["models"].items():
        meas = e["measurements"]
        assert int(costs[m]["params_trainable_count"]) == meas["params"]["trainable"]
        assert num(costs[m]["latency_batch1_p50_s"]) == meas["speed"]["inference_latency_batch1"]["p50_seconds"]
        assert costs[m]["saved_onnx_bytes"] == ""  # not measured in this record: empty, not 0


def test_per_class_precision_recall_f1_against_a_confusion_matrix(tmp_path):
    rec = fixed_record()
    write_reports(rec, tmp_path, formats=["csv"])
    rows = read_csv(tmp_path / "tables" / "per_class.csv")
    y = np.array(rec["dataset"]["test_labels"])
    k = len(rec["dataset"]["classes"])
    for m, e in rec["models"].items():
        cms = []
        for u in e["units"]:
            p = np.array(u["test"]["predictions"])
            cm = np.zeros((k, k))
            np.add.at(cm, (y, p), 1)
            cms.append(cm)
        prec = np.mean([np.diag(c) / np.maximum(c.sum(0), 1) for c in cms], 0)
        recall = np.mean([np.diag(c) / c.sum(1) for c in cms], 0)
        f1 = np.mean([2 * np.diag(c) / (c.sum(0) + c.sum(1)) for c in cms], 0)
        got = [r for r in rows if r["model"] == m]
        assert [r["class"] for r in got] == rec["dataset"]["classes"]
        assert np.allclose([num(r["precision_frac"]) for r in got], prec, atol=1e-12)
        assert np.allclose([num(r["recall_frac"]) for r in got], recall, atol=1e-12)
        assert np.allclose([num(r["f1_frac"]) for r in got], f1, atol=1e-12)
        assert [int(r["support_count"]) for r in got] == np.bincount(y, minlength=k).tolist()


def test_latex_tables_are_paper_ready_booktabs_and_escaped(tmp_path):
    rec = fixed_record()
    rec["models"]["a_b&c%"] = rec["models"].pop("twin")
    write_reports(rec, tmp_path, formats=["tex"])
    tex = (tmp_path / "tables" / "comparison.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    head = tex.split("\\toprule")[1].split("\\midrule")[0].strip().splitlines()
    assert head[0] == "Model & Accuracy & 95\\,\\% CI & Seeds & Params & FLOPs/inf. & Peak mem. & Train time \\\\"
    assert head[1].split(" & ") == ["", "(\\%)", "(\\%)", "", "(k)", "(M)", "(MiB)", "(s) \\\\"]
    body = tex.split("\\midrule")[1].split("\\bottomrule")[0].strip().splitlines()
    assert len(body) == 3 and all(len(re.findall(r"(?<!\\)&", line)) == 7 for line in body)
    big = next(line for line in body if line.startswith("big &"))
    # percent with the interval; one unit per column, named in the header: 50,000 params in k, 2e6 FLOPs in M
    assert big.startswith("big & 90.50 & 78.0--96.2 & 2 & 50.0 & 2.00 & 3.81 & 4.15")
    assert next(line for line in body if line.startswith("a\\_b\\&c\\%"))
    costs = (tmp_path / "tables" / "costs.tex").read_text()
    for t in (tex, costs):
        cells = t.split("\\midrule")[1]
        assert not re.search(r"\d[eE][+-]?\d", cells), cells  # never a raw float like 5.522e-05
        assert "_" not in t.replace("\\_", "")
    assert "($\\mu$s)" in costs and "(KiB)" in costs and len(costs.splitlines()[5].split(" & ")) == 8
    assert not (tmp_path / "tables" / "per_seed.tex").exists()  # the wide tables stay as CSV
    assert tex_escape("50% of $x_1$ {a}") == r"50\% of \$x\_1\$ \{a\}"


def test_latex_tables_compile_in_a_minimal_document(tmp_path):
    import shutil

    engine = shutil.which("pdflatex")
    if engine is None:
        pytest.skip("no LaTeX engine (Debian: apt-get install texlive-latex-base texlive-latex-recommended)")
    write_reports(fixed_record(), tmp_path, formats=["tex"])
    doc = tmp_path / "tables" / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                   + "".join(f"\\begin{{table}}\\centering\n\\input{{{t}.tex}}\n\\end{{table}}\n"
                             for t in ("comparison", "costs")) + "\\end{document}\n")
    p = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=doc.parent,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:]
    assert (doc.parent / "doc.pdf").stat().st_size > 0
    assert "Overfull" not in p.stdout  # each fits the page's text width


def test_report_command_takes_formats(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(fixed_record()))
    p = subprocess.run([sys.executable, "-m", "archbench", "report", str(tmp_path), "--format", "md,csv"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "report.md").exists() and not (tmp_path / "report.html").exists()
    assert (tmp_path / "tables" / "costs.csv").exists() and not (tmp_path / "tables" / "costs.tex").exists()
    p = subprocess.run([sys.executable, "-m", "archbench", "report", str(tmp_path), "--format", "pdf"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "unknown report format(s) ['pdf']; choose from md, html, csv, tex" in p.stderr


def _runs(tmp_path):
    root = tmp_path / "runs"
    for name, accs, created in (("r1", None, "2026-11-20T10:00:00+00:00"),
                                ("r2", {"small": (0.7, 0.72)}, "2026-11-22T10:00:00+00:00"),
                                ("r3", {"big": (0.95, 0.96), "small": (0.6, 0.61)}, "2026-11-21T10:00:00+00:00")):
        rec = fixed_record(accs)
        rec["name"], rec["created"] = name, created
        if name == "r3":
            rec["models"]["small"]["units"] = rec["models"]["small"]["units"][:1]  # incomplete
        d = root / name
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(rec))
        write_reports(rec, d, plots=False, formats=["html"])
    (root / "broken").mkdir()
    (root / "broken" / "results.json").write_text("{not json")
    (root / "notarun").mkdir()
    return root


def test_index_lists_every_run_with_its_data(tmp_path):
    root = _runs(tmp_path)
    html = write_index(root)[0].read_text()
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)[1])
    assert [r["name"] for r in data["runs"]] == ["r1", "r2", "r3"]
    r3 = data["runs"][2]
    assert r3["report"] == "r3/report.html" and r3["complete"] is False and data["runs"][0]["complete"] is True
    assert {m["name"]: m["n"] for m in r3["models"]} == {"big": 2, "small": 1}
    assert data["skipped"] and data["skipped"][0].startswith("broken:")
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert "<script src" not in html and "<link" not in html  # self-contained


def test_index_command(tmp_path):
    root = _runs(tmp_path)
    p = subprocess.run([sys.executable, "-m", "archbench", "index", str(root)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert "3 runs; 1 unreadable" in p.stdout and (root / "index.html").exists()
    p = subprocess.run([sys.executable, "-m", "archbench", "index", str(tmp_path / "nope")], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2 and "is not a directory" in p.stderr


def _chrome(*args, tmp_path, profile):
    return subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / profile}", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.skipif(_chromium() is None, reason="no chromium on this machine (make test installs Debian's as root)")
def test_index_in_headless_chromium_sorts_selects_and_plots(tmp_path):
    root = _runs(tmp_path)
    url = write_index(root)[0].as_uri()
    shot = tmp_path / "index.png"
    p = _chrome("--enable-logging=stderr", "--v=0", "--window-size=1300,1400", f"--screenshot={shot}",
                url + "#sort=best:desc&select=r2,r3&cost=params", tmp_path=tmp_path, profile="p1")
    assert p.returncode == 0, p.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 20_000
    errors = [line for line in p.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()]
    assert not errors, errors
    dom = _chrome("--dump-dom", url + "#sort=best:desc&select=r2,r3&cost=params", tmp_path=tmp_path,
                  profile="p2").stdout
    runs_body = dom.split('<table id="runs">')[1].split("</table>")[0]
    # Sorted by best accuracy, highest first: r3 (big 95.5 %), r1 (big 90.5 %), r2 (small 71 %).
    assert re.findall(r'<tr data-run="(\w+)"', runs_body) == ["r3", "r1", "r2"]
    models_body = dom.split('<table id="models">')[1].split("</table>")[0]
    assert re.findall(r'<tr data-run="(\w+)" data-model="(\w+)"', models_body) == [
        ("r2", "small"), ("r3", "big"), ("r3", "small")]
    assert dom.count("<circle") == 3 and "trainable parameters (log scale)" in dom
    assert "(incomplete)" in runs_body
    # Another sort, by name ascending.
    dom = _chrome("--dump-dom", url + "#sort=name:asc", tmp_path=tmp_path, profile="p3").stdout
    body = dom.split('<table id="runs">')[1].split("</table>")[0]
    assert re.findall(r'<tr data-run="(\w+)"', body) == ["r1", "r2", "r3"]
    assert '<p id="none" class="muted" style="">No run selected.</p>' in dom or "No run selected." in dom


def test_plots_are_png_at_150_dpi_and_svg(tmp_path):
    import struct

    write_reports(fixed_record(), tmp_path, formats=["md"])
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert len(pngs) >= 4
    for png in pngs:
        data = png.read_bytes()
        i = data.index(b"pHYs")
        ppm_x, ppm_y, unit = struct.unpack(">IIB", data[i + 4:i + 13])
        assert unit == 1 and round(ppm_x * 0.0254) >= 150 and round(ppm_y * 0.0254) >= 150
        svg = png.with_suffix(".svg")
        assert svg.exists() and svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()


@pytest.mark.skipif(_chromium() is None, reason="no chromium on this machine (make test installs Debian's as root)")
def test_index_never_puts_two_test_sets_on_one_accuracy_axis_and_marks_limited_runs(tmp_path):
    root = tmp_path / "runs"
    for name, dataset, limit in (("fashion", "fashion-mnist", None), ("digits", "digits", 300),
                                 ("fashion2", "fashion-mnist", None)):
        rec = fixed_record()  # 400 test images each: the test sets differ by their dataset
        rec["name"] = name
        rec["dataset"].update(name=dataset, train_samples=1437 if limit else 60000)
        rec["config"]["train_limit"] = limit
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_text(json.dumps(rec))
    url = write_index(root)[0].as_uri()
    dom = _chrome("--dump-dom", url + "#select=fashion,digits,fashion2&cost=params", tmp_path=tmp_path,
                  profile="p1").stdout
    mixed = re.search(r'<p id="mixed" class="warn"[^>]*>(.*?)</p>', dom, re.S)
    assert mixed and "display: none" not in mixed.group(0)
    assert "digits, 400 test images" in mixed[1] and "fashion-mnist, 400 test images" in mixed[1]
    svgs = re.findall(r'<svg[^>]*data-test-set="([^"]*)"[^>]*>(.*?)</svg>', dom, re.S)
    assert sorted(t for t, _ in svgs) == ["digits, 400 test images", "fashion-mnist, 400 test images"]
    per_set = {t: body.count("<circle") for t, body in svgs}
    assert per_set == {"digits, 400 test images": 3, "fashion-mnist, 400 test images": 6}
    runs_body = dom.split('<table id="runs">')[1].split("</table>")[0]
    digits_row = re.search(r'<tr data-run="digits">(.*?)</tr>', runs_body, re.S)[1]
    assert "1,437 / 400" in digits_row and "(limited)" in digits_row
    assert "(limited)" not in re.search(r'<tr data-run="fashion">(.*?)</tr>', runs_body, re.S)[1]
    # Labels of one plot do not overlap (the two fashion runs put the same models at the same points).
    boxes = []
    for _, body in svgs:
        for x, y, text in re.findall(r'<text x="([\d.-]+)" y="([\d.-]+)" font-size="11" class="label">([^<]*)',
                                     body):
            boxes.append((float(x), float(y), 6.5 * len(text) + 4))
        for i, (x1, y1, w1) in enumerate(boxes):
            for x2, y2, w2 in boxes[i + 1:]:
                assert not (x1 < x2 + w2 and x2 < x1 + w1 and abs(y1 - y2) < 13), (boxes, body[:200])
        boxes.clear()
    # One test set: one plot, no warning.
    dom = _chrome("--dump-dom", url + "#select=fashion,fashion2", tmp_path=tmp_path, profile="p2").stdout
    assert len(re.findall(r"<svg[^>]*data-test-set", dom)) == 1 and 'id="scatter"' in dom
    assert re.search(r'<p id="mixed" class="warn" style="display: ?none;?"', dom), dom[:3000]
