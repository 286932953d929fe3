"""Progress output for long steps (synthesis, training, tuning, the emulated board's build).

On a terminal a task redraws one live line. Anywhere else (a CI log, a file, a pipe) a
task prints at most about `lines` lines: one each time another 1/`lines` of the total is
done (or, with no known total, every `every` seconds), then one summary line at the end.
A task that finishes within `quiet` seconds prints only its summary. So a log holds a few
lines per task, not one per batch or per downloaded package.

    with Progress("synthesize", total=n) as p:
        for ...:
            p.update(1, note=f"loss {loss:.3f}")
"""
from __future__ import annotations

import sys
import time


def is_terminal(stream=None) -> bool:
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """One task's progress on stderr. `update` is cheap: call it on every step."""

    def __init__(self, label: str, total: int | None = None, *, lines: int = 10, every: float = 60.0,
                 quiet: float = 0.0, stream=None, prefix: str = "  ", tty: bool | None = None):
        self.label, self.total = label, (max(int(total), 1) if total else None)
        self.lines, self.every, self.quiet = max(int(lines), 1), float(every), float(quiet)
        self.stream = stream or sys.stderr
        self.prefix = prefix
        self.tty = is_terminal(self.stream) if tty is None else tty
        self.n = 0
        self.note = ""
        self.t0 = self._last_print = time.monotonic()
        self._last_draw = 0.0
        self._next_step = 1  # the next fraction k/lines that prints a line (no terminal)
        self._printed = 0
        self._live = False
        self.closed = False

    # -- reporting -------------------------------------------------------------------
    def update(self, n: int = 1, note: str = "") -> None:
        self.n += n
        if note:
            self.note = note
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw >= 0.1 or (self.total and self.n >= self.total):
                self._draw(now)
            return
        if now - self.t0 < self.quiet:
            return
        due = False
        if self.total:
            step = int(self.lines * min(self.n, self.total) / self.total)
            if step >= self._next_step and self.n < self.total:  # the total itself: the summary says it
                self._next_step = step + 1
                due = True
        if not due and now - self._last_print >= self.every:
            due = True
        if due:
            self._line(self._text(now))
            self._last_print = now

    def log(self, message: str) -> None:
        """A line that must appear whatever the mode (a warning, a result): printed on its own
        line, the live line redrawn below it."""
        if self._live:
            self.stream.write("\r\033[K")
            self._live = False
        self._line(message, prefix="")
        if self.tty and not self.closed:
            self._draw(time.monotonic())

    def around(self, log):
        """`log` (a function printing a line to the same stream) made safe to call while the
        live line is shown: the line is cleared first and redrawn after."""
        def wrapped(message):
            if self._live:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self._live = False
            log(message)
            if self.tty and not self.closed and self.n:
                self._draw(time.monotonic())
        return wrapped

    def close(self, summary: str | None = None) -> None:
        """End the task with one line: `summary`, or the count and the time taken; with
        summary "" no line (the caller prints its own), the live line is just cleared."""
        if self.closed:
            return
        self.closed = True
        now = time.monotonic()
        text = summary if summary is not None else self._text(now, final=True)
        if self._live:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._live = False
        if text:
            self._line(text)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        elif not self.closed:
            self.closed = True
            if self._live:  # leave the terminal on a fresh line for the error message
                self.stream.write("\n")
                self.stream.flush()
        return False

    # -- formatting ------------------------------------------------------------------
    def _text(self, now: float, final: bool = False) -> str:
        secs = now - self.t0
        if self.total:
            count = f"{self.n}/{self.total}"
            if not final and self.n:
                left = secs / self.n * max(self.total - self.n, 0)
                count += f" ({100 * self.n // self.total}%, ~{left:.0f} s left)"
        else:
            count = f"{self.n}"
        done = "done " if final else ""
        note = f"  {self.note}" if self.note else ""
        return f"{self.label}: {done}{count} in {secs:.1f} s{note}"

    def _draw(self, now: float) -> None:
        self._last_draw = now
        if self.total:
            filled = int(30 * min(self.n, self.total) / self.total)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] "
        else:
            bar = ""
        self.stream.write(f"\r\033[K{self.prefix}{self.label} {bar}{self._text(now)[len(self.label) + 2:]}")
        self.stream.flush()
        self._live = True

    def _line(self, text: str, prefix: str | None = None) -> None:
        self.stream.write(f"{self.prefix if prefix is None else prefix}{text}\n")
        self.stream.flush()
        self._printed += 1
