import gzip
import hashlib
import http.server
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from archbench.data import DataFile, DatasetSpec, encode_idx
from archbench.data.loader import locate
from archbench.data.registry import FASHION_MNIST
from archbench.errors import DataError

# CPU arithmetic depends on the thread count, which "auto" fixes from the model and the usable cores: tests pin
# one thread so that their numbers do not depend on this machine's cores either (subprocesses inherit this).
# tests/test_threads.py tests the policy itself.
os.environ.setdefault("ARCHBENCH_THREADS", "1")
# Units side by side (--jobs auto) would start worker processes in every small test run: tests pin one job
# (tests/test_jobs.py tests the policy itself).
os.environ.setdefault("ARCHBENCH_JOBS", "1")

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
        if self.path not in self.server.no_length:  # else the body ends when the connection closes (HTTP/1.0)
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        delay = self.server.slow.get(self.path)
        if delay is None:
            self.wfile.write(body)
            return
        for i in range(0, len(body), 4096):  # a slow mirror: 4 KiB, then a pause
            try:
                self.wfile.write(body[i:i + 4096])
                self.wfile.flush()
            except OSError:
                return
            time.sleep(delay)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """A real HTTP server on 127.0.0.1; set ``server.routes[path] = bytes``
    (``server.slow[path] = seconds`` pauses after every 4 KiB; a path in
    ``server.no_length`` is served without a Content-Length)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.routes = {}
    server.slow = {}
    server.no_length = set()
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def write_synthetic_fashion(d: Path, n_train: int = 96, n_test: int = 40, seed: int = 0) -> Path:
    """Synthetic IDX files under Fashion-MNIST's names (use --no-verify):
    two separable classes, a bright top half or a bright bottom half."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)

    def images(n):
        y = rng.integers(0, 2, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, :14] += 150 * (1 - c)
            x[i, 14:] += 150 * c
        return x, y

    for split, n in (("train", n_train), ("t10k", n_test)):
        x, y = images(n)
        (d / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(encode_idx(x), mtime=0))
        (d / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(encode_idx(y), mtime=0))
    return d


@pytest.fixture
def synthetic_fashion(tmp_path, monkeypatch):
    """A small synthetic dataset under Fashion-MNIST's file names, run with
    --no-verify; the working directory is the test's tmp_path."""
    d = write_synthetic_fashion(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return d


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON (a strict parser rejects it)")


def strict_json(text: str):
    """json.loads that rejects NaN, Infinity and -Infinity, as strict parsers do."""
    return json.loads(text, parse_constant=_refuse_constant)


@pytest.fixture(scope="session", autouse=True)
def every_results_json_is_strict(tmp_path_factory):
    """After the session: every results.json written under the tests' temporary
    directories that is JSON at all is strict JSON (no bare NaN/Infinity).
    Files a test writes on purpose with NaN live under a folder named 'handmade'."""
    yield
    bad = []
    for path in Path(tmp_path_factory.getbasetemp()).rglob("results.json"):
        if "handmade" in path.parts or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
            json.loads(text)
        except (OSError, ValueError):
            continue  # not JSON at all: a test of broken input, not something archbench wrote
        try:
            strict_json(text)
        except ValueError as exc:
            bad.append(f"{path}: {exc}")
    assert not bad, "results.json that strict JSON parsers reject:\n" + "\n".join(bad)
