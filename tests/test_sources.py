"""Every dataset source of archbench.data.load_data, made by the tests: .npz
(NHW, NHWC), CIFAR-10 batches (directory and .tar.gz), CIFAR-100, an image
folder (PNG, JPEG), scikit-learn's digits; bad data; the validation split;
the data card's numbers; the memory-mapped path."""

import gzip
import hashlib
import io
import json
import pickle
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from archbench.data import DIGITS, load_data, load_dataset, with_validation
from archbench.data.arrays import channel_stats
from archbench.data.storage import ENV_MEMORY_LIMIT, arrays_root, resolve_threshold
from archbench.data.stratify import held_out_count, split_keys, stratified_split
from archbench.errors import DataError, UsageError
from tests.conftest import write_files

OLD_CARD_KEYS = ("name", "files", "verified_sha256", "verified", "verification", "payload_sha256", "train_samples",
                 "test_samples", "image_shape", "classes")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Each test its own array cache and no memory threshold from outside."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(ENV_MEMORY_LIMIT, raising=False)
    monkeypatch.delenv("ARCHBENCH_DATA", raising=False)


def labelled(n, k, seed=0, shape=(8, 8), channels=None):
    """n uint8 images whose first pixel holds their index mod 256 (to follow
    them through splits) and labels cycling 0..k-1."""
    rng = np.random.default_rng(seed)
    full = (n, *shape) if channels is None else (n, *shape, channels)
    x = rng.integers(0, 256, full, dtype=np.uint8)
    x.reshape(n, -1)[:, 0] = np.arange(n) % 256
    return x, (np.arange(n) % k).astype(np.uint8)


def save_npz(path, compressed=False, **arrays):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def keras_npz(tmp_path, name="data.npz", n_train=30, n_test=12, k=3, channels=None, **extra):
    x_train, y_train = labelled(n_train, k, 0, channels=channels)
    x_test, y_test = labelled(n_test, k, 1, channels=channels)
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    arrays.update(extra)
    return save_npz(tmp_path / name, **arrays), arrays


# ------------------------------------------------------------------------------------------------------ npz


def test_npz_nhw_becomes_one_channel_nchw(tmp_path):
    path, a = keras_npz(tmp_path)
    ds = load_data(str(path))
    assert ds.train_images.shape == (30, 1, 8, 8) and ds.test_images.shape == (12, 1, 8, 8)
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    np.testing.assert_array_equal(ds.train_images.numpy()[:, 0], a["x_train"])
    np.testing.assert_array_equal(ds.test_labels.numpy(), a["y_test"])
    assert ds.classes == ("0", "1", "2") and ds.num_classes == 3 and ds.image_shape == (1, 8, 8)
    assert ds.spec.name == "data.npz" and ds.source == "npz" and ds.spec.mirror_symmetric is None
    assert ds.storage == "memory"
    card = ds.describe()
    assert set(OLD_CARD_KEYS) <= set(card) and card["files"] == {"npz": str(path)}
    assert card["verified"] is False and "no published checksum" in card["verification"]
    json.dumps(card, allow_nan=False)  # strict JSON


def test_npz_nhwc_keeps_each_pixel_in_place_and_honours_class_names(tmp_path):
    path, a = keras_npz(tmp_path, channels=3, class_names=np.array(["cat", "dog", "emu"]))
    ds = load_data(path)
    assert ds.image_shape == (3, 8, 8) and ds.classes == ("cat", "dog", "emu")
    x = a["x_train"]
    # (N, C, H, W)[i, c, y, x] is (N, H, W, C)[i, y, x, c]
    assert ds.train_images[4, 2, 1, 6] == x[4, 1, 6, 2] and ds.train_images[0, 0, 7, 3] == x[0, 7, 3, 0]
    np.testing.assert_array_equal(ds.train_images.numpy(), x.transpose(0, 3, 1, 2))
    assert ds.describe()["details"]["layout"] == {"train": "NHWC", "test": "NHWC"}


def test_npz_labels_as_a_column_and_compressed_files_give_the_same_data(tmp_path):
    path, a = keras_npz(tmp_path)
    column = save_npz(tmp_path / "col.npz", compressed=True, x_train=a["x_train"], y_train=a["y_train"][:, None],
                      x_test=a["x_test"], y_test=a["y_test"].astype(np.int32)[:, None])
    one, two = load_data(path), load_data(column)
    assert torch.equal(one.train_labels, two.train_labels) and torch.equal(one.test_images, two.test_images)
    # The identity is of the arrays, not of the file bytes or its name.
    assert one.identity == two.identity == one.describe()["identity_sha256"]


def test_identity_changes_when_one_pixel_changes(tmp_path):
    path, a = keras_npz(tmp_path)
    x = a["x_train"].copy()
    x[17, 3, 5] ^= 1
    other = save_npz(tmp_path / "other.npz", **{**a, "x_train": x})
    one, two = load_data(path), load_data(other)
    assert one.identity != two.identity
    assert one.sha256["train_images"] != two.sha256["train_images"]
    assert one.sha256["test_images"] == two.sha256["test_images"]


