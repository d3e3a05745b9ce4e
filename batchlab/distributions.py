"""Length distributions and arrival processes: the parts a WorkloadSpec is made of.

Length distributions (`ConstantLength`, `UniformLength`, `LogNormalLength`, `EmpiricalLength`)
have `sample(rng, n)` -> int64 array of values >= 1, an analytic `mean` and `describe()`.
Arrival processes (`Poisson`, `Gamma`, `ConstantRate`, `ClosedLoop`) have `sample(rng, n)` ->
arrival times starting at 0; `ClosedLoop` also lays out users and think times.
Every field is validated: a bad value is a ConfigError naming the class and the field.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import attrs
import numpy as np

from .core.errors import ConfigError

# --- validation -------------------------------------------------------------------------
# attrs validators, so that every class checks its fields the same way and every message reads
# "Class.field must be ..., got value" -- the user sees at once what to change.

def _fail(inst, attr, what: str, value) -> None:
    # attr.alias is the name the user typed (LogNormalLength stores `mean` as mean_tokens)
    name = getattr(attr, "alias", None) or attr.name
    raise ConfigError(f"{type(inst).__name__}.{name} must be {what}, got {value!r}")


def _is_real(value) -> bool:
    # bool is an int to Python, but `rate=True` is a mistake, not 1.0
    return isinstance(value, Real) and not isinstance(value, bool)


def _positive(inst, attr, value):
    if not (_is_real(value) and math.isfinite(value) and value > 0):
        _fail(inst, attr, "a positive finite number", value)


def _non_negative(inst, attr, value):
    if not (_is_real(value) and math.isfinite(value) and value >= 0):
        _fail(inst, attr, "a finite number >= 0", value)


def _at_least_one(inst, attr, value):
    if not (_is_real(value) and math.isfinite(value) and value >= 1):
        _fail(inst, attr, "a finite number >= 1 (a length in tokens)", value)


def _positive_int(inst, attr, value):
    if not (isinstance(value, Integral) and not isinstance(value, bool) and value >= 1):
        _fail(inst, attr, "a positive integer", value)


def _optional_positive_int(inst, attr, value):
    if value is not None:
        _positive_int(inst, attr, value)


def _int_if_integral(value):
    """Let `UniformLength(1, 1e3)` mean what it says; anything else is left for the validator."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _float_if_real(value):
    return float(value) if _is_real(value) else value


_int_field = dict(converter=_int_if_integral, validator=_positive_int)


# --- length distributions ---------------------------------------------------------------
# Each has sample(rng, n) -> int64 array of values >= 1, an analytic `mean`, and describe().

@attrs.frozen
class ConstantLength:
    """Every request has exactly `n` tokens."""

    n: int = attrs.field(**_int_field)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.n, dtype=np.int64)

    @property
    def mean(self) -> float:
        return float(self.n)

    def describe(self) -> str:
        return f"const({self.n})"


@attrs.frozen
class UniformLength:
    """Uniform over the integers low..high, both included."""

    low: int = attrs.field(**_int_field)
    high: int = attrs.field(**_int_field)

    def __attrs_post_init__(self):
        if self.low > self.high:
            raise ConfigError(f"UniformLength.low must be <= high, got low={self.low}, "
                              f"high={self.high}; swap them")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.low, self.high + 1, size=n, dtype=np.int64)

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2

    def describe(self) -> str:
        return f"uniform({self.low}..{self.high})"


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@attrs.frozen
class LogNormalLength:
    """A lognormal with the given `mean` and coefficient of variation `cv` (of the underlying
    continuous distribution), rounded to the nearest integer and clipped to [1, max].

    Real prompt and output lengths are right-skewed like this (cv around 1-2 in public traces).
    cv=0 gives round(mean) every time. So `mean` (the property) is the mean of what sample()
    returns, which differs from the `mean` argument (kept as `mean_tokens`) when max clips
    the tail or many draws fall below one token.
    """

    mean_tokens: float = attrs.field(alias="mean", converter=_float_if_real,
                                     validator=_at_least_one)
    cv: float = attrs.field(converter=_float_if_real, validator=_non_negative)
    max: int | None = attrs.field(default=None, converter=_int_if_integral,
                                  validator=_optional_positive_int)

    @property
    def _sigma_mu(self) -> tuple[float, float]:
        sigma2 = math.log1p(self.cv ** 2)
        return math.sqrt(sigma2), math.log(self.mean_tokens) - sigma2 / 2

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        sigma, mu = self._sigma_mu
        x = np.rint(rng.lognormal(mu, sigma, size=n))
        # clip in float space first: a huge draw must not overflow the int64 cast
        x = np.clip(x, 1, self.max if self.max is not None else 2.0 ** 62)
        return x.astype(np.int64)

    @property
    def mean(self) -> float:
        """The mean of the rounded, clipped length R: E[R] = 1 + sum over k >= 1 of P(X >= k+.5).

        Summed term by term up to 1024 tokens (where rounding matters), beyond that by the
        midpoint rule, which is the lognormal's closed-form partial expectation.
        """
        sigma, mu = self._sigma_mu
        top = self.max if self.max is not None else math.inf
        if sigma == 0.0:
            return float(min(max(np.rint(self.mean_tokens), 1.0), top))

        def tail(t: float) -> float:   # P(X >= t)
            return 0.5 * math.erfc((math.log(t) - mu) / (sigma * math.sqrt(2.0)))

        def excess(a: float) -> float:   # E[(X - a)+]
            d2 = (mu - math.log(a)) / sigma
            return self.mean_tokens * _normal_cdf(d2 + sigma) - a * _normal_cdf(d2)

        head = int(min(top, 1024))
        total = 1.0 + math.fsum(tail(k + 0.5) for k in range(1, head))
        if top > head:
            total += excess(head) - (excess(top) if top < math.inf else 0.0)
        return total

    def describe(self) -> str:
        cap = f", max={self.max}" if self.max is not None else ""
        return f"lognormal(mean={self.mean_tokens:g}, cv={self.cv:g}{cap})"


