"""attrs validators for policy parameters, shared so that every policy words errors alike.

They raise ValueError("<field> must be ..., got <value>"); `load_policy` turns that into a
ConfigError naming the policy, so the user reads which parameter of which policy to mend.
"""

from __future__ import annotations


def positive(instance, attribute, value):
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def non_negative(instance, attribute, value):
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def one_of(*choices):
    """A validator accepting only the given values."""
    def check(instance, attribute, value):
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise ValueError(f"{attribute.name} must be one of {listed}, got {value!r}")
    return check
