"""Limits on numbers from outside, and the checks every entry point shares.

The CLI, TOML configs (sweep, compare), the trace loader, the workload classes, the engines
and the serving front all check user numbers with these functions, so that one mistake gets
one wording everywhere: "<where> must be <what>, got <value>" as a `ConfigError`.

The upper limits are not physics; they are where a number stops being a plausible request
and starts being a typo that would overflow an int64 array, allocate gigabytes, or run for
ever. Each is far above anything a real deployment uses (the longest context windows of
2025 models are around 10**7 tokens; a day of a large public trace is around 10**7
requests), so a legitimate study never meets them.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from .errors import ConfigError

MAX_TOKENS = 2**31 - 1          # one prompt or output, in tokens (fits int32 and int64 sums)
MAX_REQUESTS = 10**8            # requests in one run or trace
MAX_DEVICES = 10_000            # devices (or GPUs) in one run
MAX_SECONDS = 1e9               # any duration or time (about 31 years)
MIN_RATE = 1 / MAX_SECONDS      # requests per second: slower, arrivals lie beyond any run
MAX_SEED = 2**63 - 1            # numpy seeds are non-negative; int64 keeps them portable
MAX_PRIORITY = 2**31 - 1        # |priority|; policies fold it into float sort keys
MAX_PORT = 65535
MAX_PRICE = 1e6                 # USD per GPU-hour (or device-hour): 1e308 overflowed the costs


def is_int(value) -> bool:
    """An integer, and not a bool (True is an int to Python, but `requests=True` is a typo)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_int(value, where: str, *, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int in [low, high], or a ConfigError naming `where`."""
    if not is_int(value) or (low is not None and value < low) or \
            (high is not None and value > high):
        if low is not None and high is not None:
            what = f"an integer from {low} to {high}"
        elif low is not None:
            what = f"an integer >= {low}"
        else:
            what = "an integer" if high is None else f"an integer <= {high}"
        raise ConfigError(f"{where} must be {what}, got {_show(value)}")
    return int(value)


def check_number(value, where: str, *, low: float | None = None, high: float | None = None,
                 above: float | None = None) -> float:
    """`value` as a finite float in [low, high] (or > above), or a ConfigError naming it."""
    ok = is_real(value) and math.isfinite(value) and \
        (low is None or value >= low) and (above is None or value > above) and \
        (high is None or value <= high)
    if not ok:
        bounds = [f">= {low:g}" if low is not None else None,
                  f"> {above:g}" if above is not None else None,
                  f"<= {high:g}" if high is not None else None]
        what = " and ".join(b for b in bounds if b)
        raise ConfigError(f"{where} must be a finite number{' ' + what if what else ''}, "
                          f"got {_show(value)}")
    return float(value)


def check_tokens(value, where: str) -> int:
    return check_int(value, where, low=1, high=MAX_TOKENS)


def check_count(value, where: str, high: int = MAX_REQUESTS) -> int:
    return check_int(value, where, low=1, high=high)


def check_seed(value, where: str = "seed") -> int:
    return check_int(value, where, low=0, high=MAX_SEED)


def check_order(low, high, low_name: str, high_name: str) -> None:
    """A lower bound no higher than its upper bound (min_requests <= max_requests), or a
    ConfigError naming both."""
    if low > high:
        raise ConfigError(f"{low_name} {low} is above {high_name} {high}; raise the one or "
                          "lower the other")


def check_port(value, where: str = "port") -> int:
    return check_int(value, where, low=0, high=MAX_PORT)


def check_priority(value, where: str = "priority") -> int:
    return check_int(value, where, low=-MAX_PRIORITY, high=MAX_PRIORITY)


def check_seconds(value, where: str, *, positive: bool = False) -> float:
    if positive:
        return check_number(value, where, above=0, high=MAX_SECONDS)
    return check_number(value, where, low=0, high=MAX_SECONDS)


def _show(value) -> str:
    """repr, shortened: a 10**400 or a 60 MB string must not become a 60 MB message."""
    try:
        text = repr(value)
    except Exception:   # a huge int can refuse repr (sys.int_info.str_digits_check_threshold)
        return f"a {type(value).__name__} too large to print"
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


def parse_settings(texts, where: str = "--set") -> dict:
    """KEY=VALUE strings (repeated `--set` options) as a dict of strings, or a ConfigError
    naming the one without '=' (dict(t.split('=')) would say 'sequence element #0')."""
    out = {}
    for text in texts:
        key, sep, value = str(text).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where} expects KEY=VALUE, got {_show(text)}")
        out[key.strip()] = value.strip()
    return out