def _length_tuple(values) -> tuple:
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError):
        return values  # left for the validator to name
    return tuple(arr.tolist()) if arr.ndim == 1 else values


@attrs.frozen
class EmpiricalLength:
    """Resample, with replacement, from observed lengths (e.g. a trace's prompt lengths)."""

    samples: tuple = attrs.field(converter=_length_tuple)
    _array: np.ndarray = attrs.field(init=False, eq=False, repr=False, hash=False)

    @samples.validator
    def _check(self, attr, values):
        if not isinstance(values, tuple) or len(values) == 0:
            raise ConfigError(f"EmpiricalLength.samples must be a non-empty list of token "
                              f"lengths, got {values!r}")
        for i, v in enumerate(values):
            is_int = (isinstance(v, int) and not isinstance(v, bool)) or (
                isinstance(v, float) and v.is_integer())
            if not is_int or v < 1:
                raise ConfigError(f"EmpiricalLength.samples[{i}] must be an integer >= 1, "
                                  f"got {v!r}")

    def __attrs_post_init__(self):
        object.__setattr__(self, "_array", np.asarray(self.samples, dtype=np.int64))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self._array[rng.integers(0, len(self._array), size=n)]

    @property
    def mean(self) -> float:
        return float(self._array.mean())

    def describe(self) -> str:
        return f"empirical(n={len(self._array)}, mean={self.mean:.1f})"


# --- arrival processes ------------------------------------------------------------------
# Each has sample(rng, n) -> n increasing arrival times in seconds. The clock starts with the
# first request (time 0), so a run does not open with an idle gap that only measures luck.

def _times_from_gaps(gaps: np.ndarray) -> np.ndarray:
    times = np.cumsum(gaps)
    return times - times[0] if len(times) else times


@attrs.frozen
class Poisson:
    """Open loop, exponential inter-arrival times with mean 1/rate (requests per second)."""

    rate: float = attrs.field(converter=_float_if_real, validator=_positive)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return _times_from_gaps(rng.exponential(1.0 / self.rate, size=n))

    def describe(self) -> str:
        return f"poisson(rate={self.rate:g}/s)"


@attrs.frozen
class Gamma:
    """Open loop, gamma inter-arrival times with mean 1/rate and coefficient of variation cv.

    cv > 1 is burstier than Poisson (clumps and lulls), cv < 1 more regular, cv = 1 is Poisson.
    """

    rate: float = attrs.field(converter=_float_if_real, validator=_positive)
    cv: float = attrs.field(converter=_float_if_real, validator=_positive)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        shape = 1.0 / self.cv ** 2
        return _times_from_gaps(rng.gamma(shape, 1.0 / (self.rate * shape), size=n))

    def describe(self) -> str:
        return f"gamma(rate={self.rate:g}/s, cv={self.cv:g})"


@attrs.frozen
class ConstantRate:
    """Open loop, one request every 1/rate seconds exactly."""

    rate: float = attrs.field(converter=_float_if_real, validator=_positive)

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
                                    validator=_non_negative)
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