NPZ_BAD = [
    # (what, change to the arrays, field the message names, words of the fix)
    ("float images", lambda a: a.update(x_train=a["x_train"].astype(np.float32) / 255), "x_train",
     r"float32; images must be uint8.*\* 255"),
    ("float labels", lambda a: a.update(y_test=a["y_test"].astype(np.float64)), "y_test",
     r"float64; labels must be integers.*astype\(np.int64\)"),
    ("negative label", lambda a: a.update(y_train=np.where(np.arange(30) == 4, -1, a["y_train"]).astype(np.int8)),
     "y_train", "negative label -1"),
    ("label out of range", lambda a: a.update(class_names=np.array(["a", "b", "c"]),
                                              y_test=np.where(a["y_test"] == 2, 3, a["y_test"])), "y_test",
     r"label 3, out of range for 3 classes \(0..2\)"),
    ("counts disagree", lambda a: a.update(y_train=a["y_train"][:-1]), "y_train",
     "x_train holds 30 images but y_train holds 29 labels"),
    ("missing key", lambda a: a.pop("y_test"), "y_test", r"missing y_test.*np.savez"),
    ("NCHW not NHWC", lambda a: a.update(x_train=np.zeros((30, 3, 8, 8), np.uint8),
                                         x_test=np.zeros((12, 3, 8, 8), np.uint8)), "x_train",
     r"NHWC.*np.transpose\(x, \(0, 2, 3, 1\)\)"),
    ("mixed channel counts", lambda a: a.update(x_test=np.zeros((12, 8, 8, 3), np.uint8)), "x_test",
     r"mixed channel counts"),
    ("ragged", lambda a: a.update(x_test=np.zeros((12, 9, 8), np.uint8)), "x_test", "mixed image sizes"),
    ("empty split", lambda a: a.update(x_test=np.zeros((0, 8, 8), np.uint8), y_test=np.zeros(0, np.uint8)),
     "x_test", "empty"),
    ("empty class", lambda a: a.update(class_names=np.array(["a", "b", "c", "d"])), "y_train",
     r"no images of class 3 \('d'\)"),
    ("gap in labels", lambda a: a.update(y_train=np.where(a["y_train"] == 1, 2, a["y_train"])), "y_train",
     r"no images of class 1 .*renumber"),
    ("object class names", lambda a: a.update(class_names=np.array(["a", None, "c"], dtype=object)), "class_names",
     "object array.*pickle"),
    ("duplicate class names", lambda a: a.update(class_names=np.array(["a", "b", "a"])), "class_names", "twice"),
]


@pytest.mark.parametrize("what,change,field,fix", NPZ_BAD, ids=[b[0] for b in NPZ_BAD])
def test_bad_npz_is_a_named_error(tmp_path, what, change, field, fix):
    _, a = keras_npz(tmp_path)
    change(a)
    path = save_npz(tmp_path / "bad.npz", **a)
    with pytest.raises(DataError, match=fix) as err:
        load_data(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_unknown_names_paths_and_data_dir_misuse_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match=r"unknown dataset 'nope'.*fashion-mnist.*digits.*\.npz"):
        load_data("nope")
    path, _ = keras_npz(tmp_path)
    with pytest.raises(UsageError, match="--data-dir applies to registry datasets"):
        load_data(path, data_dir=tmp_path)
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(UsageError, match="not a dataset archbench can read"):
        load_data(tmp_path / "x.csv")
    with pytest.raises(UsageError, match="memory_limit"):
        load_data(path, memory_limit=-5)


# ---------------------------------------------------------------------------------------------------- CIFAR


def cifar_batch(n, k, seed, fine=False):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(i % k) for i in range(n)]
    if fine:
        return {b"data": data, b"fine_labels": labels, b"coarse_labels": [0] * n, b"filenames": [b"x"] * n}
    return {b"batch_label": b"batch", b"data": data, b"labels": labels, b"filenames": [b"x"] * n}


