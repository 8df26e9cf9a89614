import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from archbench.data import DataFile, DatasetSpec, encode_idx
from archbench.data.loader import locate
from archbench.data.registry import FASHION_MNIST
from archbench.errors import DataError

NAMES = {"train_images": "tiny-train-images", "train_labels": "tiny-train-labels",
         "test_images": "tiny-test-images", "test_labels": "tiny-test-labels"}


def make_arrays(n_train=40, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def make_spec(arrays, name="tiny", system_dirs=(), mirrors=()):
    files = []
    for role, arr in arrays.items():
        payload = encode_idx(arr)
        files.append(DataFile(role, NAMES[role], len(payload), hashlib.sha256(payload).hexdigest(),
                              hashlib.md5(gzip.compress(payload, mtime=0)).hexdigest()))
    return DatasetSpec(name=name, files=tuple(files), classes=tuple(f"c{i}" for i in range(10)),
                       system_dirs=tuple(system_dirs), mirrors=tuple(mirrors))


def write_files(directory: Path, arrays, gz=True, overrides=None):
    directory.mkdir(parents=True, exist_ok=True)
    for role, arr in arrays.items():
        payload = (overrides or {}).get(role, encode_idx(arr))
        name = NAMES[role] + (".gz" if gz else "")
        (directory / name).write_bytes(gzip.compress(payload, mtime=0) if gz else payload)
    return directory


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A small synthetic IDX dataset made by the test, and its spec."""
    monkeypatch.delenv("ARCHBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    arrays = make_arrays()
    spec = make_spec(arrays)
    return arrays, spec


@pytest.fixture(scope="session")
def fashion_dir():
    """The real Fashion-MNIST (Debian's dataset-fashion-mnist, which `make test` installs)."""
    try:
        paths = locate(FASHION_MNIST)
    except DataError as exc:
        pytest.skip(f"real Fashion-MNIST not installed ({exc})")
    return Path(next(iter(paths.values()))).parent


@pytest.fixture(scope="session")
def fashion(fashion_dir):
    from archbench.data import load_dataset

    return load_dataset("fashion-mnist", fashion_dir)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.requests.append(self.path)
        body = self.server.routes.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """A real HTTP server on 127.0.0.1; set ``server.routes[path] = bytes``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.routes = {}
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()
