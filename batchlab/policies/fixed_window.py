"""Fixed window: request-level batching, as Triton's dynamic batcher and TorchServe do it.

A cohort is launched on an idle device when `max_batch` requests wait or the oldest has waited
`window` seconds. The cohort prefills together, then decodes together until its last member
finishes; only then is the next cohort admitted. A member that finishes early keeps its slot
(nobody takes it), which is the waste this policy pays for its simplicity. Its compute is not
charged: rows that finished leave the batch, so the step-time model sees a shrinking batch.

Memory is reserved up front for prompt + max_new_tokens of every member, as request-level
servers must (they do not know how long an answer will be); a request that cannot fit on any
device even alone is rejected.
"""

from __future__ import annotations

from collections import deque

import attrs
import numpy as np

from ..core import Batch, KVBlockManager, Plan, Request
from ..core.validators import positive, seconds


@attrs.define
class _Cohort:
    ids: np.ndarray
    cached: np.ndarray
    in_flight: bool = False


@attrs.define
class FixedWindow:
    """Launch a batch of up to max_batch requests when it is full or its oldest member has
    waited `window` seconds; run it to completion before admitting more."""

    max_batch: int = attrs.field(default=8, validator=positive)
    window: float = attrs.field(default=0.05, validator=seconds)
    block_size: int = attrs.field(default=16, validator=positive)
    name: str = attrs.field(default="fixed-window", init=False)
    _queue: deque = attrs.field(factory=deque, init=False)
    _cohorts: dict = attrs.field(factory=dict, init=False)  # device name -> _Cohort
    _kv: dict = attrs.field(factory=dict, init=False)       # device name -> KVBlockManager
    _launched: dict = attrs.field(factory=dict, init=False)  # id(batch) -> device name
    _unchecked: list = attrs.field(factory=list, init=False)  # added, not yet size-checked

    def add(self, request: Request, now: float) -> None:
        self._queue.append(request)
        self._unchecked.append(request)

    def abort(self, request_id: int) -> None:
        self._queue = deque(r for r in self._queue if r.id != request_id)
        for name, cohort in list(self._cohorts.items()):
            keep = cohort.ids != request_id
            if not keep.all():
                self._kv[name].free(request_id)
                cohort.ids, cohort.cached = cohort.ids[keep], cohort.cached[keep]
                if cohort.ids.size == 0 and not cohort.in_flight:
                    del self._cohorts[name]

    def schedule(self, now: float, devices) -> Plan:
        for device in devices:  # every device is idle, hence offered, at the first call
            if device.name not in self._kv:
                self._kv[device.name] = KVBlockManager.for_capacity(
                    device.kv_capacity_tokens, self.block_size)
        rejected = self._reject_impossible()
        batches = {}
        for device in devices:
            cohort = self._cohorts.get(device.name)
            if cohort is None:
                batch = self._admit(device.name, now)
                if batch is None:
                    continue
            else:
                batch = Batch.decode(cohort.ids, cohort.cached)
            self._cohorts[device.name].in_flight = True
            batches[device.name] = batch
            self._launched[id(batch)] = device.name
        wake = None
        if self._queue and len(self._queue) < self.max_batch:
            due = self._queue[0].arrival + self.window
            wake = due if due > now else None
        return Plan(batches, wake_at=wake, rejected=rejected)

    def _admit(self, name: str, now: float) -> Batch | None:
        """Form a cohort on an idle device if one is due; return its prefill batch."""
        if not self._queue:
            return None
        # Compare with the same expression the wake-up time uses, so rounding cannot leave
        # the policy awake at its own deadline yet not due.
        if len(self._queue) < self.max_batch and now < self._queue[0].arrival + self.window:
            return None
        kv, members = self._kv[name], []
        while self._queue and len(members) < self.max_batch:
            r = self._queue[0]
            if not kv.can_grow(r.id, r.prompt_tokens + r.max_new_tokens):
                break
            kv.grow(r.id, r.prompt_tokens + r.max_new_tokens)
            members.append(self._queue.popleft())
        if not members:
            return None
        ids = np.array([r.id for r in members], dtype=np.int64)
        prompt = np.array([r.prompt_tokens for r in members], dtype=np.int64)
        self._cohorts[name] = _Cohort(ids, np.zeros(len(ids), np.int64))
        # The whole prompt in one step: request-level batchers do not chunk.
        return Batch(ids, prompt, np.zeros(len(ids), np.int64))

    def _reject_impossible(self) -> list[int]:
        """Requests whose reservation exceeds the largest device's memory can never run."""
        most = max(kv.num_blocks for kv in self._kv.values()) * self.block_size
        too_big = {r.id for r in self._unchecked if r.prompt_tokens + r.max_new_tokens > most}
        self._unchecked.clear()
        if too_big:  # only those still queued: an aborted request is no longer ours
            too_big &= {r.id for r in self._queue}
            self._queue = deque(r for r in self._queue if r.id not in too_big)
        return sorted(too_big)

    def update(self, batch: Batch, result, now: float) -> None:
        name = self._launched.pop(id(batch))
        cohort = self._cohorts[name]
        cohort.in_flight = False
        ids = batch.request_ids
        self._kv[name].free(ids[result.finished])
        keep = ~result.finished
        if cohort.ids.size != ids.size:  # rows aborted while the step ran
            keep &= np.isin(ids, cohort.ids)
        cohort.ids = ids[keep]
        cohort.cached = (batch.num_cached_tokens + batch.num_new_tokens)[keep]
        if cohort.ids.size == 0:
            del self._cohorts[name]

    def check_valid(self) -> None:
        for kv in self._kv.values():
            kv.check_valid()
        for name, cohort in self._cohorts.items():
            held = self._kv[name].num_held(cohort.ids)
            assert (held > 0).all(), f"cohort on {name} runs a request holding no KV blocks"
