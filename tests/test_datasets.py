"""Datasets known only by their upstream .gz MD5 (MNIST, KMNIST) and the
dataset option of runs."""

import gzip
import re
from dataclasses import replace

import pytest

from archbench.data import encode_idx, fetch_dataset, get_dataset_spec, list_datasets, load_dataset
from archbench.data.loader import PAYLOAD_SHA256, UPSTREAM_GZ_MD5
from archbench.data.registry import ROLES
from archbench.errors import DataError, UsageError
from archbench.resolve import load_experiment, resolve
from tests.conftest import NAMES, write_files
from tests.test_fetch import serve


def md5_only(spec):
    """The spec as the registry holds MNIST: no payload hash, only the .gz MD5."""
    return replace(spec, files=tuple(replace(f, sha256=None) for f in spec.files))


def test_gz_md5_verifies_the_unmodified_download_only(tiny, tmp_path):
    arrays, spec = tiny
    spec = md5_only(spec)
    d = write_files(tmp_path / "gz", arrays)  # gzip with mtime=0: the bytes the spec's MD5 was made from
    ds = load_dataset(spec, d)
    assert ds.verified and ds.verification == UPSTREAM_GZ_MD5
    assert ds.describe()["verification"] == UPSTREAM_GZ_MD5 and not ds.describe()["verified_sha256"]
    # A decompressed copy cannot be checked against a .gz checksum: refused, naming the ways out.
    raw = write_files(tmp_path / "raw", arrays, gz=False)
    with pytest.raises(DataError, match=r"decompressed copy.*--no-verify"):
        load_dataset(spec, raw)
    assert load_dataset(spec, raw, verify=False).train_labels.tolist() == arrays["train_labels"].tolist()
    # The same payload recompressed differently (as Debian does) has another MD5.
    name = NAMES["train_images"] + ".gz"
    (d / name).write_bytes(gzip.compress(gzip.decompress((d / name).read_bytes()), compresslevel=1, mtime=0))
    with pytest.raises(DataError, match="MD5 of the .gz file is [0-9a-f]{32}, expected the upstream"):
        load_dataset(spec, d)


def test_payload_hash_wins_where_known(tiny, tmp_path):
    arrays, spec = tiny
    ds = load_dataset(spec, write_files(tmp_path / "raw", arrays, gz=False))
    assert ds.verification == PAYLOAD_SHA256 and ds.describe()["verified_sha256"]


def test_fetch_checks_the_gz_md5(tiny, tmp_path, http_server):
    arrays, spec = tiny
    spec = md5_only(spec)
    for role, arr in arrays.items():  # serve exactly the bytes the MD5s describe
        http_server.routes[f"/ok/{NAMES[role]}.gz"] = gzip.compress(encode_idx(arr), mtime=0)
    paths = fetch_dataset(spec, tmp_path / "ok", mirrors=[http_server.url + "/ok/"])
    assert len(paths) == 4 and load_dataset(spec, tmp_path / "ok").verification == UPSTREAM_GZ_MD5
    serve(http_server, arrays, prefix="/bad", corrupt="test_labels")
    with pytest.raises(DataError, match="MD5 of the .gz file"):
        fetch_dataset(spec, tmp_path / "bad", mirrors=[http_server.url + "/bad/"])
    assert not (tmp_path / "bad" / (NAMES["test_labels"] + ".gz")).exists()


@pytest.mark.parametrize("name", ["mnist", "kmnist"])
def test_registry_entries_are_complete_and_consistent(name):
    spec = get_dataset_spec(name)
    assert name in list_datasets()
    assert [f.role for f in spec.files] == list(ROLES)
    n = {"train": 60000, "t10k": 10000}
    for f in spec.files:
        split = f.name.split("-")[0]
        per_item = 784 if "images" in f.role else 1
        assert f.nbytes == (16 if per_item == 784 else 8) + n[split] * per_item
        assert re.fullmatch(r"[0-9a-f]{32}", f.gz_md5) and f.sha256 is None
    assert len({f.gz_md5 for f in spec.files}) == 4
    assert spec.num_classes == 10 and len(set(spec.classes)) == 10
    assert spec.mirrors and all(m.endswith("/") and m.startswith("http") for m in spec.mirrors)
    assert not spec.mirror_symmetric
    assert get_dataset_spec("fashion-mnist").mirror_symmetric
    # MNIST's and KMNIST's files differ from Fashion-MNIST's (no copy-paste of checksums).
    fm = {f.gz_md5 for f in get_dataset_spec("fashion-mnist").files}
    assert not fm & {f.gz_md5 for f in spec.files}


def test_unknown_dataset_is_refused_at_entry():
    with pytest.raises(UsageError, match="unknown dataset 'cifar10'.*fashion-mnist.*kmnist.*mnist"):
        resolve({"models": ["mlp"], "dataset": "cifar10"})


def test_zoo_recipes_drop_flips_on_digits_and_explicit_flips_are_refused():
    on_fashion = resolve({"models": ["resnet_small"]}).train_config_for("resnet_small")
    assert on_fashion.augment_flip and on_fashion.tta_flip
    cfg = resolve({"models": ["resnet_small"], "dataset": "mnist"})
    on_mnist = cfg.train_config_for("resnet_small")
    assert not on_mnist.augment_flip and not on_mnist.tta_flip
    assert on_mnist.augment_crop == on_fashion.augment_crop  # the rest of the recipe stays
    assert cfg.sources["train"]["resnet_small"]["augment_flip"] == "default"
    assert any("resnet_small" in n and "mirror image" in n for n in cfg.notes)
    with pytest.raises(UsageError, match="model mlp: horizontal flips.*mnist.*augment_flip = false"):
        resolve({"models": ["mlp"], "dataset": "mnist", "augment_flip": True})


def test_run_dataset_option_reaches_the_study(tmp_path, monkeypatch, capsys):
    from archbench.cli import main

    # An unknown name is refused before anything runs, listing the known ones.
    assert main(["run", "--dataset", "nope", "--models", "mlp", "--out", str(tmp_path / "runs")]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    # A known one is looked up where it should be: nothing found -> the error names the dataset.
    monkeypatch.delenv("ARCHBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rc = main(["run", "--dataset", "kmnist", "--models", "mlp", "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0 and "kmnist" in err and "archbench data fetch" in err


def test_archbench_data_may_hold_one_folder_per_dataset(tiny, tmp_path, monkeypatch):
    from archbench.data import locate

    arrays, spec = tiny
    root = write_files(tmp_path / "all", arrays)
    monkeypatch.setenv("ARCHBENCH_DATA", str(root))
    assert locate(spec)["train_images"].parent == root  # no folder named after the dataset: the root
    sub = write_files(root / spec.name, arrays)
    assert locate(spec)["train_images"].parent == sub
    # Where a dataset is missing, the advice names the dataset to fetch.
    monkeypatch.delenv("ARCHBENCH_DATA")
    with pytest.raises(DataError, match="archbench data fetch --dataset kmnist"):
        locate("kmnist")


def test_dataset_given_over_an_experiment_file_drops_the_recipes_flips(tmp_path):
    exp = tmp_path / "e.toml"
    exp.write_text('dataset = "fashion-mnist"\n[[models]]\nname = "dct_cnn"\n')
    assert resolve(experiment=load_experiment(exp)).train_config_for("dct_cnn").tta_flip
    cfg = resolve({"dataset": "kmnist"}, experiment=load_experiment(exp))
    assert cfg.dataset == "kmnist"
    tc = cfg.train_config_for("dct_cnn")
    assert not tc.tta_flip and not tc.augment_flip and tc.tta_shift == 1
