"""Workloads: who sends what, when.

A `Workload` is concrete: arrays of arrival times, prompt lengths and true output lengths.
A `WorkloadSpec` describes how to draw one (an arrival process, two length distributions and a
count) and is sampled with the run's seed, so `simulate(..., seed=s)` is deterministic.

Closed loop: a request whose `arrival` is NaN is sent by its user `think[i]` seconds after the
user's previous request finished ("one local user" is one user).

Also here: the length distributions (`ConstantLength`, `UniformLength`, `LogNormalLength`,
`EmpiricalLength`), the arrival processes (`Poisson`, `Gamma`, `ConstantRate`, `ClosedLoop`),
`make_workload()` that builds a spec from the plain names and numbers a command line has, and
`load_trace()` (implemented in `batchlab.traces`) that replays a recorded trace.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import attrs
import numpy as np

from .core.errors import ConfigError
from .traces import load_trace  # noqa: F401  (re-exported: workloads is where users look)


def _i64(values):
    return np.asarray(values, dtype=np.int64).reshape(-1)


def _f64(values):
    return np.asarray(values, dtype=np.float64).reshape(-1)


@attrs.frozen(eq=False)
class Workload:
    """A concrete set of requests; request i has id i.

    arrival: seconds; NaN for a closed-loop request sent after its user's previous one.
    prompt_tokens, output_tokens: lengths; output_tokens is the truth a policy never sees.
    max_new_tokens: the cap every request carries (visible to policies); defaults to the
        largest output length, so that it reveals nothing about any one request.
    user, think: closed loop only: the user who sends request i and the think time before it.
    priority: optional per-request priority.
    """

    arrival: np.ndarray = attrs.field(converter=_f64)
    prompt_tokens: np.ndarray = attrs.field(converter=_i64)
    output_tokens: np.ndarray = attrs.field(converter=_i64)
    max_new_tokens: int | None = None
    user: np.ndarray | None = None
    think: np.ndarray | None = None
    priority: np.ndarray | None = None
    name: str = "workload"

    def __attrs_post_init__(self):
        n = len(self.arrival)
        if n == 0:
            raise ConfigError(f"workload {self.name!r} has no requests")
        for field in ("prompt_tokens", "output_tokens"):
            if len(getattr(self, field)) != n:
                raise ConfigError(f"workload {self.name!r}: {field} has "
                                  f"{len(getattr(self, field))} entries, arrival has {n}")
        for field in ("user", "think", "priority"):
            value = getattr(self, field)
            if value is not None and len(value) != n:
                raise ConfigError(f"workload {self.name!r}: {field} has {len(value)} entries, "
                                  f"arrival has {n}")
        if (self.prompt_tokens < 1).any() or (self.output_tokens < 1).any():
            raise ConfigError(f"workload {self.name!r}: every prompt and output needs >= 1 token")
        open_loop = ~np.isnan(self.arrival)
        if (self.arrival[open_loop] < 0).any() or not np.isfinite(self.arrival[open_loop]).all():
            raise ConfigError(f"workload {self.name!r}: arrival times must be finite and >= 0")
        if (~open_loop).any() and (self.user is None or self.think is None):
            raise ConfigError(f"workload {self.name!r}: closed-loop requests (arrival NaN) "
                              "need user and think")
        cap = self.max_new_tokens
        if cap is None:
            object.__setattr__(self, "max_new_tokens", int(self.output_tokens.max()))
        elif cap < int(self.output_tokens.max()):
            raise ConfigError(f"workload {self.name!r}: max_new_tokens={cap} is below the "
                              f"longest output ({int(self.output_tokens.max())})")

    @property
    def num_requests(self) -> int:
        return len(self.arrival)

    @property
    def is_closed_loop(self) -> bool:
        return bool(np.isnan(self.arrival).any())

    def sample(self, rng: np.random.Generator) -> "Workload":
        """A concrete workload samples to itself (so engines accept specs and workloads)."""
        return self


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


# --- specs ------------------------------------------------------------------------------

def _describe(thing) -> str:
    return thing.describe() if hasattr(thing, "describe") else repr(thing)


def _has_methods(*names):
    def check(inst, attr, value):
        missing = [m for m in names if not hasattr(value, m)]
        if missing:
            _fail(inst, attr, f"an object with {' and '.join(names)} (e.g. "
                  f"{'Poisson(2.0)' if attr.name == 'arrivals' else 'ConstantLength(128)'})",
                  value)
    return check


@attrs.frozen
class WorkloadSpec:
    """How to draw a Workload: an arrival process, prompt and output length distributions and
    a request count. max_new_tokens, when set, is the cap every request carries and output
    lengths are clipped to it, as a server's max_tokens cuts generation short.
    """

    arrivals: object = attrs.field(validator=_has_methods("sample"))
    prompt: object = attrs.field(validator=_has_methods("sample", "mean"))
    output: object = attrs.field(validator=_has_methods("sample", "mean"))
    num_requests: int = attrs.field(**_int_field)
    max_new_tokens: int | None = attrs.field(default=None, converter=_int_if_integral,
                                             validator=_optional_positive_int)
    name: str | None = None

    def describe(self) -> str:
        return (f"{_describe(self.arrivals)} x{self.num_requests}, "
                f"prompt {_describe(self.prompt)}, output {_describe(self.output)}")

    def sample(self, rng: np.random.Generator | int) -> Workload:
        """Draw a Workload; the same seed always gives the same one.

        Arrivals, prompts and outputs use three independent streams spawned from one draw of
        `rng`, so swapping the arrival process (Poisson for Gamma, say) leaves the lengths as
        they were and a comparison between the two isolates the effect of the arrivals.
        """
        rng = np.random.default_rng(rng)
        seeds = np.random.SeedSequence(rng.integers(0, 2 ** 63, size=4).tolist()).spawn(3)
        arrival_rng, prompt_rng, output_rng = (np.random.default_rng(s) for s in seeds)
        n = self.num_requests
        layout = getattr(self.arrivals, "sample_layout", None)
        if layout is not None:
            arrival, user, think = layout(arrival_rng, n)
        else:
            arrival, user, think = self.arrivals.sample(arrival_rng, n), None, None
        prompt = self.prompt.sample(prompt_rng, n)
        output = self.output.sample(output_rng, n)
        if self.max_new_tokens is not None:
            output = np.minimum(output, self.max_new_tokens)
        return Workload(arrival, prompt, output, max_new_tokens=self.max_new_tokens,
                        user=user, think=think, name=self.name or self.describe())


_LENGTH_FORMS = "'N', 'const:N', 'uniform:LOW:HIGH' or 'lognormal:MEAN:CV[:MAX]'"


def parse_length(spec) -> object:
    """A length distribution from a command-line string (see _LENGTH_FORMS), an int (constant)
    or a distribution object (returned as is)."""
    if hasattr(spec, "sample"):
        return spec
    if isinstance(spec, Integral) and not isinstance(spec, bool):
        return ConstantLength(spec)
    if not isinstance(spec, str):
        raise ConfigError(f"length {spec!r} must be a length distribution, an int or a "
                          f"string {_LENGTH_FORMS}")
    kind, *args = [part.strip() for part in spec.split(":")]
    forms = {"const": (ConstantLength, 1, 1), "constant": (ConstantLength, 1, 1),
             "uniform": (UniformLength, 2, 2), "lognormal": (LogNormalLength, 2, 3)}
    if not args and kind.isdigit():
        kind, args = "const", [kind]
    if kind not in forms or not forms[kind][1] <= len(args) <= forms[kind][2]:
        raise ConfigError(f"length {spec!r} is not understood; write {_LENGTH_FORMS}")
    try:
        numbers = [float(a) for a in args]
    except ValueError:
        raise ConfigError(f"length {spec!r} has a part that is not a number; write "
                          f"{_LENGTH_FORMS}") from None
    return forms[kind][0](*numbers)


_ARRIVAL_NAMES = ("poisson", "gamma", "constant", "closed", "local")


def make_workload(arrival="poisson", *, num_requests: int = 100, rate: float | None = None,
                  cv: float | None = None, users: int | None = None,
                  think_time: float | None = None, think: str = "constant",
                  prompt="lognormal:512:1.0", output="lognormal:128:1.0",
                  max_new_tokens: int | None = None, name: str | None = None) -> WorkloadSpec:
    """A WorkloadSpec from the plain names and numbers a command line has.

    arrival: 'poisson' (needs rate), 'gamma' (rate and cv), 'constant' (rate), 'closed' (users,
    default 1; think_time, default 0) or 'local' (one closed-loop user), or an arrival object.
    prompt, output: see parse_length(). The default lengths are only a plausible chat shape.
    An option that the chosen arrival process does not use is an error, not silently ignored.
    """
    if not isinstance(arrival, str):
        process = arrival
    else:
        kind = arrival.strip().lower().replace("-loop", "")
        if kind not in _ARRIVAL_NAMES:
            raise ConfigError(f"arrival {arrival!r} is unknown; choose one of "
                              f"{', '.join(_ARRIVAL_NAMES)}")
        closed = kind in ("closed", "local")
        unused = [opt for opt, value, used in (
            ("rate", rate, not closed), ("cv", cv, kind == "gamma"),
            ("users", users, kind == "closed"), ("think_time", think_time, closed))
            if value is not None and not used]
        if unused:
            raise ConfigError(f"arrival {arrival!r} does not use {', '.join(unused)}; drop it "
                              "or pick an arrival process that does")
        if not closed and rate is None:
            raise ConfigError(f"arrival {arrival!r} needs rate (requests per second)")
        if kind == "gamma" and cv is None:
            raise ConfigError("arrival 'gamma' needs cv (coefficient of variation of the "
                              "inter-arrival times; 1 is Poisson)")
        process = {
            "poisson": lambda: Poisson(rate),
            "gamma": lambda: Gamma(rate, cv),
            "constant": lambda: ConstantRate(rate),
            "closed": lambda: ClosedLoop(1 if users is None else users,
                                         0.0 if think_time is None else think_time, think),
            "local": lambda: ClosedLoop(1, 0.0 if think_time is None else think_time, think),
        }[kind]()
    return WorkloadSpec(process, parse_length(prompt), parse_length(output), num_requests,
                        max_new_tokens=max_new_tokens, name=name)
