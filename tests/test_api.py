import pytest

import archbench


def test_compare_returns_a_result_that_tabulates_itself(tmp_path, fashion_dir):
    r = archbench.compare(["mlp", "cnn"], seeds=[0, 1], epochs=1, train_limit=512, test_limit=200,
                          data_dir=fashion_dir, device="cpu", out=str(tmp_path), name="api")
    assert r.run_dir == tmp_path / "api" and (r.run_dir / "report.html").exists()
    rows = {row["model"]: row for row in r.summary()}
    assert rows["mlp"]["params"] == 235_146 and rows["cnn"]["n"] == 2
    assert rows["cnn"]["accuracy_ci_low"] <= rows["cnn"]["accuracy_mean"] <= rows["cnn"]["accuracy_ci_high"]
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
