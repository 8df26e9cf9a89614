import pytest

import archbench


def test_compare_returns_a_result_that_tabulates_itself(tmp_path, fashion_dir):
    r = archbench.compare(["mlp", "cnn"], seeds=[0, 1], epochs=1, train_limit=512, test_limit=200,
                          data_dir=fashion_dir, device="cpu", out=str(tmp_path), name="api")
    assert r.run_dir == tmp_path / "api" and (r.run_dir / "report.html").exists()
    rows = {row["model"]: row for row in r.summary()}
    assert rows["mlp"]["params_trainable_count"] == 235_146 and rows["cnn"]["seeds_count"] == 2
    c = rows["cnn"]
    assert c["test_accuracy_ci_low_frac"] <= c["test_accuracy_mean_frac"] <= c["test_accuracy_ci_high_frac"]
    assert c["errors"] == "" and r.failures() == []
    html = r._repr_html_()
    assert html.startswith("<div>") and "<table>" in html and "235,146" in html
    assert "Bottom line:" in repr(r) and repr(r).rstrip().endswith("report.html")  # the answer, then where
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            r.to_dataframe()
    else:
        df = r.to_dataframe()
        assert list(df.index) == ["mlp", "cnn"]
        # The CSV's columns, units in the names, and the failures' reasons
        header = (r.run_dir / "tables" / "comparison.csv").read_text().splitlines()[0].split(",")
        assert ["model", *df.columns] == [*header, "errors"]


LAZY = """
from torch import nn


class Breaks(nn.Module):
    \"\"\"Builds, checks and starts to train; its fourth training step fails.\"\"\"

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)
        self.steps = 0

    def forward(self, x):
        if self.training:
            self.steps += 1
            if self.steps == 4:
                raise RuntimeError("boom in the fourth step")
        return self.fc(x.flatten(1))


def build():
    return Breaks()
"""


def test_compare_takes_an_experiment_file_and_warns_of_each_failed_unit_with_its_reason(tmp_path, fashion_dir,
                                                                                        monkeypatch):
    (tmp_path / "lazymod.py").write_text(LAZY)
    monkeypatch.syspath_prepend(str(tmp_path))
    exp = tmp_path / "exp.toml"
    exp.write_text(f'seeds = [0]\ntrain_limit = 256\ntest_limit = 100\ndata_dir = "{fashion_dir}"\n'
                   'models = ["mlp", "lazymod:build"]\n[train]\nepochs = 1\ndevice = "cpu"\n')
    with pytest.warns(archbench.UnitsFailedWarning, match=r"lazymod:build seed 0: RuntimeError: boom in the fourth"):
        r = archbench.compare(str(exp), jobs=1, timing=False, quiet=True, out=str(tmp_path), name="exp")
    assert r.record["config"]["models"] == ["mlp", "lazymod:build"] and r.record["config"]["train_limit"] == 256
    rows = {row["model"]: row for row in r.summary()}
    assert rows["mlp"]["errors"] == "" and rows["mlp"]["seeds_count"] == 1
    assert rows["lazymod:build"]["errors"].startswith("seed 0: RuntimeError: boom") and rows["lazymod:build"][
        "failed_units_count"] == 1
    assert [f["model"] for f in r.failures()] == ["lazymod:build"]


def test_compare_refuses_models_with_resume_and_neither():
    with pytest.raises(archbench.api.UsageError, match="not both"):
        archbench.compare(["mlp"], resume="runs/x")
    with pytest.raises(archbench.api.UsageError, match="needs models"):
        archbench.compare()


def test_profile_gives_the_numbers_of_the_command_line(tmp_path, capsys):
    import json

    from torch import nn

    from archbench.cli import main

    assert main(["profile", "mlp", "--no-timing", "--json", "--device", "cpu"]) == 0
    cli = json.loads(capsys.readouterr().out)
    p = archbench.profile("mlp", input_size=(1, 28, 28), timing=False, device="cpu")
    assert json.loads(json.dumps(p.record["layers"])) == cli["layers"]
    for k in ("params", "flops", "saved_size_bytes"):
        assert json.loads(json.dumps(p.measurements[k])) == cli["measurements"][k], k
    assert p.measurements["memory"]["train_step"]["peak_bytes"] > 0
    assert repr(p).startswith("archbench profile mlp") and p._repr_html_().startswith("<pre>")
    # torchinfo's use: an nn.Module and one sample's shape; the classes read from its output
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 5))
    q = archbench.profile(net, input_size=(3, 8, 8), timing=False, device="cpu")
    assert q.record["num_classes"] == 5 and q.measurements["params"]["trainable"] == 192 * 32 + 32 + 32 * 5 + 5
    assert [row["params"] for row in q.layers] == [0, 192 * 32 + 32, 0, 32 * 5 + 5]
    assert net[1].weight.grad is None  # a copy was measured
    with pytest.raises(archbench.api.UsageError, match="one sample's shape"):
        archbench.profile(net, input_size=(0, 8))
