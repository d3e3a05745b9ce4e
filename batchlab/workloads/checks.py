"""Field validators shared by the length distributions and arrival processes.

attrs validators, so that every class checks its fields the same way and every message reads
"Class.field must be ..., got value" -- the user sees at once what to change.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from ..core.errors import ConfigError
from ..core.limits import MAX_REQUESTS, MAX_SECONDS, MAX_TOKENS, MIN_RATE, _show


def _fail(inst, attr, what: str, value) -> None:
    # attr.alias is the name the user typed (LogNormalLength stores `mean` as mean_tokens)
    name = getattr(attr, "alias", None) or attr.name
    raise ConfigError(f"{type(inst).__name__}.{name} must be {what}, got {_show(value)}")


def _is_real(value) -> bool:
    # bool is an int to Python, but `rate=True` is a mistake, not 1.0
    return isinstance(value, Real) and not isinstance(value, bool)


def _positive(inst, attr, value):
    if not (_is_real(value) and math.isfinite(value) and value > 0):
        _fail(inst, attr, "a positive finite number", value)


def _rate(inst, attr, value):
    # Positive is not enough: at 1e-300 req/s the second arrival lands 1e300 s out, far past
    # every other time a run may hold (MAX_SECONDS), and the figures are nonsense.
    if not (_is_real(value) and math.isfinite(value) and value >= MIN_RATE):
        _fail(inst, attr, f"a rate of at least {MIN_RATE:g} per second", value)


def _non_negative(inst, attr, value):
    if not (_is_real(value) and math.isfinite(value) and value >= 0):
        _fail(inst, attr, "a finite number >= 0", value)


def _at_least_one(inst, attr, value):
    if not (_is_real(value) and math.isfinite(value) and value >= 1):
        _fail(inst, attr, "a finite number >= 1 (a length in tokens)", value)


def _positive_int(inst, attr, value):
    # A token count or a user count; above MAX_TOKENS it would overflow the int arrays.
    if _is_real(value) and math.isfinite(value) and value > MAX_TOKENS:
        _fail(inst, attr, f"a positive integer <= {MAX_TOKENS}", value)
    if not (isinstance(value, Integral) and not isinstance(value, bool) and value >= 1):
        _fail(inst, attr, "a positive integer", value)
    if value > MAX_TOKENS:
        _fail(inst, attr, f"a positive integer <= {MAX_TOKENS}", value)


def _request_count(inst, attr, value):
    if _is_real(value) and math.isfinite(value) and value > MAX_REQUESTS:
        _fail(inst, attr, f"a positive integer <= {MAX_REQUESTS} (requests in one run)", value)
    _positive_int(inst, attr, value)


def _seconds(inst, attr, value):
    _non_negative(inst, attr, value)
    if value > MAX_SECONDS:
        _fail(inst, attr, f"a finite number of seconds <= {MAX_SECONDS:g}", value)


def _cv(inst, attr, value):
    # cv**2 overflows beyond ~1e154; above 1000 no traffic trace is that bursty anyway.
    _positive(inst, attr, value)
    if value > 1000:
        _fail(inst, attr, "a positive finite number <= 1000", value)


def _optional_positive_int(inst, attr, value):
    if value is not None:
        _positive_int(inst, attr, value)


def _int_if_integral(value):
    """Let `UniformLength(1, 1e3)` mean what it says; anything else is left for the validator."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2.0**63:
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _float_if_real(value):
    return float(value) if _is_real(value) else value


_int_field = dict(converter=_int_if_integral, validator=_positive_int)
