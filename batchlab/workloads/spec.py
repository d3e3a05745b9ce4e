"""Workloads: who sends what, when.

A `Workload` is concrete: arrays of arrival times, prompt lengths and true output lengths.
A `WorkloadSpec` describes how to draw one (an arrival process, two length distributions and a
count) and is sampled with the run's seed, so `simulate(..., seed=s)` is deterministic.

Closed loop: a request whose `arrival` is NaN is sent by its user `think[i]` seconds after the
user's previous request finished ("one local user" is one user).

Also here: `make_workload()`, which builds a spec from the plain names and numbers a command
line has.
"""

from __future__ import annotations

import re
from numbers import Integral

import attrs
import numpy as np

from ..core.errors import ConfigError
from .arrivals import ClosedLoop, ConstantRate, Gamma, Poisson
from ..core.limits import MAX_SECONDS, MAX_TOKENS, check_tokens
from .checks import (_fail, _int_if_integral, _optional_positive_int, _request_count)
from .lengths import ConstantLength, LogNormalLength, UniformLength


def _i64(values):
    try:
        return np.asarray(values, dtype=np.int64).reshape(-1)
    except (OverflowError, ValueError, TypeError) as exc:
        # 2**63, "x" or None in a length list: say so instead of numpy's words
        raise ConfigError(f"Workload token counts must be integers from 1 to {MAX_TOKENS}, "
                          f"got values numpy cannot hold as int64 ({exc})") from None


def _f64(values):
    try:
        return np.asarray(values, dtype=np.float64).reshape(-1)
    except (OverflowError, ValueError, TypeError) as exc:
        raise ConfigError(f"Workload arrival times must be numbers of seconds ({exc})") from None


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
        if (self.prompt_tokens > MAX_TOKENS).any() or (self.output_tokens > MAX_TOKENS).any():
            raise ConfigError(f"workload {self.name!r}: a prompt or output has more than "
                              f"{MAX_TOKENS} tokens")
        open_loop = ~np.isnan(self.arrival)
        if (self.arrival[open_loop] < 0).any() or not np.isfinite(self.arrival[open_loop]).all():
            raise ConfigError(f"workload {self.name!r}: arrival times must be finite and >= 0")
        last = float(np.fmax.reduce(self.arrival)) if n else 0.0  # fmax: NaN (closed) skipped
        if last > MAX_SECONDS:  # past every other time a run may hold: nonsense figures
            raise ConfigError(f"workload {self.name!r}: its last request arrives at {last:.3g} "
                              f"s, past the {MAX_SECONDS:g} s any run may span; raise the rate, "
                              "use fewer requests or a smaller time_scale")
        if (~open_loop).any() and (self.user is None or self.think is None):
            raise ConfigError(f"workload {self.name!r}: closed-loop requests (arrival NaN) "
                              "need user and think")
        cap = self.max_new_tokens
        if cap is not None and not (isinstance(cap, (Integral, np.integer))
                                    and not isinstance(cap, bool) and 1 <= cap <= MAX_TOKENS):
            raise ConfigError(f"workload {self.name!r}: max_new_tokens must be an integer from "
                              f"1 to {MAX_TOKENS}, got {cap!r}")
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
    num_requests: int = attrs.field(converter=_int_if_integral, validator=_request_count)
    max_new_tokens: int | None = attrs.field(default=None, converter=_int_if_integral,
                                             validator=_optional_positive_int)
    name: str | None = None
    # Optional (prompt, output) pairs drawn together (a `TraceLengths`); when set, they
    # replace the prompt and output distributions when sampling.
    lengths: object | None = attrs.field(default=None, validator=attrs.validators.optional(
        _has_methods("sample_pairs")))

    def describe(self) -> str:
        if self.lengths is not None:
            return f"{_describe(self.arrivals)} x{self.num_requests}, {_describe(self.lengths)}"
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
        if self.lengths is not None:
            prompt, output = self.lengths.sample_pairs(prompt_rng, n)
        else:
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


def check_length(value, where: str) -> None:
    """A length setting (a parse_length string or a token count), or a ConfigError naming
    `where` (an option, a config key) instead of the class parse_length builds."""
    if isinstance(value, str):
        # parse_length names its own classes ("ConstantLength.n must be ..."); name the setting.
        try:
            parse_length(value)
        except ConfigError as exc:
            owner = re.match(r"\w+\.(\w+) (must .*)", str(exc), re.DOTALL)
            if owner and owner.group(1) == "n":  # a constant length: the setting itself
                raise ConfigError(f"{where} {owner.group(2)}") from None
            detail = f"{owner.group(1)} {owner.group(2)}" if owner else str(exc)
            raise ConfigError(f"{where} {value!r}: {detail}") from None
        return
    check_tokens(value, where)


_ARRIVAL_NAMES = ("poisson", "gamma", "constant", "closed", "local")


def make_workload(arrival="poisson", *, num_requests: int = 100, rate: float | None = None,
                  cv: float | None = None, users: int | None = None,
                  think_time: float | None = None, think: str = "constant",
                  prompt=None, output=None, lengths=None,
                  max_new_tokens: int | None = None, name: str | None = None) -> WorkloadSpec:
    """A WorkloadSpec from the plain names and numbers a command line has.

    arrival: 'poisson' (needs rate), 'gamma' (rate and cv), 'constant' (rate), 'closed' (users,
    default 1; think_time, default 0) or 'local' (one closed-loop user), or an arrival object.
    prompt, output: see parse_length(). The default lengths (lognormal:512:1.0 and
    lognormal:128:1.0) are only a plausible chat shape.
    lengths: (prompt, output) pairs drawn together instead (a `TraceLengths`, e.g.
    `TraceLengths.from_trace(path, max_tokens=4096)`), with any arrival process.
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
        # Each message starts with the setting it is about, so that a command line can name
        # its option instead (`studies.scenario.as_option`).
        if unused:
            raise ConfigError(f"{unused[0]} is not used by arrival {arrival!r}; drop it or "
                              "pick an arrival process that uses it")
        if not closed and rate is None:
            raise ConfigError(f"rate (requests per second) is needed by arrival {arrival!r}")
        if kind == "gamma" and cv is None:
            raise ConfigError("cv (coefficient of variation of the inter-arrival times; 1 is "
                              "Poisson) is needed by arrival 'gamma'")
        process = {
            "poisson": lambda: Poisson(rate),
            "gamma": lambda: Gamma(rate, cv),
            "constant": lambda: ConstantRate(rate),
            "closed": lambda: ClosedLoop(1 if users is None else users,
                                         0.0 if think_time is None else think_time, think),
            "local": lambda: ClosedLoop(1, 0.0 if think_time is None else think_time, think),
        }[kind]()
    if lengths is not None:
        if prompt is not None or output is not None:
            raise ConfigError("make_workload: lengths (prompt, output pairs) replaces prompt "
                              "and output; give one or the other")
        if not hasattr(lengths, "sample_pairs"):
            raise ConfigError(f"make_workload: lengths must be a TraceLengths (pairs), got "
                              f"{type(lengths).__name__}")
        prompt, output = lengths.marginals()
    prompt = "lognormal:512:1.0" if prompt is None else prompt
    output = "lognormal:128:1.0" if output is None else output
    return WorkloadSpec(process, parse_length(prompt), parse_length(output), num_requests,
                        max_new_tokens=max_new_tokens, name=name, lengths=lengths)
