"""Length distributions: how many prompt or output tokens a request has.

`ConstantLength`, `UniformLength`, `LogNormalLength` and `EmpiricalLength` each have
`sample(rng, n)` -> int64 array of values >= 1, an analytic `mean` and `describe()`. Every
field is validated: a bad value is a ConfigError naming the class and the field.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from ..core.errors import ConfigError
from .checks import (_at_least_one, _float_if_real, _int_field, _int_if_integral,
                     _non_negative, _optional_positive_int)


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


@attrs.frozen(repr=False)
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

    def __repr__(self) -> str:
        # A trace's lengths are tens of thousands of samples: printing a workload made from
        # one printed them all. A few are shown as they are.
        if len(self.samples) <= 8:
            return f"EmpiricalLength(samples={self.samples!r})"
        return f"EmpiricalLength(<{len(self.samples)} samples, mean {self.mean:.1f}>)"
