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


# --------------------------------------------------------------------------- misbehaving mirrors (issue 29)

import contextlib  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402


@pytest.fixture
def raw_server():
    """A raw TCP server on 127.0.0.1 that answers every request with the bytes
    of ``server.replies[first path segment]`` (not HTTP unless those bytes are)."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.2)
    replies: dict[str, bytes] = {}
    stop = threading.Event()

    def answer(conn):
        with conn:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                got = conn.recv(4096)
                if not got:
                    return
                request += got
            path = request.split(b" ")[1].decode()
            with contextlib.suppress(OSError):
                conn.sendall(replies[path.split("/")[1]])

    def loop():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", replies
    stop.set()
    thread.join()
    sock.close()


BAD_REPLIES = {
    "long-header": (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 70_000 + b"\r\n\r\n", "over-long line"),
    "many-headers": (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n",
                     "got more than 100 headers"),
    "garbage-status": (b"HELLO THERE\r\n\r\n", "no valid HTTP status line"),
    "truncated": (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"\x1f\x8b" + b"x" * 500,
                  "truncated body: 502 of 5,000 bytes"),
    "truncated-chunk": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + b"x" * 300,
                        "closed the connection mid-response (truncated body"),
    "long-status": (b"HTTP/1.1 200 " + b"O" * 70_000 + b"\r\n\r\n", "over-long line"),
    "no-answer": (b"", "Remote end closed connection without response"),
}


@pytest.mark.parametrize("kind", sorted(BAD_REPLIES))
def test_a_misbehaving_mirror_is_a_named_error_and_the_next_mirror_is_tried(tiny, tmp_path, http_server,
                                                                            raw_server, kind):
    arrays, spec = tiny
    serve(http_server, arrays, prefix="/good")
    base, replies = raw_server
    replies[kind], words = BAD_REPLIES[kind]
    dest = tmp_path / "d"
    with pytest.raises(DataError) as err:  # the misbehaving mirror alone: one named error, every file's attempt
        fetch_dataset(spec, dest, mirrors=[f"{base}/{kind}"])
    msg = str(err.value)
    assert f"{base}/{kind}/{NAMES['train_images']}.gz: " in msg and words in msg, msg
    assert "Traceback" not in msg and not list(dest.iterdir())
    # Followed by a good mirror: every file comes from it, verified.
    paths = fetch_dataset(spec, dest, mirrors=[f"{base}/{kind}", http_server.url + "/good"])
    assert load_dataset(spec, dest).test_labels.tolist() == arrays["test_labels"].tolist()
    assert len(paths) == 4 and sum(r.startswith("/good/") for r in http_server.requests) == 4
