"""Download a dataset from its mirrors with checksum verification.

Each file is streamed to a temporary file in the destination directory,
checked (SHA-256 of the decompressed payload where the registry knows it, which
is what the loader checks too: a mirror that recompresses, as Debian does, still
verifies; otherwise the upstream MD5 of the ``.gz`` bytes), fsynced, and only then
renamed to its final name. A failed or interrupted download never leaves a file under the
final name, and the temporary ``.part`` files of a download that was killed (kill -9, a
power cut) are removed by the next fetch into that directory. A download is capped at the
most bytes a ``.gz`` of the known payload size can take, and decompression at the payload
size. Files get the permissions the umask gives (not mkstemp's 0600).
"""

from __future__ import annotations

import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from archbench.data.loader import gunzip, user_cache_dir, verify_file
from archbench.data.registry import DataFile, DatasetSpec, get_dataset_spec
from archbench.data.storage import pid_alive
from archbench.errors import DataError, UsageError
from archbench.records import file_mode

CHUNK = 1 << 16
SCHEMES = ("http", "https", "ftp", "file")


def max_download_bytes(f: DataFile) -> int:
    """The most bytes a ``.gz`` of ``f``'s payload can take: deflate never
    grows data by more than 5 bytes per 16 KiB block plus a header and
    trailer; 1 % and 64 KiB of slack cover any encoder."""
    return f.nbytes + f.nbytes // 100 + (1 << 16)


def check_mirror(url: object) -> str:
    """``url`` if it is a usable base URL, else a UsageError naming it."""
    expect = ("expected a base URL such as https://host/path/ (http, https, ftp or file), e.g. "
              "--mirror http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/")
    if not isinstance(url, str) or not url.strip():
        raise UsageError(f"--mirror {url!r} is not a URL: {expect}.")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise UsageError(f"--mirror {url!r} is not a valid URL ({exc}): {expect}.") from None
    if parts.scheme not in SCHEMES or (parts.scheme != "file" and not parts.hostname):
        raise UsageError(f"--mirror {url!r} is not a usable URL: {expect}.")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise UsageError(f"--mirror {url!r} contains spaces or control characters: {expect}.")
    return url


def _download(url: str, tmp: IO[bytes], timeout: float, progress: Callable[[int, int | None], None] | None,
              limit: int | None = None) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "archbench"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        total = resp.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        too_big = f"{url}: more than {limit:,} bytes, the most the expected file can take; not the expected file."
        if limit is not None and total is not None and total > limit:
            raise DataError(too_big.replace("more than", f"{total:,} bytes announced, more than"))
        done = 0
        while True:
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            tmp.write(chunk)
            done += len(chunk)
            if limit is not None and done > limit:
                raise DataError(too_big)
            if progress:
                progress(done, total)
        if total is not None and done != total:
            raise DataError(f"{url}: the server closed the connection mid-response (truncated body: {done:,} of "
                            f"{total:,} bytes).")


def malformed_response(exc: http.client.HTTPException) -> str:
    """What was wrong with a response that http.client could not read, in words."""
    if isinstance(exc, http.client.IncompleteRead):
        got = f"{len(exc.partial):,} bytes read" if exc.partial else ""
        more = f"{exc.expected:,} more expected" if exc.expected else ""
        detail = ", ".join(x for x in (got, more) if x)
        return "the server closed the connection mid-response (truncated body" + (f": {detail})" if detail else ")")
    if isinstance(exc, http.client.LineTooLong):
        return f"the server sent an over-long line ({exc}); not an HTTP mirror that serves this file"
    if isinstance(exc, http.client.BadStatusLine):
        return f"the server sent no valid HTTP status line ({str(exc)[:80]!r})"
    return f"the server's response is not valid HTTP ({type(exc).__name__}: {str(exc)[:200]})"


def _part_prefix(f: DataFile) -> str:
    return f".{f.name}."


def remove_stale_parts(dest: Path, f: DataFile, log: Callable[[str], None] | None = None) -> int:
    """Remove ``f``'s ``.part`` files in ``dest`` that no running download owns
    (each names its process: ``.NAME.PID.XXXX.part``); return how many."""
    removed = 0
    prefix = _part_prefix(f)
    for part in dest.glob(f"{prefix}*.part"):
        owner = part.name[len(prefix):].split(".")[0]
        if owner.isdigit() and pid_alive(int(owner)):  # a download in progress (or this one)
            continue
        try:
            part.unlink()
            removed += 1
        except OSError:
            pass
    if removed and log:
        log(f"{dest}: removed {removed} unfinished download(s) of {f.name}.gz left by an interrupted fetch")
    return removed


def fetch_file(spec_file: DataFile, mirrors: Iterable[str], dest: Path, timeout: float = 60.0,
               progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Fetch ``spec_file.name + '.gz'`` from the first mirror that serves a
    verifiable copy; return the final path. Raises DataError listing every
    attempt when none does."""
    final = dest / (spec_file.name + ".gz")
    attempts = []
    for mirror in mirrors:
        url = check_mirror(mirror).rstrip("/") + "/" + spec_file.name + ".gz"
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f"{_part_prefix(spec_file)}{os.getpid()}.", suffix=".part",
                                            dir=dest)
        except OSError as exc:
            raise DataError(f"cannot write into {dest}: {exc.strerror or exc}; choose another --dest.") from exc
        try:
            with os.fdopen(fd, "wb") as tmp:
                _download(url, tmp, timeout, progress, max_download_bytes(spec_file))
                tmp.flush()
                os.fsync(tmp.fileno())
            raw = Path(tmp_name).read_bytes()
            payload = gunzip(raw, spec_file.nbytes, url, f"the size of the published {spec_file.name}")
            verify_file(raw, payload, spec_file, url)
            os.chmod(tmp_name, file_mode())
            os.replace(tmp_name, final)
            _fsync_dir(dest)
            return final
        except urllib.error.HTTPError as exc:
            attempts.append(f"{url}: HTTP {exc.code} {exc.reason}")
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            attempts.append(f"{url}: {reason}")
        except http.client.HTTPException as exc:  # a status line, header or body that breaks HTTP
            attempts.append(f"{url}: {malformed_response(exc)}")
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
    progress: Callable[[int, int | None], None] | None = None,
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
    mirrors = tuple(check_mirror(m) for m in mirrors) if mirrors else spec.mirrors
    if not mirrors:
        raise DataError(f"dataset {spec.name} has no download mirror; pass --mirror URL.")
    out: dict[str, Path] = {}
    for f in spec.files:
        remove_stale_parts(dest, f, log)
        existing = dest / (f.name + ".gz")
        if existing.is_file():
            try:
                raw = existing.read_bytes()
                verify_file(raw, gunzip(raw, f.nbytes, str(existing)), f, str(existing))
                out[f.role] = existing
                if log:
                    log(f"{existing}: present and verified")
                continue
            except (DataError, OSError):
                if log:
                    log(f"{existing}: present but does not verify; downloading again")
        out[f.role] = fetch_file(f, mirrors, dest, timeout, progress)
        if log:
            log(f"{out[f.role]}: downloaded and verified")
    return out
