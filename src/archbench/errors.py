"""archbench's own errors.

Every error a user can cause is an :class:`ArchbenchError`: its message names
the input, the bad value, what was expected and how to fix it.  The CLI prints
the message (no traceback unless ``--debug``) and exits with the error's code.

Exit codes: 0 ok, 2 usage or configuration, 3 data, 4 runtime failure.
"""

from __future__ import annotations

import os

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_RUNTIME = 4


class ArchbenchError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_RUNTIME


class UsageError(ArchbenchError, ValueError):
    """A bad command-line value, model reference or configuration."""

    exit_code = EXIT_USAGE


class DataError(ArchbenchError):
    """Missing, corrupt, truncated or unverifiable dataset files."""

    exit_code = EXIT_DATA


class ModelError(UsageError):
    """A model name or ``module:callable`` that cannot be built or is unusable."""


class TrainingError(ArchbenchError):
    """A unit that failed while training (NaN loss, exception, out of memory)."""

    exit_code = EXIT_RUNTIME


MAX_TEXT_BYTES = 64 * 1024 * 1024  # an experiment file or model spec larger than this is not one


def path_error(path: object, what: str, exc: OSError, error: type[ArchbenchError] = UsageError) -> ArchbenchError:
    """``exc`` (from looking ``path`` up or opening it) as ``error``, naming
    ``what`` the path was meant to be and the fix."""
    import errno

    shown = str(path) if len(str(path)) <= 200 else f"{str(path)[:120]}...{str(path)[-60:]}"
    if exc.errno == errno.ENAMETOOLONG:
        return error(f"{what} {shown!r} is a path too long for this system ({len(str(path)):,} characters; a "
                     "name over 255 bytes, or a whole path over 4,096); give a shorter path.")
    if exc.errno == errno.ELOOP:
        return error(f"{what} {shown!r} is a symbolic link loop (too many levels of symbolic links); point the "
                     "link at a real file.")
    if exc.errno == errno.ENOENT:
        return error(f"{what} {shown!r} does not exist.")
    if exc.errno == errno.EISDIR:
        return error(f"{what} {shown!r} is a directory; give the path of a file.")
    return error(f"cannot read {what} {shown!r}: {exc.strerror or exc}; check it and its permissions.")


def path_exists(path: str | os.PathLike, what: str, error: type[ArchbenchError] = UsageError) -> bool:
    """Does ``path`` exist (symbolic links followed)? A path that cannot be
    looked up (too long, a symbolic link loop, an embedded NUL) is ``error``
    naming ``what`` it was meant to be, not an OSError."""
    import errno

    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise path_error(path, what, exc, error) from None
    except ValueError as exc:
        raise error(f"{what} {str(path)!r} is not a valid path ({exc}).") from None
    return True


def _kind(mode: int) -> str:
    import stat

    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: str | os.PathLike, what: str, error: type[ArchbenchError] = UsageError,
                  limit: int | None = None) -> int:
    """The size of ``path``, a regular file (symbolic links followed) of at
    most ``limit`` bytes; else ``error`` naming it: missing, a FIFO or device
    (reading would block or never end), a directory, too large, a path too
    long or a symbolic link loop."""
    import stat

    try:
        st = os.stat(path)
    except OSError as exc:
        raise path_error(path, what, exc, error) from None
    except ValueError as exc:  # an embedded NUL
        raise error(f"{what} {str(path)!r} is not a valid path ({exc}).") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {str(path)!r} is {_kind(st.st_mode)}, not a regular file; give the path of a file.")
    if limit is not None and st.st_size > limit:
        raise error(f"{what} {str(path)!r} is {st.st_size:,} bytes, more than the {limit:,} such a file can be; "
                    "give the right file.")
    return int(st.st_size)


def read_regular(path: str | os.PathLike, what: str, error: type[ArchbenchError] = UsageError,
                 limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of ``path``, opened only if it is a regular file of at most
    ``limit`` bytes (checked on the opened file: a FIFO is opened without
    waiting for a writer, and refused); else ``error`` naming it."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise path_error(path, what, exc, error) from None
    except ValueError as exc:
        raise error(f"{what} {str(path)!r} is not a valid path ({exc}).") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {str(path)!r} is {_kind(st.st_mode)}, not a regular file; give the path of a "
                        "file.")
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise path_error(path, what, exc, error) from None
    if len(data) > limit:
        raise error(f"{what} {str(path)!r} is larger than the {limit:,} bytes such a file can be; give the right "
                    "file.")
    return data


def read_toml(path: str | os.PathLike, what: str, error: type[ArchbenchError] = UsageError) -> dict:
    """Parse a TOML file, turning a missing, unreadable (not a regular file,
    too large) or malformed file into ``error`` naming ``what`` it was meant
    to be."""
    import tomllib
    from pathlib import Path

    path = Path(path)
    try:
        return tomllib.loads(read_regular(path, what, error).decode("utf-8"))
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} does not exist.") from None
    except IsADirectoryError:
        raise error(f"{what} {str(path)!r} is a directory; give the path of a TOML file.") from None
    except OSError as exc:
        raise error(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}; check its permissions.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} {str(path)!r} is not valid TOML: {exc}.") from exc
    except RecursionError:
        raise error(f"{what} {str(path)!r} nests arrays or tables too deeply to read; flatten it.") from None


class Interrupted(ArchbenchError):
    """The user stopped the run (Ctrl-C); finished units are saved."""

    exit_code = 130
