"""archbench's own errors.

Every error a user can cause is an :class:`ArchbenchError`: its message names
the input, the bad value, what was expected and how to fix it.  The CLI prints
the message (no traceback unless ``--debug``) and exits with the error's code.

Exit codes: 0 ok, 2 usage or configuration, 3 data, 4 runtime failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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


def read_toml(path: str | os.PathLike, what: str, error: type[ArchbenchError] = UsageError) -> dict:
    """Parse a TOML file, turning a missing or malformed file into ``error``
    naming ``what`` it was meant to be."""
    import tomllib
    from pathlib import Path

    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
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
