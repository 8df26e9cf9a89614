"""Ctrl-C and SIGTERM: a stop request is never lost.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread
happens to be, and two places lose it: raised inside a ``__del__`` (tqdm's
progress bars have one) it is printed and ignored, and raised inside a C++
callback (``torch.save`` writing a checkpoint) it comes back as a
RuntimeError. So the handler installed here also *records* the request, and
the code that decides what happened -- the unit runner, the study, the CLI --
asks :func:`stop_requested` before calling anything a failure or a success.
SIGTERM gets the same handler (the CLI installs it): ``kill PID`` stops a run
the way Ctrl-C does, saving what finished, instead of killing it mid-write.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_requested: int | None = None   # the signal number of the first stop request
_depth = 0                      # nesting of stop_on_signals blocks


def _handler(signum: int, frame: FrameType | None) -> None:
    global _requested
    if _requested is None:
        _requested = signum
    raise KeyboardInterrupt


def stop_requested() -> int | None:
    """The signal (SIGINT or SIGTERM) of a stop request made inside a
    :func:`stop_on_signals` block, or None."""
    return _requested


def check_stop() -> None:
    """Raise KeyboardInterrupt if a stop was requested (even one whose
    KeyboardInterrupt was swallowed on its way up)."""
    if _requested is not None:
        raise KeyboardInterrupt


@contextmanager
def stop_on_signals(sigterm: bool = True) -> Iterator[None]:
    """For the block, SIGINT (and with ``sigterm`` SIGTERM) raise
    KeyboardInterrupt and record the request. Installed only in the main
    thread and only over Python's own defaults (an application's handler is
    left alone); the previous handlers are restored after. Nested blocks
    share one request; the outermost starts with none."""
    global _depth, _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    defaults = {signal.SIGINT: (signal.default_int_handler, _handler),
                signal.SIGTERM: (signal.SIG_DFL, _handler)}
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM) if sigterm else (signal.SIGINT,):
        current = signal.getsignal(sig)
        if current in defaults[sig]:
            previous[sig] = current
            signal.signal(sig, _handler)
    if _depth == 0:
        _requested = None
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        for sig, handler in previous.items():
            signal.signal(sig, handler)
