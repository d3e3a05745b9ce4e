"""attrs validators for policy parameters, shared so that every policy words errors alike.

They raise ValueError("<field> must be ..., got <value>"); `load_policy` turns that into a
ConfigError naming the policy, so the user reads which parameter of which policy to mend.
"""

from __future__ import annotations

import math

from .limits import MAX_SECONDS


def positive(instance, attribute, value):
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def non_negative(instance, attribute, value):
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def seconds(instance, attribute, value):
    """A duration: finite, 0 to MAX_SECONDS (a larger one is a typo, and overflows the clock:
    1e308 + a step is 1e308)."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0 <= value <= MAX_SECONDS):
        raise ValueError(f"{attribute.name} must be a duration from 0 to {MAX_SECONDS:g} "
                         f"seconds, got {value!r}")


def positive_seconds(instance, attribute, value):
    """A duration above 0 and at most MAX_SECONDS."""
    seconds(instance, attribute, value)
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0 seconds, got {value!r}")


def one_of(*choices):
    """A validator accepting only the given values."""
    def check(instance, attribute, value):
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise ValueError(f"{attribute.name} must be one of {listed}, got {value!r}")
    return check
