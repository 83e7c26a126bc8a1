"""A tiny progress bar on stderr for long CLI verbs (catch-up, audit, bulk import).

``progress(total, label)`` returns a :class:`Progress`: call it with the number of items
done so far (``bar(done)``, or ``bar(done, total)`` -- the ``progress(done, total)``
callback shape of :func:`ledger.audit.audit_log`), or use it as a context manager that
ends the line when the work ends::

    with progress(size, "auditing") as bar:
        for i, entry in enumerate(entries, 1):
            check(entry)
            bar(i)

Invariants:
* Nothing is written unless the stream is a terminal (and ``TERM`` is not ``dumb``): piped
  or redirected output, CI logs and tests see no bar and no stray carriage returns.
* ``NO_COLOR`` (any non-empty value, https://no-color.org) draws the bar without colour;
  colour is used only on a terminal and only without ``NO_COLOR``. (The carriage return
  and erase-to-end-of-line that redraw the bar are cursor control, not colour.)
* Redraws are throttled (``min_interval`` seconds) so a tight loop pays almost nothing;
  the first and the final state are always drawn.
* A bar never raises out of a write error: progress is advisory, the work is not.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TextIO

_BAR_MIN, _BAR_MAX = 10, 40
_GREEN, _RESET = "\x1b[32m", "\x1b[0m"


def wants_colour(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` may get ANSI colour: a terminal, and ``NO_COLOR`` unset or empty."""
    env = os.environ if environ is None else environ
    return _is_terminal(stream, env) and not env.get("NO_COLOR")


def _is_terminal(stream: TextIO, env: Mapping[str, str]) -> bool:
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError, OSError):  # closed or odd streams are not terminals
        return False
    return bool(tty) and env.get("TERM") != "dumb"


def _columns(stream: TextIO) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    # A fresh pseudo-terminal reports 0 columns until someone sets its size.
    return columns if columns > 0 else shutil.get_terminal_size((80, 24)).columns


class Progress:
    """A progress bar for ``total`` items (``None`` or 0: unknown total, a counter is shown).

    Build with :func:`progress`. Callable as ``bar(done)`` or ``bar(done, total)``; a context
    manager whose exit finishes the line. Silent when the stream is not a terminal.
    """

    def __init__(
        self,
        total: int | None,
        label: str,
        *,
        stream: TextIO | None = None,
        environ: Mapping[str, str] | None = None,
        min_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.stream: TextIO = sys.stderr if stream is None else stream
        self.label = label
        self.total = total if total and total > 0 else None
        self.done = 0
        self.enabled = _is_terminal(self.stream, env)
        self.colour = self.enabled and not env.get("NO_COLOR")
        self._min_interval = min_interval
        self._width = width
        self._clock = clock
        self._last_draw: float | None = None
        self._drawn = False
        self._closed = False

    def __call__(self, done: int, total: int | None = None) -> None:
        """Record that ``done`` items are done (of ``total``, if it changed) and maybe redraw."""
        if total is not None:
            self.total = total if total > 0 else None
        self.done = max(0, done)
        final = self.total is not None and self.done >= self.total
        now = self._clock()
        if final or self._last_draw is None or now - self._last_draw >= self._min_interval:
            self._draw(now)

    def advance(self, n: int = 1) -> None:
        """``n`` more items are done."""
        self(self.done + n)

    def close(self) -> None:
        """Draw the final state and end the line (once; nothing if never drawn or silent)."""
        if self._closed:
            return
        if self.enabled and self._drawn:
            self._draw(self._clock())
            self._write("\n")
        self._closed = True

    def line(self, width: int | None = None) -> str:
        """The bar's text as it would be drawn (no carriage return, no colour)."""
        return "".join(self._parts(width))

    def _parts(self, width: int | None) -> tuple[str, str, str]:
        """(text before the bar, the bar, text after it), cut to the terminal width."""
        cols = width or self._width or _columns(self.stream)
        limit = max(cols - 1, 1)  # never write into the last column: some terminals wrap there
        if self.total is None:
            return f"{self.label} {self.done}"[:limit], "", ""
        done = min(self.done, self.total)
        counts = f"] {done}/{self.total} {100 * done // self.total:3d}%"
        head = f"{self.label} ["
        size = max(_BAR_MIN, min(_BAR_MAX, limit - len(head) - len(counts)))
        filled = size * done // self.total
        bar = "#" * filled + "." * (size - filled)
        if len(head) + len(bar) + len(counts) > limit:  # a narrow terminal: cut, no colour
            return (head + bar + counts)[:limit], "", ""
        return head, bar, counts

    def _draw(self, now: float) -> None:
        if not self.enabled or self._closed:
            return
        self._last_draw = now
        head, bar, tail = self._parts(None)
        if self.colour and bar:
            bar = f"{_GREEN}{bar}{_RESET}"
        # \r back to column 0; \x1b[K clears what a longer earlier line left behind.
        self._write(f"\r{head}{bar}{tail}\x1b[K")
        self._drawn = True

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False  # the terminal went away: stay quiet from now on

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def progress(
    total: int | None, label: str, *, stream: TextIO | None = None, environ: Mapping[str, str] | None = None
) -> Progress:
    """A progress bar on ``stream`` (default stderr) for ``total`` items, named ``label``.

    It draws only when the stream is a terminal; see :class:`Progress`.
    """
    return Progress(total, label, stream=stream, environ=environ)


__all__ = ["Progress", "progress", "wants_colour"]
