"""Small things a new user meets first: the help's opening, short usage
errors, plurals, `archbench models` fitted to the terminal, a tie said as one."""

import copy

from archbench.cli import main
from archbench.report import analyze
from archbench.report.conclusions import bottom_line
from archbench.report.table import wrapped_table
from archbench.run.unit import _epochs
from tests.fixed_records import fixed_record


def test_help_opens_with_what_the_tool_does(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "only module" not in out and "Which neural-network architecture gives the most accuracy" in out


def test_a_bad_value_is_one_error_line_and_where_help_is_not_the_usage_block(capsys):
    assert main(["run", "--seeds", "0,,1"]) == 2
    err = capsys.readouterr().err
    assert "usage:" not in err and len(err.strip().splitlines()) == 2, err
    assert "seeds '0,,1' have an empty item" in err and "(see archbench run --help)" in err
    assert main(["run", "--seeds", "0,1,"]) == 2 and "empty item" in capsys.readouterr().err
    assert main(["run", "--jobs", "many"]) == 2 and "usage:" not in capsys.readouterr().err


def test_models_fit_the_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "90")
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 90 and any(line.startswith("cnn ") for line in lines)
    table = wrapped_table(("a", "long"), [("x", "word " * 30)], 40, wrap=(1,))
    assert max(map(len, table.splitlines())) <= 40 and table.count("word") == 30


def test_plurals_and_a_tie():
    assert _epochs(1) == "1 epoch" and _epochs(2) == "2 epochs"
    rec = fixed_record()
    del rec["models"]["big"]
    rec["models"]["twin"] = copy.deepcopy(rec["models"]["small"])
    first = bottom_line(analyze(rec), rec)[0]
    assert "**small** and **twin** tie, 0.00 pp apart" in first and "+0.00 pp over" not in first


def test_compare_places_its_run_as_run_does_with_name(tmp_path, capsys):
    import json

    for name in ("a", "b"):
        rec = fixed_record()
        rec["name"] = name
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(rec))
    out = tmp_path / "runs"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--name", "ab"]) == 0
    assert (out / "ab" / "results.json").exists() and (out / "ab" / "report.html").exists()
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), "--out", str(out), "--name", "x/y"]) == 2
    assert "a directory name without '/'" in capsys.readouterr().err
