"""Adaptive window: a fixed window that tunes its own window toward a latency target.

The fixed window's one knob trades latency for batch size: a longer window gathers fuller
cohorts (more tokens per step and per expert, better throughput per GPU) and makes every
request wait longer for its first token. The right window depends on the traffic, which
changes; this policy finds it online. It watches the latency its requests actually get and
adjusts the window multiplicatively after every step that produced observations:

    worst = the largest latency observed in the step (TTFT of rows that emitted their first
            token, or end-to-end latency of rows that finished, per `metric`)
    worst > target               -> window *= decrease   (back off fast)
    worst < headroom * target    -> window *= increase   (probe for bigger batches slowly)
    otherwise                    -> unchanged
    window is kept within [min_window, max_window].

Latencies come from what the protocol already gives a policy: a request's arrival (from its
Request) and `now` at the update where a row emitted its first token (`num_generated == 1`) or
finished. The largest observation per step is what the controller follows, so it steers the
tail of the cohort (its oldest member), not the average. Under overload, latency is queueing
that no window can fix: the window then settles at min_window, which launches cohorts as soon
as a device frees up, the best a request-level batcher can do.

Everything else (cohorts, memory reservation, rejection) is the fixed window's.
"""

from __future__ import annotations

import attrs
import numpy as np

from ..core import Batch, Request
from .fixed_window import FixedWindow
from ..core.validators import positive_seconds


def _above_one(instance, attribute, value):
    if not value > 1:
        raise ValueError(f"{attribute.name} must be > 1, got {value!r}")


def _fraction(instance, attribute, value):
    if not 0 < value < 1:
        raise ValueError(f"{attribute.name} must be between 0 and 1 (exclusive), got {value!r}")


def _metric(instance, attribute, value):
    if value not in ("ttft", "e2e"):
        raise ValueError(f"{attribute.name} must be 'ttft' or 'e2e', got {value!r}")


@attrs.define
class AdaptiveWindow(FixedWindow):
    """A fixed window whose window is tuned online: shrunk when observed latency exceeds
    `target`, grown while it stays below `headroom` x target."""

    target: float = attrs.field(default=0.5, validator=positive_seconds)
    metric: str = attrs.field(default="ttft", validator=_metric)
    min_window: float = attrs.field(default=0.001, validator=positive_seconds)
    max_window: float = attrs.field(default=1.0, validator=positive_seconds)
    increase: float = attrs.field(default=1.2, validator=_above_one)
    decrease: float = attrs.field(default=0.5, validator=_fraction)
    headroom: float = attrs.field(default=0.8, validator=_fraction)
    name: str = attrs.field(default="adaptive-window", init=False)
    num_adjustments: int = attrs.field(default=0, init=False)
    _arrival: dict = attrs.field(factory=dict, init=False)  # id -> arrival, until it ends

    def __attrs_post_init__(self):
        parent = getattr(super(), "__attrs_post_init__", None)
        if parent is not None:
            parent()
        if self.min_window > self.max_window:
            raise ValueError(f"min_window ({self.min_window}) must not exceed max_window "
                             f"({self.max_window})")
        if not self.min_window <= self.window <= self.max_window:
            # The default window (0.05 s) is moved into a range the user narrowed; a window
            # the user chose outside it would be overridden without a word: refuse it. (A
            # window given as exactly 0.05 cannot be told from the default and is moved too.)
            if self.window != attrs.fields(type(self)).window.default:
                raise ValueError(f"window ({self.window}) must lie within [min_window, "
                                 f"max_window] = [{self.min_window}, {self.max_window}]: it "
                                 "is where the tuning starts; widen the range or move it")
            self.window = min(max(self.window, self.min_window), self.max_window)

    def add(self, request: Request, now: float) -> None:
        self._arrival[request.id] = request.arrival
        super().add(request, now)

    def abort(self, request_id: int) -> None:
        self._arrival.pop(request_id, None)
        # FixedWindow.abort leaves the request in _unchecked, and a later schedule() would
        # reject a request that is gone (reported; harmless to do here as well).
        self._unchecked = [r for r in self._unchecked if r.id != request_id]
        super().abort(request_id)

    def update(self, batch: Batch, result, now: float) -> None:
        super().update(batch, result, now)
        if self.metric == "ttft":
            seen = result.emitted & (result.num_generated == 1)
        else:
            seen = result.finished
        rows = batch.request_ids[seen]
        arrivals = [self._arrival[rid] for rid in rows.tolist() if rid in self._arrival]
        for rid in batch.request_ids[result.finished].tolist():
            self._arrival.pop(rid, None)
        if arrivals:
            self._adjust(now - min(arrivals))

    def _adjust(self, worst: float) -> None:
        if worst > self.target:
            factor = self.decrease
        elif worst < self.headroom * self.target:
            factor = self.increase
        else:
            return
        window = float(np.clip(self.window * factor, self.min_window, self.max_window))
        if window != self.window:
            self.window = window
            self.num_adjustments += 1

    def check_valid(self) -> None:
        super().check_valid()
        assert self.min_window <= self.window <= self.max_window, (
            f"window {self.window} outside [{self.min_window}, {self.max_window}]")
