"""Progress of long work on the command line: a bar with an ETA on a terminal, one plain
line otherwise.

A bar redrawn with carriage returns is for a person watching a terminal; in a log file or a
CI job it is a hundred fragments glued into one line. So when the stream is not a terminal,
nothing is written until the work is done, and then one line saying what was done and how
long it took. The CLI reads the clock here; policies and engines never do.
"""

from __future__ import annotations

import time

ETA_AFTER_S = 2.0  # an ETA from the first second of work is mostly noise


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """`progress(done, total)` as work completes; `what` names the work ("simulating").

    is_terminal: draw the bar (default: whether `stream` is a terminal); otherwise write one
    line when done reaches total. clock: seconds, monotonic (tests pass a fake one)."""

    def __init__(self, stream, what: str = "simulating", *, is_terminal: bool | None = None,
                 clock=time.monotonic):
        if is_terminal is None:
            is_terminal = bool(getattr(stream, "isatty", lambda: False)())
        self.stream, self.what, self.is_terminal, self.clock = stream, what, is_terminal, clock
        self.start = clock()
        self.first_done: int | None = None  # work already done at the first call (reused)
        self.last_text, self.finished = "", False

    def phase(self, what: str) -> "Progress":
        """A fresh Progress for one phase of a longer job ("running" -> "running capacity
        searches"): each phase finishes its own bar, so the first phase's "done" does not
        silence the rest."""
        return Progress(self.stream, f"{self.what} {what}", is_terminal=self.is_terminal,
                        clock=self.clock)

    def eta(self, done: int, total: int) -> str:
        """'ETA 1m05s' from the rate so far, or '' while too early to say."""
        elapsed = self.clock() - self.start
        progressed = done - (self.first_done or 0)
        if elapsed < ETA_AFTER_S or progressed <= 0 or done >= total:
            return ""
        return f"ETA {_duration(elapsed / progressed * (total - done))}"

    def __call__(self, done: int, total: int) -> None:
        if self.first_done is None:
            self.first_done = done
        if self.finished:
            return
        if done >= total:
            self.finished = True
            took = _duration(self.clock() - self.start)
            if self.is_terminal:
                self._draw(done, total, f"done in {took}")
                self.stream.write("\n")
            else:
                self.stream.write(f"{self.what}: {done}/{total} done in {took}\n")
            self.stream.flush()
        elif self.is_terminal:
            self._draw(done, total, self.eta(done, total))

    def _draw(self, done: int, total: int, note: str) -> None:
        percent = 100 * done // max(total, 1)
        text = (f"\r  {self.what} [{'#' * (percent // 4):<25}] {percent:3d}% "
                f"({done}/{total}) {note}")
        if text != self.last_text:
            # Pad over a longer previous line (an ETA that got shorter).
            self.stream.write(text.ljust(len(self.last_text)))
            self.last_text = text
            self.stream.flush()
