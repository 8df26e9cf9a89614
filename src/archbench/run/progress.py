"""The progress display: one, owned by the process that shows it.

Every unit's training loop asks a *factory* for a tqdm-like bar per epoch
(``update``, ``set_postfix_str``, ``close``); units in worker processes send
the same calls to the parent (:mod:`archbench.run.pool`), which opens its bars
here. Three displays, chosen by where the output goes:

- a terminal: a live tqdm bar per running unit (``position``: one line per
  side-by-side slot; no bar is left behind), labelled with model and seed,
  with one speed (tqdm's, averaged over the epoch), and below them, with
  units side by side, the run's own bar (units finished). A finished epoch becomes
  one plain line above the bars (loss, accuracy, the loop's measured speed);
  log lines (:func:`write`) go above the bars too, never into them;
- no terminal (CI, a log file): no live bars, one plain line per unit-epoch;
- a notebook: tqdm's widget bars where ipywidgets is installed, else the plain
  lines (never tqdm.auto's ``IProgress not found`` warning).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import IO, Any, TextIO

from tqdm import tqdm

# The live bar: one speed, tqdm's, averaged over the epoch (``smoothing=0``): a
# unit in a worker reports in batches, and an instantaneous rate of batches says nothing.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
# The run's bar (units side by side): finished units of all, elapsed time; no speed of its own.
RUN_FORMAT = "{desc}: {n_fmt}/{total_fmt} units finished |{bar}| [{elapsed}]"


def write(line: str, file: IO[str] | None = None) -> None:
    """One log line, above any live bars (tqdm clears them, prints, redraws them)."""
    tqdm.write(line, file=file if file is not None else sys.stderr)
    (file if file is not None else sys.stderr).flush()


def labelled(factory: Callable[..., Any] | None, ref: str, seed: int) -> Callable[..., Any] | None:
    """``factory`` whose bars name the model and the seed (``mlp seed 0 epoch 1/2``)."""
    if factory is None:
        return None

    def make(**kw: Any) -> Any:
        return factory(**{**kw, "desc": f"{ref} seed {seed} {kw.get('desc', '')}".rstrip()})
    return make


class LineBar:
    """A bar with no live display: when closed, one line (its label and its
    last postfix: loss, accuracy, speed)."""

    def __init__(self, emit: Callable[[str], None], desc: str = "", **_: Any):
        self.emit, self.desc, self.postfix, self.n, self.closed = emit, desc, "", 0, False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.emit(f"{self.desc}: {self.postfix}" if self.postfix else self.desc)


class LiveBar:
    """A tqdm bar on a terminal that leaves no trace: while it runs, one line
    at its ``position`` (label, percentage, images, elapsed/remaining, one
    speed, and the loop's running loss); closed, it clears its line and its
    summary is written above the bars as one plain line."""

    def __init__(self, file: IO[str], desc: str = "", total: int | None = None, unit: str = "it",
                 position: int | None = None, overall: bool = False, **_: Any):
        self.file, self.desc, self.postfix = file, desc, ""
        self.bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=not overall, position=position, leave=False,
                        file=file, dynamic_ncols=True, smoothing=0, mininterval=0.1,
                        bar_format=RUN_FORMAT if overall else BAR_FORMAT)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s
        self.bar.set_postfix_str(s, refresh=False)  # shown with the next update: no speed of its own

    def close(self) -> None:
        if self.bar.disable:  # closed already
            return
        self.bar.close()
        self.file.write("\r")  # tqdm leaves the cursor after a cleared lower bar's blanks
        if self.postfix:
            write(f"{self.desc}: {self.postfix}", self.file)


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _notebook_bar(desc: str = "", total: int | None = None, unit: str = "it", **_: Any) -> Any:
    from tqdm.notebook import tqdm as notebook_tqdm

    bar = notebook_tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=True, smoothing=0)

    def set_postfix_str(s: str = "", refresh: bool = True) -> None:
        if "img/s" in s:  # the epoch's summary carries the loop's speed: tqdm's goes
            bar.bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
        type(bar).set_postfix_str(bar, s, refresh)
    bar.set_postfix_str = set_postfix_str
    return bar


def progress_factory(quiet: bool, notebook: bool = False, file: IO[str] | None = None) -> Callable[..., Any] | None:
    """The bar factory for this process's display (None when ``quiet``); see the module docstring."""
    if quiet:
        return None
    if notebook:
        if _has_widgets():
            return _notebook_bar
        return lambda **kw: LineBar(lambda s: print(s, flush=True), **kw)
    out = file if file is not None else sys.stderr
    if not out.isatty():
        return lambda **kw: LineBar(lambda s: write(s, out), **kw)
    return lambda **kw: LiveBar(out, **kw)


@contextlib.contextmanager
def warnings_above_bars(out: IO[str] | None = None) -> Iterator[None]:
    """Python warnings shown while it lasts go through :func:`write`, above
    any live bars, instead of into them."""
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        write(warnings.formatwarning(message, category, filename, lineno, line).rstrip(), out)
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
