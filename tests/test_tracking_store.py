"""--mlflow DIR as MLflow 3 users work: a directory (or file://) becomes a
SQLite store in it, an old file store is refused with the migration command,
and models are logged without MLflow's pickle warning on screen (the format is in a tag)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from archbench.errors import UsageError
from archbench.run.tracking import store_uri

ROOT = Path(__file__).resolve().parents[1]


def test_a_directory_or_file_uri_becomes_a_sqlite_store_in_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    d = tmp_path / "mlruns"
    uri, note = store_uri(str(d), tmp_path / "runs")
    assert uri == f"sqlite:///{d.resolve() / 'mlflow.db'}" and d.is_dir() and uri in note
    assert store_uri(d.as_uri(), tmp_path)[0] == uri
    assert store_uri("default", tmp_path / "runs") == (f"sqlite:///{(tmp_path / 'runs').resolve()}/mlflow.db", None)
    for given in ("sqlite:///x.db", "http://127.0.0.1:5000"):
        assert store_uri(given, tmp_path) == (given, None)
    old = tmp_path / "old"
    (old / "0").mkdir(parents=True)
    (old / "0" / "meta.yaml").write_text("name: Default\n")
    with pytest.raises(UsageError, match=r"file store.*mlflow migrate-filestore --source .*MLFLOW_ALLOW_FILE_STORE"):
        store_uri(str(old), tmp_path)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the user keeps MLflow's file store
    assert store_uri(str(old), tmp_path) == (str(old), None)


def test_mlflow_dir_logs_a_run_without_third_party_warnings(tmp_path, fashion_dir):
    pytest.importorskip("mlflow")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("MLFLOW_ALLOW_FILE_STORE", None)
    store = tmp_path / "mlruns"
    p = subprocess.run([sys.executable, "-m", "archbench", "run", "--models", "mlp", "--seeds", "0", "--epochs", "1",
                        "--train-limit", "320", "--test-limit", "100", "--no-timing", "--device", "cpu",
                        "--jobs", "1", "--data-dir", str(fashion_dir), "--out", str(tmp_path), "--name", "m",
                        "--mlflow", str(store)], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "pickle" not in p.stderr.lower() and "warning" not in p.stderr.lower(), p.stderr
    assert f"logging to sqlite:///{store.resolve() / 'mlflow.db'}" in p.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("archbench")
    assert exp.artifact_location == (store.resolve() / "mlflow-artifacts").as_uri()
    unit = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("archbench.model") == "mlp"]
    assert len(unit) == 1 and unit[0].data.tags["archbench.model_format"].startswith("mlflow.pytorch, pickle")
    assert "model" in {a.path for a in client.list_artifacts(unit[0].info.run_id)}


def test_a_malformed_uri_is_a_named_error(tmp_path):
    from archbench.errors import UsageError
    from archbench.run.tracking import store_uri

    with pytest.raises(UsageError, match=r"--mlflow 'http://\[::1' is not a URI"):
        store_uri("http://[::1", tmp_path)  # urllib raises ValueError on an unclosed IPv6 bracket
