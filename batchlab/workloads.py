"""Workloads: who sends what, when.

A `Workload` is concrete: arrays of arrival times, prompt lengths and true output lengths.
A `WorkloadSpec` describes how to draw one (an arrival process, two length distributions and a
count) and is sampled with the run's seed, so `simulate(..., seed=s)` is deterministic.

Closed loop: a request whose `arrival` is NaN is sent by its user `think[i]` seconds after the
user's previous request finished ("one local user" is one user).
"""

from __future__ import annotations

import attrs
import numpy as np

from .core.errors import ConfigError


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
