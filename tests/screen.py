"""A command run in a pseudo-terminal, and the screen it leaves.

:func:`run_in_pty` runs a command with a pty of a given size as its
terminal; :func:`screen` replays what it wrote on a small terminal model
(printable characters, carriage return, line feed, backspace, cursor up and
down, erase in line, deferred wrap at the last column, scroll) and returns the
lines a user would read, scrolled-off lines included. It covers what progress
bars send; an escape sequence it does not know is kept visibly (``<ESC>[...``)
so that a test sees it instead of a silently clean screen.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import termios
import time

_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def run_in_pty(argv: list[str], env: dict[str, str], cols: int = 120, rows: int = 40,
               timeout: float = 600.0) -> tuple[int, bytes]:
    """(exit status, everything written to the terminal) of ``argv``."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin, stdout and stderr are the pty
        try:
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    out, deadline = bytearray(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), bytes(out)


def screen(raw: bytes, cols: int = 120, rows: int = 40) -> list[str]:
    """The lines on the terminal after ``raw``, scrolled-off lines first,
    trailing blanks removed."""
    text = raw.decode("utf-8", errors="replace")
    history: list[str] = []
    grid = [[" "] * cols for _ in range(rows)]
    r = c = 0
    wrap = False

    def line_feed() -> None:
        nonlocal r
        if r == rows - 1:
            history.append("".join(grid.pop(0)))
            grid.append([" "] * cols)
        else:
            r += 1

    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            m = _CSI.match(text, i)
            if m is None:
                raise AssertionError(f"unknown escape at {text[i:i + 12]!r}")
            arg, op = m.group(1), m.group(2)
            n = int(arg) if arg.isdigit() else (0 if op == "K" else 1)
            if op == "A":
                r, wrap = max(0, r - n), False
            elif op == "B":
                r, wrap = min(rows - 1, r + n), False
            elif op == "K" and n in (0, 2):
                for k in range(0 if n == 2 else c, cols):
                    grid[r][k] = " "
            elif op == "m":  # colours: no trace on the text
                pass
            else:
                grid[r][min(c, cols - 1)] = f"<ESC>[{arg}{op}"  # seen by a test as a stray sequence
            i = m.end()
            continue
        if ch == "\r":
            c, wrap = 0, False
        elif ch == "\n":
            line_feed()
            wrap = False
        elif ch == "\b":
            c, wrap = max(0, c - 1), False
        elif ch >= " ":
            if wrap:
                c, wrap = 0, False
                line_feed()
            grid[r][c] = ch
            if c == cols - 1:
                wrap = True
            else:
                c += 1
        i += 1
    lines = [ln.rstrip() for ln in history + ["".join(row) for row in grid]]
    while lines and not lines[-1]:
        lines.pop()
    return lines
