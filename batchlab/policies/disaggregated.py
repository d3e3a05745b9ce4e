"""Disaggregated attention/FFN serving (MegaScale-Infer, Step-3): continuous batching whose
every step is cut into micro-batches that ping-pong between an attention pool and an FFN pool.

Admission, memory and preemption are continuous batching's (`ContinuousBatching`): the KV
cache lives on the attention pool, and the device reports that pool's capacity. On top, the
policy chooses for every step:
- the batch size: as many sequences as the token budget (`max_num_batched_tokens`), the
  sequence cap (`max_num_seqs`, larger by default than for a colocated replica: the FFN pool
  is fed by a whole attention pool) and KV memory allow; `window` > 0 waits to gather fuller
  steps, which is what raises tokens per expert when traffic is light;
- the number of micro-batches m: `num_micro_batches` if set, else (0, the default) the
  fewest that keep both pools busy, as the device computes from its stage times
  (`suggest_micro_batches`: m >= (attention + 2 transfer + experts) / slowest stage), capped by
  `max_micro_batches` and the rows. On a device that cannot say, two (plain ping-pong).

Pool sizes are the device's (see `batchlab.costmodel.disaggregated`), not the policy's. On an
ordinary device the policy still runs: it is then continuous batching with micro-batches.
"""

from __future__ import annotations

import attrs

from ..core import Batch, Plan
from .continuous import ContinuousBatching
from ..core.validators import positive


def _non_negative_int(instance, attribute, value):
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0 (0: chosen per step), got {value!r}")


@attrs.define
class Disaggregated(ContinuousBatching):
    """Continuous batching for attention/FFN-disaggregated devices: each step split into the
    fewest micro-batches that keep both pools busy."""

    max_num_seqs: int = attrs.field(default=512, validator=positive)
    num_micro_batches: int = attrs.field(default=0, validator=_non_negative_int)
    max_micro_batches: int = attrs.field(default=4, validator=positive)
    name: str = attrs.field(default="disaggregated", init=False)
    _planned: dict = attrs.field(factory=dict, init=False)  # id(our batch) -> parent's batch

    def schedule(self, now: float, devices) -> Plan:
        plan = super().schedule(now, devices)
        if not plan.batches:
            return plan
        offered = {d.name: d for d in devices}
        batches = {}
        for name, batch in plan.batches.items():
            ours = attrs.evolve(batch, num_micro_batches=self._micro_batches(
                offered[name], batch))
            self._planned[id(ours)] = batch  # keeps the parent's batch (and its id) alive
            batches[name] = ours
        return attrs.evolve(plan, batches=batches)

    def update(self, batch: Batch, result, now: float) -> None:
        super().update(self._planned.pop(id(batch)), result, now)

    def _micro_batches(self, device, batch: Batch) -> int:
        limit = min(self.max_micro_batches, batch.num_seqs)
        if self.num_micro_batches:
            return min(self.num_micro_batches, batch.num_seqs)
        suggest = getattr(device, "suggest_micro_batches", None)
        if suggest is None:
            return min(2, limit)
        return max(1, min(int(suggest(batch, limit)), limit))
