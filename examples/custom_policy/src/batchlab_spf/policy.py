"""Shortest-prompt-first: an example batchlab policy, written as a third-party plugin would be.

Iteration-level batching (every step decodes every admitted sequence and may admit new ones),
with one twist: waiting requests are admitted shortest prompt first, not in arrival order.
Short prompts are cheap to prefill and get their first token soon, so mean time to first
token drops when prompts vary a lot; the price is that a long prompt can wait while short
ones keep arriving (no aging here: a real policy would add it).

Built only on batchlab's core helpers: `KVBlockManager` for memory, `Batch` and `Plan` for
the protocol. Memory is reserved for prompt + max_new_tokens at admission, so no sequence
ever has to be preempted, which keeps the example short.
"""

from __future__ import annotations

import heapq

import attrs
import numpy as np

from batchlab.core import Batch, KVBlockManager, Plan, Request


def _positive(instance, attribute, value):
    # A ValueError from a validator reaches the user as a ConfigError naming the policy.
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.define
class _Device:
    ids: np.ndarray = attrs.field(factory=lambda: np.zeros(0, np.int64))
    cached: np.ndarray = attrs.field(factory=lambda: np.zeros(0, np.int64))
    in_flight: bool = False


@attrs.define
class ShortestPromptFirst:
    """Admit the shortest waiting prompts first; decode every admitted sequence each step."""

    # Parameters: init fields with defaults; `batchlab policies` lists them, `--set` sets them.
    max_num_seqs: int = attrs.field(default=64, validator=_positive)
    max_prefill_tokens: int = attrs.field(default=4096, validator=_positive)
    block_size: int = attrs.field(default=16, validator=_positive)
    # State: init=False, so it is not a parameter.
    name: str = attrs.field(default="shortest-prompt-first", init=False)
    _waiting: list = attrs.field(factory=list, init=False)    # heap of (prompt, arrival, id)
    _requests: dict = attrs.field(factory=dict, init=False)   # id -> Request, until it ends
    _devices: dict = attrs.field(factory=dict, init=False)    # name -> _Device
    _kv: dict = attrs.field(factory=dict, init=False)         # name -> KVBlockManager
    _launched: dict = attrs.field(factory=dict, init=False)   # id(batch) -> device name
    _aborted: set = attrs.field(factory=set, init=False)
    _unchecked: list = attrs.field(factory=list, init=False)

    def add(self, request: Request, now: float) -> None:
        self._requests[request.id] = request
        heapq.heappush(self._waiting, (request.prompt_tokens, request.arrival, request.id))
        self._unchecked.append(request)

    def abort(self, request_id: int) -> None:
        if self._requests.pop(request_id, None) is None:
            return  # unknown or already over; a waiting entry is skipped when popped
        self._unchecked = [r for r in self._unchecked if r.id != request_id]
        for name, dev in self._devices.items():
            if request_id in dev.ids:
                self._kv[name].free(request_id)
                if dev.in_flight:  # its row is in the batch being run: drop it at update
                    self._aborted.add(request_id)
                else:
                    keep = dev.ids != request_id
                    dev.ids, dev.cached = dev.ids[keep], dev.cached[keep]

    def schedule(self, now: float, devices) -> Plan:
        for device in devices:  # every device is idle, hence offered, at the first call
            if device.name not in self._kv:
                self._kv[device.name] = KVBlockManager.for_capacity(
                    device.kv_capacity_tokens, self.block_size)
                self._devices[device.name] = _Device()
        rejected = self._reject_impossible()
        batches = {}
        for device in devices:
            batch = self._step(device.name)
            if batch is not None:
                batches[device.name] = batch
                self._launched[id(batch)] = device.name
        return Plan(batches, rejected=rejected)

    def update(self, batch: Batch, result, now: float) -> None:
        name = self._launched.pop(id(batch))
        dev = self._devices[name]
        dev.in_flight = False
        self._kv[name].free(batch.request_ids[result.finished])
        keep = ~result.finished & ~np.isin(batch.request_ids, list(self._aborted))
        for rid in batch.request_ids[~keep].tolist():
            self._requests.pop(rid, None)
            self._aborted.discard(rid)
        dev.ids = batch.request_ids[keep]
        dev.cached = (batch.num_cached_tokens + batch.num_new_tokens)[keep]

    def check_valid(self) -> None:
        for name, dev in self._devices.items():
            self._kv[name].check_valid()
            live = ~np.isin(dev.ids, list(self._aborted))  # aborted rows hold nothing
            held = self._kv[name].num_held(dev.ids[live]) * self.block_size
            assert (held >= dev.cached[live]).all(), f"a sequence on {name} outgrew its blocks"
            assert dev.ids.size <= self.max_num_seqs

    def _step(self, name: str) -> Batch | None:
        """Decode everyone running here, then admit the shortest prompts that fit."""
        dev, kv = self._devices[name], self._kv[name]
        ids, new, cached = [], [], []
        budget = self.max_prefill_tokens
        while self._waiting and dev.ids.size + len(ids) < self.max_num_seqs:
            prompt, _, rid = self._waiting[0]
            request = self._requests.get(rid)
            if request is None:  # aborted or rejected while waiting
                heapq.heappop(self._waiting)
                continue
            reserve = prompt + request.max_new_tokens
            # A prompt over the whole budget still runs, alone, or it never could.
            if (prompt > budget and ids) or not kv.can_grow(rid, reserve):
                break
            kv.grow(rid, reserve)
            heapq.heappop(self._waiting)
            ids.append(rid)
            new.append(prompt)
            cached.append(0)
            budget -= prompt
        if dev.ids.size == 0 and not ids:
            return None
        rows = np.concatenate([dev.ids, np.array(ids, np.int64)])
        dev.ids = rows
        dev.cached = np.concatenate([dev.cached, np.zeros(len(ids), np.int64)])
        dev.in_flight = True
        return Batch(rows, np.concatenate([np.ones(rows.size - len(ids), np.int64), new]),
                     np.concatenate([dev.cached[: rows.size - len(ids)], cached]))

    def _reject_impossible(self) -> list[int]:
        """A request whose reservation exceeds every device's memory could never run."""
        most = max(kv.num_blocks for kv in self._kv.values()) * self.block_size
        too_big = [r.id for r in self._unchecked if r.prompt_tokens + r.max_new_tokens > most]
        self._unchecked.clear()
        for rid in too_big:
            self._requests.pop(rid, None)
        return too_big
