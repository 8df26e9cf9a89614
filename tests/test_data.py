import gzip

import numpy as np
import pytest
import torch

from archbench.data import encode_idx, load_dataset, locate
from archbench.data.registry import FASHION_MNIST
from archbench.errors import DataError
from tests.conftest import NAMES, make_arrays, make_spec, write_files


def test_loads_gz_and_raw_and_checks_values(tiny, tmp_path):
    arrays, spec = tiny
    for gz in (True, False):
        d = write_files(tmp_path / f"d{gz}", arrays, gz=gz)
        ds = load_dataset(spec, d)
        assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
        assert ds.train_images.shape == (40, 1, 28, 28)  # (N, C, H, W): a channel axis on the IDX (N, H, W)
        np.testing.assert_array_equal(ds.train_images.numpy()[:, 0], arrays["train_images"])
        np.testing.assert_array_equal(ds.test_labels.numpy(), arrays["test_labels"])
        assert ds.verified


def test_search_order_data_dir_env_system_cache(tiny, tmp_path, monkeypatch):
    arrays, _ = tiny
    dirs = {k: write_files(tmp_path / k, arrays) for k in ("explicit", "env", "system", "cache")}
    spec = make_spec(arrays, system_dirs=[str(dirs["system"])])
    cache = tmp_path / "xdg"
    write_files(cache / "archbench" / spec.name, arrays)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("ARCHBENCH_DATA", str(dirs["env"]))
    assert locate(spec, dirs["explicit"])["train_images"].parent == dirs["explicit"]
    assert locate(spec)["train_images"].parent == dirs["env"]
    monkeypatch.delenv("ARCHBENCH_DATA")
    assert locate(spec)["train_images"].parent == dirs["system"]
    spec_nosys = make_spec(arrays, system_dirs=[str(tmp_path / "nowhere")])
    assert locate(spec_nosys)["train_images"].parent == cache / "archbench" / spec.name


def test_explicit_dir_missing_a_file_is_an_error_naming_it(tiny, tmp_path):
    arrays, spec = tiny
    d = write_files(tmp_path / "d", arrays)
    (d / (NAMES["test_labels"] + ".gz")).unlink()
    with pytest.raises(DataError, match="tiny-test-labels"):
        locate(spec, d)
    with pytest.raises(DataError, match="not a directory"):
        locate(spec, tmp_path / "absent")


def test_nothing_found_names_the_fixes(tiny, tmp_path):
    _, spec = tiny
    from dataclasses import replace

    spec = replace(spec, apt_package="dataset-tiny", mirrors=("http://127.0.0.1:9/",))
    with pytest.raises(DataError) as err:
        locate(spec)
    msg = str(err.value)
    assert "apt-get install dataset-tiny" in msg and "archbench data fetch" in msg and "--data-dir" in msg


def test_checksum_mismatch_is_rejected(tiny, tmp_path):
    arrays, spec = tiny
    bad = arrays["train_labels"].copy()
    bad[0] = (bad[0] + 1) % 10
    d = write_files(tmp_path / "d", arrays, overrides={"train_labels": encode_idx(bad)})
    with pytest.raises(DataError, match="SHA-256"):
        load_dataset(spec, d)
    # With verification off the data loads (deliberate use of other data).
    assert load_dataset(spec, d, verify=False).train_labels[0] == int(bad[0])


def test_labels_out_of_range_and_count_mismatch(tmp_path, monkeypatch):
    monkeypatch.delenv("ARCHBENCH_DATA", raising=False)
    arrays = make_arrays()
    arrays["test_labels"] = arrays["test_labels"].copy()
    arrays["test_labels"][3] = 10
    d = write_files(tmp_path / "a", arrays)
    with pytest.raises(DataError, match="label 10 out of range"):
        load_dataset(make_spec(arrays), d)
    arrays = make_arrays()
    arrays["train_labels"] = arrays["train_labels"][:-1]
    d = write_files(tmp_path / "b", arrays)
    with pytest.raises(DataError, match="40 images .* but 39 labels"):
        load_dataset(make_spec(arrays), d)


def test_corrupt_gzip_and_truncated_payload(tiny, tmp_path):
    arrays, spec = tiny
    d = write_files(tmp_path / "d", arrays)
    p = d / (NAMES["train_images"] + ".gz")
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DataError, match="gzip"):
        load_dataset(spec, d)
    payload = encode_idx(arrays["train_images"])[:-10]
    p.write_bytes(gzip.compress(payload))
    with pytest.raises(DataError, match="truncated"):
        load_dataset(spec, d, verify=False)


def test_subset_takes_first_samples(tiny, tmp_path):
    arrays, spec = tiny
    ds = load_dataset(spec, write_files(tmp_path / "d", arrays)).subset(7, 5)
    assert ds.train_images.shape == (7, 1, 28, 28) and ds.test_labels.shape == (5,)
    np.testing.assert_array_equal(ds.train_labels.numpy(), arrays["train_labels"][:7])


def test_real_fashion_mnist_verifies(fashion):
    assert fashion.verified
    assert fashion.train_images.shape == (60000, 1, 28, 28) and fashion.test_images.shape == (10000, 1, 28, 28)
    # Fashion-MNIST is balanced: 6,000 train and 1,000 test images per class.
    assert torch.bincount(fashion.train_labels).tolist() == [6000] * 10
    assert torch.bincount(fashion.test_labels).tolist() == [1000] * 10
    assert fashion.classes == FASHION_MNIST.classes and fashion.classes[9] == "Ankle boot"