def write_cifar10(d, n=6, k=4):
    d.mkdir(parents=True)
    batches = {f"data_batch_{i}": cifar_batch(n, k, i) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(n, k, 9)
    batches["batches.meta"] = {b"label_names": [f"class{i}".encode() for i in range(k)], b"num_vis": 3072}
    for name, obj in batches.items():
        (d / name).write_bytes(pickle.dumps(obj, protocol=2))  # as published: protocol 2, bytes keys
    return d, batches


def tar_gz(src_dir, out, top="cifar-10-batches-py", extra=()):
    with tarfile.open(out, "w:gz") as tf:
        for p in sorted(src_dir.iterdir()):
            tf.add(p, arcname=f"{top}/{p.name}")
        for info, data in extra:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def test_cifar10_directory_and_tar_gz_give_the_same_data(tmp_path):
    d, b = write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_data(d)
    assert ds.train_images.shape == (30, 3, 32, 32) and ds.test_images.shape == (6, 3, 32, 32)
    assert ds.classes == ("class0", "class1", "class2", "class3") and ds.spec.mirror_symmetric is True
    # Row layout: 1024 red, 1024 green, 1024 blue, each 32x32 row-major; batches concatenated in order.
    row = b["data_batch_2"][b"data"][1]
    assert ds.train_images[7, 1, 2, 5] == row[1024 + 2 * 32 + 5]
    np.testing.assert_array_equal(ds.train_images.numpy()[7].ravel(), row)
    assert ds.train_labels.tolist() == sum((b[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    archive = tar_gz(d, tmp_path / "cifar-10-python.tar.gz")
    assert not (tmp_path / "cifar-10-batches-py.copy").exists()
    from_tar = load_data(archive)
    assert torch.equal(from_tar.train_images, ds.train_images) and torch.equal(from_tar.test_labels, ds.test_labels)
    assert from_tar.identity == ds.identity and from_tar.describe()["files"] == {"archive": str(archive)}
    assert ds.source == from_tar.source == "cifar"


def test_cifar100_uses_fine_labels(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    (d / "train").write_bytes(pickle.dumps(cifar_batch(10, 5, 0, fine=True), protocol=2))
    (d / "test").write_bytes(pickle.dumps(cifar_batch(5, 5, 1, fine=True), protocol=2))
    names = [b"apple", b"bear", b"cloud", b"dolphin", b"elephant"]
    (d / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": [b"x"]}, protocol=2))
    ds = load_data(d)
    assert ds.classes == ("apple", "bear", "cloud", "dolphin", "elephant")
    assert ds.train_labels.tolist() == [i % 5 for i in range(10)] and ds.image_shape == (3, 32, 32)
    assert "CIFAR-100" in ds.describe()["format"]
    ds2 = load_data(tar_gz(d, tmp_path / "c100.tar.gz", top="cifar-100-python"))
    assert torch.equal(ds2.train_images, ds.train_images)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_refuses_unsafe_archives_and_foreign_pickles(tmp_path, capsys):
    d, _ = write_cifar10(tmp_path / "c")
    link = tarfile.TarInfo("cifar-10-batches-py/readme")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(DataError, match=r"'cifar-10-batches-py/readme' is a link"):
        load_data(tar_gz(d, tmp_path / "link.tar.gz", extra=[(link, None)]))
    dots = tarfile.TarInfo("../escape")
    dots.size = 1
    with pytest.raises(DataError, match="unsafe path"):
        load_data(tar_gz(d, tmp_path / "dots.tar.gz", extra=[(dots, b"x")]))
    (d / "test_batch").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    refused = r"test_batch: not a CIFAR python batch.*refusing to load global (__builtin__|builtins).print"
    with pytest.raises(DataError, match=refused):
        load_data(d)
    assert "pwned" not in capsys.readouterr().out


def test_bad_cifar_batches_are_named_errors(tmp_path):
    d, b = write_cifar10(tmp_path / "c")
    bad = dict(b["data_batch_3"])
    bad[b"labels"] = bad[b"labels"][:-1]
    (d / "data_batch_3").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3: data holds 6 images but labels holds 5"):
        load_data(d)
    bad[b"labels"] = [0, 1, 2, 3, 4, 0]
    (d / "data_batch_3").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3: labels holds label 4, out of range for 4 classes"):
        load_data(d)
    bad[b"labels"], bad[b"data"] = b["data_batch_3"][b"labels"], bad[b"data"].astype(np.float32)
    (d / "data_batch_3").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3: 'data' is float32"):
        load_data(d)
    (d / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing data_batch_3"):
        load_data(d)


# --------------------------------------------------------------------------------------------- image folder


def write_folder(root, classes=("cat", "ant", "bee"), per=(3, 2), size=(5, 4), mode="L", fmt="PNG", seed=0):
    """train/<class>/ and test/<class>/ with ``per`` images per class; returns
    {split: [(class, array)]} in the order the loader must give."""
    rng = np.random.default_rng(seed)
    made = {}
    for split, n in zip(("train", "test"), per):
        made[split] = []
        for name in sorted(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                shape = (size[1], size[0]) + ((len(mode),) if mode != "L" else ())
                arr = rng.integers(0, 256, shape, dtype=np.uint8)
                path = root / split / name / f"img{i}.{fmt.lower()}"
                Image.fromarray(arr, mode).save(path, fmt)
                made[split].append((name, np.asarray(Image.open(path))))  # decoded as Pillow decodes it
    return made


def test_png_folder_classes_from_sorted_folder_names(tmp_path):
    made = write_folder(tmp_path / "shapes")
    (tmp_path / "shapes" / "train" / "ant" / "notes.txt").write_text("ignored")
    ds = load_data(tmp_path / "shapes")
    assert ds.classes == ("ant", "bee", "cat") and ds.image_shape == (1, 4, 5)  # W=5, H=4
    assert ds.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and ds.test_labels.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(ds.train_images.numpy()[:, 0], np.stack([a for _, a in made["train"]]))
    assert ds.spec.name == "shapes" and ds.source == "folder" and ds.spec.mirror_symmetric is None
    assert ds.describe()["details"]["ignored_entries"] == 1


def test_jpeg_rgb_folder_is_channels_first(tmp_path):
    made = write_folder(tmp_path / "rgb", mode="RGB", fmt="JPEG", size=(6, 6))
    ds = load_data(tmp_path / "rgb")
    assert ds.image_shape == (3, 6, 6)
    np.testing.assert_array_equal(ds.test_images.numpy(), np.stack([a for _, a in made["test"]]).transpose(0, 3, 1, 2))
    assert "JPEG" in ds.describe()["format"] and ds.describe()["details"]["pillow"]


def test_bad_folders_are_named_errors(tmp_path):
    root = tmp_path / "f"
    write_folder(root)
    odd = root / "train" / "bee" / "img9.png"
    Image.fromarray(np.zeros((4, 6), np.uint8), "L").save(odd)
    with pytest.raises(DataError, match=r"img9.png: ragged images: this one is 6x4.*Resize"):
        load_data(root)
    Image.fromarray(np.zeros((4, 5, 3), np.uint8), "RGB").save(odd)
    with pytest.raises(DataError, match=r"img9.png: mixed channel counts: mode RGB \(3 channels\).*L \(1\)"):
        load_data(root)
    Image.fromarray(np.zeros((4, 5), np.uint8), "L").convert("P").save(odd)
    with pytest.raises(DataError, match=r"img9.png: image mode 'P'.*convert"):
        load_data(root)
    odd.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"img9.png: not a readable image"):
        load_data(root)
    odd.unlink()
    (root / "test" / "dog").mkdir()
    with pytest.raises(DataError, match=r"different class folders \(only in test/: dog\)"):
        load_data(root)
    (root / "train" / "dog").mkdir()
    with pytest.raises(DataError, match=r"train/dog: empty class folder"):
        load_data(root)


# --------------------------------------------------------------------------------------------------- digits


def test_digits_split_scaling_and_card():
    sk = pytest.importorskip("sklearn.datasets")
    ds = load_data(DIGITS)
    raw = sk.load_digits()
    assert ds.image_shape == (1, 8, 8) and ds.classes == tuple("0123456789") and ds.spec.mirror_symmetric is False
    assert len(ds.train_labels) + len(ds.test_labels) == 1797 and len(ds.test_labels) == 359
    train_idx, test_idx = stratified_split(raw.target, 0.2, 0)
    scaled = (raw.images.astype(np.int64) * 255 + 8) // 16  # round half up of v * 255 / 16
    np.testing.assert_array_equal(ds.test_images.numpy()[:, 0], scaled[test_idx])
    np.testing.assert_array_equal(ds.train_labels.numpy(), raw.target[train_idx])
    v = raw.images[train_idx][:, None]
    assert set(zip(v[v == 16].tolist(), ds.train_images.numpy()[v == 16].tolist())) == {(16.0, 255)}
    pixels = ds.train_images.numpy()
    assert set(pixels[v == 8].tolist()) == {128} and set(pixels[v == 1].tolist()) == {16}
    counts = np.bincount(raw.target)
    assert ds.describe()["class_counts"]["test"] == [held_out_count(int(c), 0.2) for c in counts]
    card = ds.describe()
    assert card["split"]["test"]["fraction"] == 0.2 and card["split"]["test"]["stratified"] is True
    assert load_data(DIGITS).identity == ds.identity  # fixed split: same data every time


def test_digits_without_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match=r"pip install 'archbench\[datasets\]'"):
        load_data(DIGITS)


# --------------------------------------------------------------------------------------------------- split


def splitmix64_reference(seed, n):
    """SplitMix64 in plain Python integers: an independent check of split_keys."""
    m = (1 << 64) - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        return z ^ (z >> 31)

    base = mix((seed ^ 0x243F6A8885A308D3) & m)
    return [mix((base + (i + 1) * 0x9E3779B97F4A7C15) & m) for i in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2 ** 63 + 5])
def test_split_keys_match_a_pure_python_splitmix64(seed):
    assert split_keys(50, seed).tolist() == splitmix64_reference(seed, 50)


def test_split_rule_is_pinned():
    # The held-out indices of a fixed input: a change here changes every recorded split.
    labels = np.array([0, 1] * 10)
    keep, held = stratified_split(labels, 0.3, 0)
    keys = splitmix64_reference(0, 20)
    expect = sorted(sorted(range(c, 20, 2), key=lambda i: keys[i])[:3] for c in (0, 1))
    assert held.tolist() == sorted(expect[0] + expect[1])
    assert held.tolist() == [1, 3, 5, 10, 12, 16]


def test_validation_split_is_stratified_deterministic_disjoint_and_complete(tmp_path):
    x, y = labelled(200, 4, 0, shape=(4, 4))
    y = np.array([0] * 100 + [1] * 60 + [2] * 38 + [3] * 2, dtype=np.uint8)  # unbalanced, a class of 2
    path = save_npz(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8] % 4)
    ds = load_data(path)
    v = with_validation(ds, 0.25, seed=3)
    counts = v.describe()["class_counts"]
    assert counts["val"] == [25, 15, 10, 1] and counts["train"] == [75, 45, 28, 1]
    # Disjoint, union = the original, both in the original order (pixel 0 holds the index).
    train_ids, val_ids = v.train_images[:, 0, 0, 0].tolist(), v.val_images[:, 0, 0, 0].tolist()
    assert not set(train_ids) & set(val_ids) and sorted(train_ids + val_ids) == list(range(200))
    assert train_ids == sorted(train_ids) and val_ids == sorted(val_ids)
    assert v.val_labels.tolist() == [int(y[i]) for i in val_ids]
    assert torch.equal(v.test_images, ds.test_images)
    again = with_validation(ds, 0.25, seed=3)
    assert torch.equal(again.val_images, v.val_images) and again.identity == v.identity
    other = with_validation(ds, 0.25, seed=4)
    assert other.val_labels.bincount().tolist() == counts["val"] and not torch.equal(other.val_images, v.val_images)
    card = v.describe()
    assert card["val_samples"] == 51 and card["train_samples"] == 149
    assert card["split"]["val"]["fraction"] == 0.25 and card["split"]["val"]["seed"] == 3
    assert card["split"]["val"]["stratified"] is True and card["split"]["val"]["from"] == "train"
    assert v.identity != ds.identity and other.identity != v.identity
    assert ds.val_images is None and ds.describe()["val_samples"] == 0  # without it nothing changes
    assert "val" not in ds.describe()["class_counts"]


def test_validation_split_errors(tmp_path):
    path, _ = keras_npz(tmp_path)
    ds = load_data(path)
    for bad in (0, 1, 1.5, -0.1, True, "0.1"):
        with pytest.raises(UsageError, match="strictly between 0 and 1"):
            with_validation(ds, bad)
    with pytest.raises(UsageError, match="already has a validation split"):
        with_validation(with_validation(ds, 0.2), 0.2)
    singles = save_npz(tmp_path / "s.npz", x_train=np.zeros((3, 2, 2), np.uint8), y_train=np.array([0, 1, 2]),
                       x_test=np.zeros((1, 2, 2), np.uint8), y_test=np.array([0]))
    with pytest.raises(DataError, match="no class has two training images"):
        with_validation(load_data(singles), 0.5)
    one = with_validation(load_data(save_npz(tmp_path / "o.npz", x_train=np.zeros((3, 2, 2), np.uint8),
                                             y_train=np.array([0, 1, 1]), x_test=np.zeros((1, 2, 2), np.uint8),
                                             y_test=np.array([0]))), 0.9)
    assert one.train_labels.tolist() == [0, 1] and one.val_labels.tolist() == [1]  # each class keeps one image


# ----------------------------------------------------------------------------------------------------- card


def test_card_numbers_by_hand(tmp_path):
    # Six 1x2 grey images; classes 0,0,0,1,1,2 -> counts [3, 2, 1] before any split.
    x = np.array([[[0, 255]], [[51, 51]], [[102, 0]], [[255, 255]], [[0, 0]], [[204, 153]]], dtype=np.uint8)
    y = np.array([0, 0, 0, 1, 1, 2])
    path = save_npz(tmp_path / "h.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    card = load_data(path).describe()
    assert card["class_counts"] == {"train": [3, 2, 1], "test": [2, 0, 0]}
    assert card["balance"] == {"train": 1 / 3, "test": 0.0}
    values = np.array([0, 255, 51, 51, 102, 0, 255, 255, 0, 0, 204, 153]) / 255
    assert card["normalization"]["mean"] == [pytest.approx(values.mean(), abs=1e-15)]
    assert card["normalization"]["std"] == [pytest.approx(values.std(), abs=1e-15)]
    assert card["num_classes"] == 3 and card["train_samples"] == 6 and card["test_samples"] == 2
    # After a validation split the statistics are of the remaining training images only.
    v = with_validation(load_data(path), 0.5, seed=0)
    train = v.train_images.numpy().astype(np.float64) / 255
    vcard = v.describe()
    assert vcard["normalization"]["samples"] == len(train) < 6
    assert vcard["normalization"]["mean"] == [pytest.approx(train.mean(), abs=1e-15)]
    assert vcard["normalization"]["std"] == [pytest.approx(train.std(), abs=1e-15)]
    assert vcard["normalization"]["mean"] != card["normalization"]["mean"]
    assert sum(vcard["class_counts"]["train"]) + sum(vcard["class_counts"]["val"]) == 6


def test_channel_stats_match_numpy_per_channel():
    x = np.random.default_rng(5).integers(0, 256, (50, 3, 7, 9), dtype=np.uint8)
    mean, std = channel_stats(x)
    f = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, f.mean(axis=(0, 2, 3)), rtol=0, atol=1e-14)
    np.testing.assert_allclose(std, f.std(axis=(0, 2, 3)), rtol=0, atol=1e-14)


def test_registry_through_load_data_keeps_the_old_card(tiny, tmp_path):
    arrays, spec = tiny
    d = write_files(tmp_path / "idx", arrays)
    old, new = load_dataset(spec, d), load_data(spec, d)
    assert new.train_images.shape == (40, 1, 28, 28) and torch.equal(new.train_images, old.train_images)
    a, b = old.describe(), new.describe()
    assert {k: a[k] for k in OLD_CARD_KEYS} == {k: b[k] for k in OLD_CARD_KEYS}
    assert b["source"] == "registry" and b["format"] == "IDX" and b["storage"] == "memory"
    assert b["storage_detail"]["threshold_bytes"] > 0 and b["storage_detail"]["float32_bytes"] == 60 * 784 * 4
    # The identity of a file source is over the payload digests (plus classes, shape, operations).
    payload = gzip.decompress((d / "tiny-train-images.gz").read_bytes())
    assert b["payload_sha256"]["train_images"] == hashlib.sha256(payload).hexdigest()
    assert new.subset(10, 5).identity != new.identity and new.subset(None, None).identity == new.identity


# --------------------------------------------------------------------------------------------- memory-mapped


def assert_same_data(a, b):
    for role in ("train_images", "train_labels", "test_images", "test_labels", "val_images", "val_labels"):
        x, y = getattr(a, role), getattr(b, role)
        assert (x is None) == (y is None), role
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), role


def test_memmap_path_gives_identical_arrays_for_every_source(tmp_path, tiny):
    arrays, spec = tiny
    npz, _ = keras_npz(tmp_path, channels=3)
    write_folder(tmp_path / "folder", mode="RGB")
    cifar, _ = write_cifar10(tmp_path / "cifar")
    idx = write_files(tmp_path / "idx", arrays)
    for source, data_dir in ((npz, None), (tmp_path / "folder", None), (cifar, None), (spec, idx)):
        mem = load_data(source, data_dir)
        mapped = load_data(source, data_dir, memory_limit=1)
        assert mem.storage == "memory" and mapped.storage == "memmap"
        assert_same_data(mem, mapped)
        assert mapped.identity == mem.identity
        detail = mapped.describe()["storage_detail"]
        assert detail["threshold_bytes"] == 1 and detail["threshold_from"] == "memory_limit argument"
        assert detail["path"] == str(arrays_root() / mem.identity)
        assert mapped.backing["train_images"] == str(arrays_root() / mem.identity / "train_images.npy")
        on_disk = np.load(mapped.backing["test_images"], mmap_mode="r")
        np.testing.assert_array_equal(on_disk, mem.test_images.numpy())
        card_mem, card_map = mem.describe(), mapped.describe()
        for k in ("class_counts", "normalization", "payload_sha256", "identity_sha256"):
            assert card_mem[k] == card_map[k], k


def test_memmap_npz_is_extracted_once_and_pickles_as_paths(tmp_path, monkeypatch):
    npz, _ = keras_npz(tmp_path, n_train=300, channels=3)
    monkeypatch.setenv(ENV_MEMORY_LIMIT, "1000")
    first = load_data(npz)
    assert first.storage == "memmap" and first.describe()["storage_detail"]["threshold_from"] == f"${ENV_MEMORY_LIMIT}"
    stored = arrays_root() / first.identity / "train_images.npy"
    mtime = stored.stat().st_mtime_ns
    second = load_data(npz)
    assert stored.stat().st_mtime_ns == mtime and second.storage_info["path"] == first.storage_info["path"]
    assert len(list(arrays_root().glob("*"))) == 2  # the entry and sources/: no second copy
    blob = pickle.dumps(first)
    assert len(blob) < first.train_images.numel() // 4  # the paths travel, not the pixels
    back = pickle.loads(blob)
    assert back.storage == "memmap" and back.identity == first.identity
    assert_same_data(back, first)
    mem = pickle.loads(pickle.dumps(load_data(npz, memory_limit=10 ** 12)))
    assert_same_data(mem, first)


def test_validation_split_on_memmap_matches_memory(tmp_path):
    npz, _ = keras_npz(tmp_path, n_train=90, k=3)
    mem = with_validation(load_data(npz), 0.2, seed=7).subset(50, 5)
    mapped = with_validation(load_data(npz, memory_limit=1), 0.2, seed=7).subset(50, 5)
    assert mapped.storage == "memmap" and mapped.backing["val_images"].endswith("val_images.npy")
    assert_same_data(mem, mapped)
    assert mem.identity == mapped.identity
    assert_same_data(pickle.loads(pickle.dumps(mapped)), mem)
    assert mem.describe()["normalization"] == mapped.describe()["normalization"]


def test_memory_threshold_sources(monkeypatch):
    assert resolve_threshold(123).bytes == 123
    monkeypatch.setenv(ENV_MEMORY_LIMIT, "456")
    assert resolve_threshold().bytes == 456 and resolve_threshold(7).bytes == 7
    monkeypatch.setenv(ENV_MEMORY_LIMIT, "lots")
    with pytest.raises(UsageError, match=f"\\${ENV_MEMORY_LIMIT}='lots' is not a number of bytes"):
        resolve_threshold()
    monkeypatch.delenv(ENV_MEMORY_LIMIT)
    t = resolve_threshold()
    assert t.bytes is None or (t.bytes > 0 and "MemAvailable" in t.source or "physical" in t.source)


def test_real_fashion_mnist_through_load_data(fashion, fashion_dir):
    ds = load_data("fashion-mnist", fashion_dir)
    assert ds.train_images.shape == (60000, 1, 28, 28) and ds.storage == "memory"
    assert ds.train_images.is_contiguous() and torch.equal(ds.train_images, fashion.train_images)
    assert torch.equal(ds.test_labels, fashion.test_labels)
    card = ds.describe()
    assert {k: card[k] for k in OLD_CARD_KEYS} == {k: fashion.describe()[k] for k in OLD_CARD_KEYS}
    # The published per-pixel statistics of Fashion-MNIST's training set: mean 0.2860, std 0.3530.
    assert card["normalization"]["mean"][0] == pytest.approx(0.2860, abs=5e-5)
    assert card["normalization"]["std"][0] == pytest.approx(0.3530, abs=5e-5)
    assert card["class_counts"]["train"] == [6000] * 10 and card["balance"] == {"train": 1.0, "test": 1.0}


# ------------------------------------------------------------------------- review of issue #15: data-layer fixes


def test_fewer_than_two_classes_is_refused_at_load(tmp_path):
    _, a = keras_npz(tmp_path)
    zero = save_npz(tmp_path / "one.npz", **{**a, "y_train": np.zeros(30, np.uint8), "y_test": np.zeros(12, np.uint8)})
    with pytest.raises(DataError, match=r"one\.npz: y_train, y_test: only one class \(every label is 0\).*at least "
                                        r"two classes.*labelled 0\.\.K-1"):
        load_data(zero)
    named = save_npz(tmp_path / "named.npz", **{**a, "y_train": np.zeros(30, np.uint8),
                                                 "y_test": np.zeros(12, np.uint8), "class_names": np.array(["cat"])})
    with pytest.raises(DataError, match=r"named\.npz: class_names: only one class, 'cat', found.*at least two"):
        load_data(named)
    write_folder(tmp_path / "f", classes=("cat",))
    with pytest.raises(DataError, match=r"f/train: class folders: only one class, 'cat', found.*at least two.*"
                                        r"train/<class>/ and test/<class>/"):
        load_data(tmp_path / "f")


def test_a_stray_huge_label_is_a_named_error_not_a_class_count(tmp_path):
    _, a = keras_npz(tmp_path)
    y = a["y_train"].astype(np.int64)
    y[5] = 150_000  # beyond the 30 training images
    path = save_npz(tmp_path / "stray.npz", **{**a, "y_train": y})
    with pytest.raises(DataError, match=r"stray\.npz: y_train holds label 150,000, which would make 150,001 classes.*"
                                        r"more classes than the 30 training images.*0\.\.K-1.*4 distinct labels"):
        load_data(path)
    yt = a["y_test"].astype(np.int64)
    yt[0] = 10 ** 9  # would build a billion class names
    path = save_npz(tmp_path / "stray_test.npz", **{**a, "y_test": yt})
    with pytest.raises(DataError, match=r"y_test holds label 1,000,000,000"):
        load_data(path)
    # More training images than the label, but beyond what is inferred without names.
    n = 120_010
    x = np.zeros((n, 1, 1), np.uint8)
    y = (np.arange(n) % 3).astype(np.int64)
    y[7] = 120_000
    path = save_npz(tmp_path / "many.npz", x_train=x, y_train=y, x_test=x[:3], y_test=y[:3] * 0)
    with pytest.raises(DataError, match=r"y_train holds label 120,000.*more than the 100,000 classes.*class_names"):
        load_data(path)


def test_labels_counting_from_one_say_subtract_one(tmp_path):
    _, a = keras_npz(tmp_path)
    plus = {**a, "y_train": a["y_train"] + 1, "y_test": a["y_test"] + 1}
    path = save_npz(tmp_path / "from1.npz", **plus)
    with pytest.raises(DataError, match=r"from1\.npz: y_train, y_test run from 1 to 3 \(no label 0\).*Subtract 1 "
                                        r"\(y_train - 1 and y_test - 1\) so that they run 0\.\.2"):
        load_data(path)
    path = save_npz(tmp_path / "from1_named.npz", **plus, class_names=np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match=r"y_train holds label 3, out of range for 3 classes \(0\.\.2\)\. The labels "
                                        r"run from 1 to 3: subtract 1 \(y_train - 1\)"):
        load_data(path)
    # A gap (labels 0, 2, 3) is not "from 1": the general message, no subtraction advised.
    gap = save_npz(tmp_path / "gap.npz", **{**a, "y_train": np.where(a["y_train"] == 1, 3, a["y_train"])})
    with pytest.raises(DataError, match="renumber") as err:
        load_data(gap)
    assert "ubtract" not in str(err.value)


def data_info(capsys, path):
    from archbench.cli import main

    assert main(["data", "info", "--dataset", str(path)]) == 0
    return capsys.readouterr().out


def test_npz_extra_entries_are_noted_on_the_card_and_by_data_info(tmp_path, capsys):
    x_val, y_val = labelled(6, 3)
    path, _ = keras_npz(tmp_path, x_val=x_val, y_val=y_val)
    ds = load_data(path)
    card = ds.describe()
    assert card["details"]["extra_keys"] == ["x_val", "y_val"]
    assert len(ds.notes) == 1 and card["notes"] == ds.notes
    assert "2 entries ignored (x_val, y_val)" in ds.notes[0] and "--val-split" in ds.notes[0]
    assert with_validation(ds, 0.2).subset(10).describe()["notes"] == ds.notes  # kept through operations
    assert "note: data.npz: 2 entries ignored (x_val, y_val)" in data_info(capsys, path)
    plain, _ = keras_npz(tmp_path, name="plain.npz")
    assert load_data(plain).notes == [] and "note:" not in data_info(capsys, plain)


def test_files_ignored_in_an_image_folder_are_noted(tmp_path, capsys):
    root = tmp_path / "pets"
    write_folder(root)
    Image.fromarray(np.zeros((4, 5), np.uint8), "L").save(root / "train" / "cat" / "x.gif")
    (root / "train" / "bee" / "sub").mkdir()
    Image.fromarray(np.zeros((4, 5), np.uint8), "L").save(root / "train" / "bee" / "sub" / "y.png")
    (root / "test" / "ant" / "notes.txt").write_text("x")
    (root / "test" / "ant" / "Thumbs.db").write_bytes(b"x")
    (root / "train" / "ant" / ".DS_Store").write_bytes(b"x")
    ds = load_data(root)
    details = ds.describe()["details"]
    assert details["ignored_entries"] == 5
    assert details["ignored_kinds"] == {"image": 1, "folder": 1, "other": 2, "hidden": 1}
    assert ds.notes == [
        "pets: 1 image file in a format archbench does not read (e.g. train/cat/x.gif): only PNG, JPEG and BMP are "
        "read; convert it (e.g. with Pillow) to use it.",
        "pets: 1 folder not read (e.g. train/bee/sub): only train/ and test/, and the files directly inside "
        "train/<class>/ and test/<class>/, are read; subfolders of a class folder are not searched.",
        "pets: 2 other files ignored (e.g. test/ant/Thumbs.db, test/ant/notes.txt): not .png/.jpg/.jpeg/.bmp files.",
    ]
    out = data_info(capsys, root)
    assert "note: pets: 1 image file in a format archbench does not read (e.g. train/cat/x.gif)" in out
    assert "note: pets: 2 other files ignored" in out and ".DS_Store" not in out


def test_unreadable_image_names_the_file_not_a_stream(tmp_path):
    root = tmp_path / "f"
    write_folder(root)
    (root / "train" / "bee" / "img0.png").write_bytes(b"this is text, not a PNG")
    with pytest.raises(DataError, match=r"bee/img0\.png: not a readable image \(Pillow does not recognise") as err:
        load_data(root)
    assert "BytesIO" not in str(err.value) and " at 0x" not in str(err.value)


def test_data_info_prints_classes_balance_and_plural(tmp_path, capsys):
    write_folder(tmp_path / "pets", classes=("cat", "dog"), per=(3, 2))
    (tmp_path / "pets" / "train" / "dog" / "img2.png").unlink()
    out = data_info(capsys, tmp_path / "pets")
    lines = out.splitlines()
    assert "pets: 5 train / 4 test images of 1 x 4 x 5 (C x H x W), 2 classes" in lines
    assert "classes: 0 cat, 1 dog" in lines
    assert "train class counts: 3, 2" in lines and "test  class counts: 2, 2" in lines  # kept as they were
    assert "balance (smallest class / largest): train 0.67, test 1.00" in lines
    x, y = labelled(50, 25)
    path = save_npz(tmp_path / "many.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    out = data_info(capsys, path)
    assert "25 classes" in out
    assert "classes: " + ", ".join(map(str, range(20))) + ", … (5 more)" in out.splitlines()


NCHW_AMBIGUOUS = [(3, 4, 4), (4, 4, 3), (1, 5, 1), (2, 2, 2)]


@pytest.mark.parametrize("shape", NCHW_AMBIGUOUS, ids=[str(s) for s in NCHW_AMBIGUOUS])
def test_4d_arrays_that_read_two_ways_are_refused_unless_the_layout_says(tmp_path, shape):
    rng = np.random.default_rng(0)
    x_train, x_test = (rng.integers(0, 256, (n, *shape), dtype=np.uint8) for n in (30, 12))
    y_train, y_test = np.arange(30) % 3, np.arange(12) % 3
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    a, b, d = shape
    with pytest.raises(DataError, match=rf"x_train has shape \(30, {a}, {b}, {d}\), which reads two ways: NHWC "
                                        rf"\(Keras' layout\) as {a}x{b} \(HxW\) images of {d} channels?, or NCHW as "
                                        rf"{b}x{d} images of {a} channels?.*layout='NCHW'"):
        load_data(save_npz(tmp_path / "amb.npz", **arrays))
    nchw = load_data(save_npz(tmp_path / "nchw.npz", **arrays, layout="NCHW"))
    assert nchw.image_shape == shape
    np.testing.assert_array_equal(nchw.train_images.numpy(), x_train)
    assert nchw.describe()["details"]["layout"] == {"train": "NCHW", "test": "NCHW"}
    assert nchw.notes == []  # layout is read, not ignored
    mapped = load_data(tmp_path / "nchw.npz", memory_limit=1)  # the streamed path to the cache agrees
    np.testing.assert_array_equal(mapped.test_images.numpy(), x_test)
    nhwc = load_data(save_npz(tmp_path / "nhwc.npz", **arrays, layout=np.array(["NHWC"])))
    assert nhwc.image_shape == (d, a, b)
    np.testing.assert_array_equal(nhwc.train_images.numpy(), x_train.transpose(0, 3, 1, 2))


def test_unambiguous_4d_and_3d_arrays_still_load_and_bad_layouts_are_named(tmp_path):
    for shape in ((32, 32, 3), (28, 28, 1), (5, 4, 4), (1, 1, 1)):
        x = np.zeros((6, *shape), np.uint8)
        ds = load_data(save_npz(tmp_path / "ok.npz", x_train=x, y_train=np.arange(6) % 2, x_test=x,
                                y_test=np.arange(6) % 2))
        assert ds.image_shape == (shape[2], shape[0], shape[1]), shape
    x = np.zeros((6, 3, 4, 4), np.uint8)
    path = save_npz(tmp_path / "bad.npz", x_train=x, y_train=np.arange(6) % 2, x_test=x, y_test=np.arange(6) % 2,
                    layout="CHW")
    with pytest.raises(DataError, match=r"bad\.npz: layout is .*'NHWC' or 'NCHW'"):
        load_data(path)
    path = save_npz(tmp_path / "bad2.npz", x_train=np.zeros((6, 8, 8, 3), np.uint8), y_train=np.arange(6) % 2,
                    x_test=np.zeros((6, 8, 8, 3), np.uint8), y_test=np.arange(6) % 2, layout="NCHW")
    with pytest.raises(DataError, match=r"bad2\.npz: x_train has shape \(6, 8, 8, 3\) but the file's layout says "
                                        r"NCHW"):
        load_data(path)


_LOAD_MAPPED = """
import sys
from archbench.data import load_data
ds = load_data(sys.argv[1], memory_limit=1)
print(ds.identity, ds.storage, int(ds.train_images.sum()), flush=True)
"""


def test_array_cache_keeps_one_entry_per_identity_and_evicts_nothing(tmp_path):
    paths = [keras_npz(tmp_path, name=f"d{i}.npz", n_train=30 + i)[0] for i in range(4)]
    idents = [load_data(p, memory_limit=1).identity for p in paths]
    assert [load_data(p, memory_limit=1).identity for p in paths] == idents  # a second load maps the same entry
    assert sorted(d.name for d in arrays_root().iterdir()) == sorted(idents) + ["sources"]
    for d in arrays_root().iterdir():  # no lock files, no temporary directories
        assert not d.name.startswith("."), d


def test_two_writers_of_one_entry_need_no_lock_the_first_rename_wins(tmp_path):
    from archbench.data.storage import CacheEntry, read_entry

    identity = "ab" * 32
    entries = [CacheEntry(64) for _ in range(2)]  # both started before either finished
    for value, entry in enumerate(entries):
        entry.save("labels", np.full(4, value, dtype=np.int64))
    assert [e.commit(identity, {}) for e in entries] == [arrays_root() / identity] * 2
    found = read_entry(identity)
    assert found is not None and found[1]["shapes"] == {"labels": [4]}
    np.testing.assert_array_equal(np.load(found[0] / "labels.npy"), np.zeros(4, np.int64))  # the first's copy
    assert [d.name for d in arrays_root().iterdir()] == [identity]  # the second's copy is gone


def test_processes_loading_one_dataset_at_once_share_one_entry(tmp_path):
    import os
    import subprocess

    npz, _ = keras_npz(tmp_path, n_train=300, channels=3)
    procs = [subprocess.Popen([sys.executable, "-c", _LOAD_MAPPED, str(npz)], env=dict(os.environ),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, [err for _, err in outs]
    mem = load_data(npz)
    assert {out.strip() for out, _ in outs} == {f"{mem.identity} memmap {int(mem.train_images.sum())}"}
    assert sorted(d.name for d in arrays_root().iterdir()) == [mem.identity, "sources"]
