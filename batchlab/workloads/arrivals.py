"""Arrival processes: when requests are sent.

`Poisson`, `Gamma`, `ConstantRate` and `ClosedLoop` each have `sample(rng, n)` -> arrival
times starting at 0; `ClosedLoop` also lays out users and think times. Every field is
validated: a bad value is a ConfigError naming the class and the field.
"""

from __future__ import annotations

import attrs
import numpy as np

from .checks import _cv, _fail, _float_if_real, _int_field, _rate, _seconds


# --- arrival processes ------------------------------------------------------------------
# Each has sample(rng, n) -> n increasing arrival times in seconds. The clock starts with the
# first request (time 0), so a run does not open with an idle gap that only measures luck.

def _times_from_gaps(gaps: np.ndarray) -> np.ndarray:
    times = np.cumsum(gaps)
    return times - times[0] if len(times) else times


@attrs.frozen
class Poisson:
    """Open loop, exponential inter-arrival times with mean 1/rate (requests per second)."""

    rate: float = attrs.field(converter=_float_if_real, validator=_rate)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return _times_from_gaps(rng.exponential(1.0 / self.rate, size=n))

    def describe(self) -> str:
        return f"poisson(rate={self.rate:g}/s)"


@attrs.frozen
class Gamma:
    """Open loop, gamma inter-arrival times with mean 1/rate and coefficient of variation cv.

    cv > 1 is burstier than Poisson (clumps and lulls), cv < 1 more regular, cv = 1 is Poisson.
    """

    rate: float = attrs.field(converter=_float_if_real, validator=_rate)
    cv: float = attrs.field(converter=_float_if_real, validator=_cv)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        shape = 1.0 / self.cv ** 2
        return _times_from_gaps(rng.gamma(shape, 1.0 / (self.rate * shape), size=n))

    def describe(self) -> str:
        return f"gamma(rate={self.rate:g}/s, cv={self.cv:g})"


@attrs.frozen
class ConstantRate:
    """Open loop, one request every 1/rate seconds exactly."""

    rate: float = attrs.field(converter=_float_if_real, validator=_rate)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.arange(n, dtype=np.float64) / self.rate

    def describe(self) -> str:
        return f"constant(rate={self.rate:g}/s)"


_THINK_KINDS = ("constant", "exponential")


def _think_kind(inst, attr, value):
    if value not in _THINK_KINDS:
        _fail(inst, attr, f"one of {', '.join(map(repr, _THINK_KINDS))}", value)


@attrs.frozen
class ClosedLoop:
    """Closed loop: `num_users` users, each sending its next request `think_time` seconds after
    its previous one finished (a chat user reading the answer). All users start at time 0.

    Request i belongs to user i % num_users, so the first num_users requests are each user's
    first (arrival 0, think 0) and the rest have arrival NaN: their send time depends on when
    the engine finishes the previous one. think="exponential" draws each think time from an
    exponential with mean think_time. ClosedLoop(1) is one local user.
    """

    num_users: int = attrs.field(**_int_field)
    think_time: float = attrs.field(default=0.0, converter=_float_if_real,
                                    validator=_seconds)
    think: str = attrs.field(default="constant", validator=_think_kind)

    def sample_layout(self, rng: np.random.Generator, n: int):
        """(arrival, user, think) for n requests, laid out as the class docstring says."""
        i = np.arange(n)
        first = i < self.num_users
        arrival = np.where(first, 0.0, np.nan)
        if self.think == "exponential" and self.think_time > 0:
            think = rng.exponential(self.think_time, size=n)
        else:
            think = np.full(n, self.think_time)
        think[first] = 0.0
        return arrival, (i % self.num_users).astype(np.int64), think

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.sample_layout(rng, n)[0]

    def describe(self) -> str:
        pause = "" if self.think_time == 0 else f", think={self.think_time:g}s {self.think}"
        return f"closed(users={self.num_users}{pause})"
