"""`Request`: what a client asks for, as a policy is allowed to see it.

The number of tokens a request will really produce is deliberately absent. The workload and
the engine know it; a policy does not, because a real server does not. Research on oracle
schedulers can ask the engine for it explicitly (`oracle_output_tokens`, filled only when the
engine runs with `oracle=True`).
"""

from __future__ import annotations

import math

import attrs


def _non_negative_int(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Request.{attribute.name} must be a non-negative int, got {value!r}")


def _positive_int(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Request.{attribute.name} must be a positive int, got {value!r}")


def _finite_time(instance, attribute, value):
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"Request.{attribute.name} must be a finite time >= 0 s, got {value!r}")


@attrs.frozen(slots=True)
class Request:
    """One inference request.

    id: unique non-negative int within a run (engines index their tables by it).
    arrival: seconds since the start of the run.
    prompt_tokens: prompt length in tokens.
    max_new_tokens: the client's cap on output tokens; the true output length is at most this.
    priority: larger runs first under priority policies.
    deadline: optional absolute time (s) by which the client wants the request finished.
    """

    id: int = attrs.field(validator=_non_negative_int)
    arrival: float = attrs.field(validator=_finite_time)
    prompt_tokens: int = attrs.field(validator=_positive_int)
    max_new_tokens: int = attrs.field(validator=_positive_int)
    priority: int = 0
    deadline: float | None = None
    # Filled only by an engine run with oracle=True; a fair policy never reads it.
    oracle_output_tokens: int | None = None
