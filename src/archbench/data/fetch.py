"""Download a dataset from its mirrors with checksum verification.

Each file is streamed to a temporary file in the destination directory,
checked (SHA-256 of the decompressed payload where the registry knows it, which
is what the loader checks too: a mirror that recompresses, as Debian does, still
verifies; otherwise the upstream MD5 of the ``.gz`` bytes), fsynced, and only then
renamed to its final name. A failed or interrupted download never leaves a file under the
final name.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

from archbench.data.loader import user_cache_dir, verify_file
from archbench.data.registry import DatasetSpec, get_dataset_spec
from archbench.errors import DataError

CHUNK = 1 << 16


def _download(url: str, tmp, timeout: float, progress: Callable[[int, int | None], None] | None) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "archbench"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        total = resp.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        done = 0
        while True:
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            tmp.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
        if total is not None and done != total:
            raise DataError(f"{url}: connection closed after {done} of {total} bytes.")


def fetch_file(spec_file, mirrors, dest: Path, timeout: float = 60.0, progress=None) -> Path:
    """Fetch ``spec_file.name + '.gz'`` from the first mirror that serves a
    verifiable copy; return the final path. Raises DataError listing every
    attempt when none does."""
    final = dest / (spec_file.name + ".gz")
    attempts = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + spec_file.name + ".gz"
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec_file.name}.", suffix=".part", dir=dest)
        try:
            with os.fdopen(fd, "wb") as tmp:
                _download(url, tmp, timeout, progress)
                tmp.flush()
                os.fsync(tmp.fileno())
            raw = Path(tmp_name).read_bytes()
            try:
                payload = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as exc:
                raise DataError(f"{url}: the download is not valid gzip ({exc}).") from exc
            verify_file(raw, payload, spec_file, url)
            os.replace(tmp_name, final)
            _fsync_dir(dest)
            return final
        except urllib.error.HTTPError as exc:
            attempts.append(f"{url}: HTTP {exc.code} {exc.reason}")
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            if isinstance(exc, DataError):
                raise
            reason = getattr(exc, "reason", exc)
            attempts.append(f"{url}: {reason}")
        except DataError as exc:
            attempts.append(str(exc))
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    raise DataError(
        f"could not download {spec_file.name}.gz from any mirror:\n  - " + "\n  - ".join(attempts)
        + "\nCheck the network (or --mirror URL), or install the files by other means and pass --data-dir."
    )


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fetch_dataset(
    name: str | DatasetSpec = "fashion-mnist",
    dest: str | os.PathLike | None = None,
    mirrors: list[str] | tuple[str, ...] | None = None,
    timeout: float = 60.0,
    progress=None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Download every file of the dataset into ``dest`` (default: the user
    cache, which the loader searches). Files already present and verified are
    kept. Returns ``{role: path}``."""
    spec = get_dataset_spec(name) if isinstance(name, str) else name
    dest = Path(dest) if dest is not None else user_cache_dir(spec.name)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create destination directory {dest}: {exc.strerror or exc}.") from exc
    if not os.access(dest, os.W_OK):
        raise DataError(f"destination directory {dest} is not writable; choose another with --dest.")
    mirrors = tuple(mirrors) if mirrors else spec.mirrors
    if not mirrors:
        raise DataError(f"dataset {spec.name} has no download mirror; pass --mirror URL.")
    out: dict[str, Path] = {}
    for f in spec.files:
        existing = dest / (f.name + ".gz")
        if existing.is_file():
            try:
                raw = existing.read_bytes()
                verify_file(raw, gzip.decompress(raw), f, str(existing))
                out[f.role] = existing
                if log:
                    log(f"{existing}: present and verified")
                continue
            except (DataError, OSError, EOFError, zlib.error):
                if log:
                    log(f"{existing}: present but does not verify; downloading again")
        out[f.role] = fetch_file(f, mirrors, dest, timeout, progress)
        if log:
            log(f"{out[f.role]}: downloaded and verified")
    return out
