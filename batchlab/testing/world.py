"""The kit's world: its device, the random arrivals it sends, and the records it keeps.

Constants here bound an example (how many steps, aborts and failures; device sizes) and are
shared by the state machine (`machine.py`) and its contract checks (`rules.py`).
"""

from __future__ import annotations

import functools

import attrs
from hypothesis import strategies as st

from ..core import Batch, StepResult

MIN_EXAMPLES = 200          # check_policy never runs fewer (more under a longer profile)
STEPS_PER_EXAMPLE = 30      # random steps before arrivals stop and the run is drained
CAPACITY_UNIT = 128         # device capacities are 1-8 units of KV tokens
FIT_SLACK = 64              # "fits": prompt + cap <= largest capacity - slack (block rounding)
MAX_ABORTS = 3              # per example, so that most requests live long enough to matter
MAX_FAILURES = 3            # device failures per example
DRAIN_TOKENS = 32           # while draining, a request emits at most this many more tokens
                            # (32 = the largest cap: each runs to its cap)
DRAIN_STEP = 0.005          # seconds each step takes while draining


@attrs.frozen
class KitDevice:
    """The kit's device: a name and a KV capacity. The kit decides when its steps end."""

    name: str
    kv_capacity_tokens: int
    price_per_hour: float | None = None

    def run(self, batch: Batch) -> StepResult:
        return StepResult(DRAIN_STEP)

    def kv_transfer_time(self, num_tokens: int, to_device) -> float:
        return 1e-6 * num_tokens


@attrs.frozen
class Arrival:
    """One request of an `arrive` step: prompt and cap (max_new) in tokens, priority,
    deadline (seconds after arrival, or None), and output: the true output length, used
    only with oracle=True (otherwise the kit decides it when the tokens come)."""

    prompt: int
    max_new: int
    priority: int = 0
    deadline: float | None = None
    output: int = 1


_ARRIVAL_FIELDS = dict(
    prompt=st.one_of(st.integers(1, 32), st.integers(1, 300),
                     st.integers(1, 8 * CAPACITY_UNIT + 100)),
    max_new=st.integers(1, 32), priority=st.integers(0, 3),
    deadline=st.sampled_from([None, 0.01, 0.1, 1.0]))
_SPECS = st.lists(st.builds(Arrival, **_ARRIVAL_FIELDS), min_size=1, max_size=4)
_ORACLE_SPECS = st.lists(st.builds(Arrival, **_ARRIVAL_FIELDS, output=st.integers(1, 32)),
                         min_size=1, max_size=4)
_DT = st.sampled_from([0.0, 0.001, 0.01, 0.03, 0.06, 0.2])   # around typical windows


@attrs.frozen
class _Ref:
    """A launched batch in the call log, by launch number (replays map it to their own)."""

    serial: int


@attrs.define
class _Flight:
    batch: Batch
    launched_at: float
    serial: int


@attrs.define
class _Resident:
    """Memory record of one launch: the batch's tokens, and the other caches on the device
    whose owners may yet continue from them (counted when they do)."""

    serial: int
    at: float
    used: int
    candidates: dict


def _tracked(fn):
    """Note that a step failed, so teardown does not drain a broken run."""
    @functools.wraps(fn)
    def step(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except BaseException:
            self._failed = True
            raise
    return step
