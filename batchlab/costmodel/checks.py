"""Checks on the numbers a user hands the cost model (presets, files, keyword arguments).

Every check raises `ConfigError` naming the object and the field at fault, with the value
that was given and what would be accepted, so a typo in a TOML file is found at once instead
of surfacing later as a NaN step time or a division by zero in the simulator.
"""

from __future__ import annotations

import math

from batchlab.core import ConfigError


def _as_float(owner: str, field: str, value) -> float:
    if isinstance(value, bool):  # True is an int in Python; as a bandwidth it is a mistake
        raise ConfigError(f"{owner}: field {field!r} must be a number, not {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}: field {field!r} must be a number, not {value!r}") from None
    if math.isnan(x) or math.isinf(x):
        raise ConfigError(f"{owner}: field {field!r} is {value!r}; give a finite number")
    return x


def positive(owner: str, field: str, value) -> float:
    """A finite number > 0 (peak rates, bandwidths, sizes)."""
    x = _as_float(owner, field, value)
    if x <= 0:
        raise ConfigError(f"{owner}: field {field!r} is {value!r}; it must be > 0")
    return x


def non_negative(owner: str, field: str, value) -> float:
    """A finite number >= 0 (latencies, overheads, prices)."""
    x = _as_float(owner, field, value)
    if x < 0:
        raise ConfigError(f"{owner}: field {field!r} is {value!r}; it must be >= 0")
    return x


def fraction(owner: str, field: str, value) -> float:
    """A number in (0, 1] (efficiencies, memory utilisation)."""
    x = _as_float(owner, field, value)
    if not 0 < x <= 1:
        raise ConfigError(
            f"{owner}: field {field!r} is {value!r}; it must be in (0, 1] "
            "(a share of the peak, e.g. 0.7)"
        )
    return x


def count(owner: str, field: str, value, minimum: int = 1) -> int:
    """A whole number >= minimum (layers, heads, GPUs, parallel degrees)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value != int(value)):
        raise ConfigError(f"{owner}: field {field!r} must be a whole number, not {value!r}")
    if int(value) < minimum:
        raise ConfigError(f"{owner}: field {field!r} is {value!r}; it must be >= {minimum}")
    return int(value)


# attrs validators: they know the field's name, and the object's `name` when it has one.
def _owner(instance) -> str:
    name = getattr(instance, "name", None)
    return f"{type(instance).__name__} {name!r}" if name else type(instance).__name__


def v_positive(instance, attribute, value):
    positive(_owner(instance), attribute.name, value)


def v_non_negative(instance, attribute, value):
    non_negative(_owner(instance), attribute.name, value)


def v_fraction(instance, attribute, value):
    fraction(_owner(instance), attribute.name, value)


def v_count(instance, attribute, value):
    count(_owner(instance), attribute.name, value, 1)


def v_count0(instance, attribute, value):
    count(_owner(instance), attribute.name, value, 0)


def v_bool(instance, attribute, value):
    if not isinstance(value, bool):
        raise ConfigError(f"{_owner(instance)}: field {attribute.name!r} is {value!r}; it must "
                          "be true or false")
