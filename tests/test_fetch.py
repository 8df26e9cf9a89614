import gzip

import pytest

from archbench.data import encode_idx, fetch_dataset, load_dataset
from archbench.errors import DataError
from tests.conftest import NAMES


def serve(server, arrays, prefix="/m1", corrupt=None):
    for role, arr in arrays.items():
        payload = encode_idx(arr)
        if role == corrupt:
            payload = payload[:-1] + bytes([payload[-1] ^ 0xFF])
        server.routes[f"{prefix}/{NAMES[role]}.gz"] = gzip.compress(payload)


def test_fetch_downloads_verifies_and_loads(tiny, tmp_path, http_server):
    arrays, spec = tiny
    serve(http_server, arrays)
    dest = tmp_path / "dest"
    paths = fetch_dataset(spec, dest, mirrors=[http_server.url + "/m1/"])
    assert sorted(p.name for p in paths.values()) == sorted(n + ".gz" for n in NAMES.values())
    assert sorted(p.name for p in dest.iterdir()) == sorted(n + ".gz" for n in NAMES.values())
    assert load_dataset(spec, dest).train_labels.tolist() == arrays["train_labels"].tolist()
    # A second fetch finds verified files and downloads nothing.
    n = len(http_server.requests)
    fetch_dataset(spec, dest, mirrors=[http_server.url + "/m1/"])
    assert len(http_server.requests) == n


def test_default_destination_is_the_cache_the_loader_searches(tiny, http_server):
    arrays, spec = tiny
    serve(http_server, arrays)
    fetch_dataset(spec, mirrors=[http_server.url + "/m1"])
    assert load_dataset(spec).verified


def test_corrupted_download_leaves_no_file(tiny, tmp_path, http_server):
    arrays, spec = tiny
    serve(http_server, arrays, corrupt="test_images")
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as err:
        fetch_dataset(spec, dest, mirrors=[http_server.url + "/m1"])
    assert "SHA-256" in str(err.value) and "tiny-test-images" in str(err.value)
    names = sorted(p.name for p in dest.iterdir())
    assert NAMES["test_images"] + ".gz" not in names
    assert not [n for n in names if n.endswith(".part")]


def test_404_falls_back_to_next_mirror(tiny, tmp_path, http_server):
    arrays, spec = tiny
    serve(http_server, arrays, prefix="/good")
    paths = fetch_dataset(spec, tmp_path / "d", mirrors=[http_server.url + "/missing", http_server.url + "/good"])
    assert len(paths) == 4
    assert any(r.startswith("/missing/") for r in http_server.requests)


def test_all_mirrors_failing_lists_every_attempt(tiny, tmp_path, http_server):
    _, spec = tiny
    with pytest.raises(DataError) as err:
        fetch_dataset(spec, tmp_path / "d", mirrors=[http_server.url + "/a", "http://127.0.0.1:9/b"])
    msg = str(err.value)
    assert "HTTP 404" in msg and "/a/" in msg and "127.0.0.1:9/b" in msg
    assert not list((tmp_path / "d").iterdir())


def test_truncated_response_is_rejected(tiny, tmp_path, http_server):
    arrays, spec = tiny
    serve(http_server, arrays)
    key = f"/m1/{NAMES['train_images']}.gz"
    http_server.routes[key] = http_server.routes[key][: len(http_server.routes[key]) // 2]
    with pytest.raises(DataError, match="gzip"):
        fetch_dataset(spec, tmp_path / "d", mirrors=[http_server.url + "/m1"])
    assert not (tmp_path / "d" / (NAMES["train_images"] + ".gz")).exists()
