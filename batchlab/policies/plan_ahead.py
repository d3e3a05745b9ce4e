"""`PlanAheadGauge`: whether continuous batching's multi-step plans pay for themselves.

Speed only (records and device totals are the same either way; the ITL mean's last bits may
not be, see core/gaps.py): when most stretches end after their first step (an arrival every
step or two, say), the reservation and the stretch cost more than the few steps saved.

Planning ahead is worth its reservation while at least PAYS_OFF of the recent multi-step
batches (a moving average over about 1 / EMA_WEIGHT of them) ran more than one step; below
that the policy plans ahead one time in PROBE_EVERY, to see when stretches run on again.
While requests wait, a stretch cannot let finished rows go (the room is for the waiting), so
it ends at the first finish: there the wait between probes doubles with each multi-step
batch that ran one step, up to PROBE_MOST (a probe reserves blocks and prices steps ahead),
and is PROBE_EVERY again after one that ran on.
"""

from __future__ import annotations

import attrs

PAYS_OFF, EMA_WEIGHT, PROBE_EVERY, PROBE_MOST = 0.35, 0.125, 8, 256


@attrs.define
class PlanAheadGauge:
    """`worth(waiting)` before planning a batch ahead; `book(ran_on)` when one comes back."""

    # [moving average of multi-step batches that ran more than one step, plans skipped since
    # the last probe, plans between probes while requests wait] (a list: set in place, on
    # the path of every step)
    _state: list = attrs.field(factory=lambda: [1.0, 0, PROBE_EVERY])

    def worth(self, waiting) -> bool:
        """Whether to plan this batch ahead; waiting: the waiting queue (or anything whose
        truth says whether requests wait), read only below PAYS_OFF."""
        pay = self._state
        if pay[0] >= PAYS_OFF:
            return True
        pay[1] += 1
        if pay[1] < (pay[2] if waiting else PROBE_EVERY):
            return False
        pay[1] = 0
        return True

    def book(self, ran_on: bool) -> None:
        """A multi-step batch came back: whether it ran past its first step."""
        pay = self._state
        pay[0] += (ran_on - pay[0]) * EMA_WEIGHT
        pay[2] = PROBE_EVERY if ran_on else min(2 * pay[2], PROBE_MOST)
