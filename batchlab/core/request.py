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


# Request's slots, set directly by `trusted_request` (attrs' frozen __setattr__ refuses).
_INF = math.inf
_SLOTS = tuple(Request.__dict__[name].__set__ for name in
               ("id", "arrival", "prompt_tokens", "max_new_tokens", "priority", "deadline",
                "oracle_output_tokens"))


def trusted_request(id: int, arrival: float, prompt_tokens: int, max_new_tokens: int,
                    priority: int, oracle_output_tokens: int | None) -> Request:
    """`Request(id, arrival, prompt_tokens, max_new_tokens, priority, None,
    oracle_output_tokens)`, the same object, made without attrs' __init__ where the values
    are plainly valid: Python ints (not bools) and a float, each in range, the checks of the
    four validators that __init__ calls one by one; anything else goes to `Request`, which
    validates it as always (and raises its error). An engine makes one per arrival, from a
    workload's columns read with item(): about 0.5 instead of 0.9 us alone, and in the vidur
    case's run about half of the 2.4 us `Request(...)` took."""
    if not (type(id) is int and type(arrival) is float and type(prompt_tokens) is int
            and type(max_new_tokens) is int and id >= 0 and 0.0 <= arrival < _INF
            and prompt_tokens >= 1 and max_new_tokens >= 1):
        return Request(id, arrival, prompt_tokens, max_new_tokens, priority, None,
                       oracle_output_tokens)
    request = object.__new__(Request)
    set_id, set_arrival, set_prompt, set_cap, set_priority, set_deadline, set_oracle = _SLOTS
    set_id(request, id)
    set_arrival(request, arrival)
    set_prompt(request, prompt_tokens)
    set_cap(request, max_new_tokens)
    set_priority(request, priority)
    set_deadline(request, None)
    set_oracle(request, oracle_output_tokens)
    return request
