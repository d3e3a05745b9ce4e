"""Prefill/decode disaggregation, as DistServe and Splitwise serve: prompts on some devices,
token generation on others, the KV cache sent between them.

A long prefill in the same step as running decodes stalls them for the whole prefill; chunked
prefill shortens the stall, disaggregation removes it: prefill devices run only prompts,
decode devices run only decodes, so each pool can be sized and batched for its own phase.
The price is the KV transfer after every prefill (the device's `kv_transfer_time`, seen as a
longer gap before the second token) and a pool split that one phase may leave idle.

Roles come from the order the devices are offered at the first `schedule` call (every device
is idle then): the first `num_prefill` are prefill devices, the rest decode devices. With no
device left for decoding (a single device, say), every device does both, and the policy is
continuous batching without chunking: it runs anywhere, and shows nothing special there.
A request too long for the split route (for every decode device, or for every prefill
device, where a preempted sequence is recomputed) but not for some device runs start to end
on one device that can hold it, whatever its role; longer than every device, it is rejected.

A request: waits in the prefill queue (arrival order) -> runs its whole prompt on a prefill
device under `max_prefill_tokens` a step -> emits its first token -> is sent, in
`Plan.migrations`, to the decode device with the most free KV memory, which reserves room
for it before the transfer starts (if none has room it waits, holding its prefill memory,
which throttles admissions: back-pressure) -> decodes there, up to `max_num_seqs` rows a
step. When a decode device runs out of KV blocks its latest-arrived sequence is preempted and
goes back to the prefill queue to be recomputed from its prompt and the tokens it produced.
"""

from __future__ import annotations

import heapq

import attrs
import numpy as np

from ..core import Batch, KVBlockManager, Plan, Request
from ..core.validators import positive


_EMPTY = np.zeros(0, dtype=np.int64)


@attrs.define
class _Rows:
    """Sequences whose KV cache lives on one device."""

    ids: np.ndarray = _EMPTY
    computed: np.ndarray = _EMPTY  # tokens in the KV cache
    known: np.ndarray = _EMPTY     # prompt + generated: what the next step feeds up to
    rank: np.ndarray = _EMPTY      # arrival order

    def take(self, keep) -> None:
        self.ids, self.computed = self.ids[keep], self.computed[keep]
        self.known, self.rank = self.known[keep], self.rank[keep]

    def append(self, rid: int, computed: int, known: int, rank: int) -> None:
        self.ids = np.append(self.ids, rid)
        self.computed = np.append(self.computed, computed)
        self.known = np.append(self.known, known)
        self.rank = np.append(self.rank, rank)

    def find(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """Positions of `ids` here, and which of them are here at all."""
        order = np.argsort(self.ids, kind="stable")
        at = np.minimum(np.searchsorted(self.ids[order], ids), max(self.ids.size - 1, 0))
        pos = order[at] if self.ids.size else np.zeros(len(ids), np.int64)
        present = self.ids[pos] == ids if self.ids.size else np.zeros(len(ids), bool)
        return pos, present


@attrs.define
class PDDisaggregated:
    """Prefill on the first `num_prefill` devices, decode on the others; each request's KV
    cache is migrated from its prefill device to a decode device after its first token."""

    num_prefill: int = attrs.field(default=1, validator=positive)
    max_prefill_tokens: int = attrs.field(default=8192, validator=positive)
    max_num_seqs: int = attrs.field(default=256, validator=positive)
    block_size: int = attrs.field(default=16, validator=positive)
    name: str = attrs.field(default="pd-disaggregated", init=False)
    num_migrations: int = attrs.field(default=0, init=False)
    _counter: int = attrs.field(default=0, init=False)
    _role: dict = attrs.field(factory=dict, init=False)      # device -> prefill/decode/both
    _queue: list = attrs.field(factory=list, init=False)     # heap of (rank, id) to prefill
    _local_queue: list = attrs.field(factory=list, init=False)  # the same, for local ones
    _local: set = attrs.field(factory=set, init=False)       # ids that never migrate
    _requests: dict = attrs.field(factory=dict, init=False)  # id -> Request, until it ends
    _rank: dict = attrs.field(factory=dict, init=False)
    _known: dict = attrs.field(factory=dict, init=False)     # id -> known tokens if preempted
    _where: dict = attrs.field(factory=dict, init=False)     # id -> device holding its cache
    _moving: dict = attrs.field(factory=dict, init=False)    # id -> (source, target)
    _rows: dict = attrs.field(factory=dict, init=False)      # device -> _Rows
    _kv: dict = attrs.field(factory=dict, init=False)        # device -> KVBlockManager
    _launched: dict = attrs.field(factory=dict, init=False)  # id(batch) -> device
    _unchecked: list = attrs.field(factory=list, init=False)

    # -- protocol -----------------------------------------------------------------------------
    def add(self, request: Request, now: float) -> None:
        self._requests[request.id] = request
        self._rank[request.id] = self._counter
        self._counter += 1
        self._unchecked.append(request)

    def abort(self, request_id: int) -> None:
        if self._requests.pop(request_id, None) is None:
            return
        self._unchecked = [r for r in self._unchecked if r.id != request_id]
        self._known.pop(request_id, None)
        self._local.discard(request_id)
        moving = self._moving.pop(request_id, None)
        if moving is not None:
            self._kv[moving[1]].free(request_id)
        device = self._where.pop(request_id, None)
        if device is not None:  # update() skips rows that are gone, so drop it at once
            self._kv[device].free(request_id)
            rows = self._rows[device]
            rows.take(rows.ids != request_id)

    def schedule(self, now: float, devices) -> Plan:
        if not self._role:
            self._assign_roles([d.name for d in devices])
        for device in devices:
            if device.name not in self._kv:
                self._kv[device.name] = KVBlockManager.for_capacity(
                    device.kv_capacity_tokens, self.block_size)
                self._rows[device.name] = _Rows()
                self._role.setdefault(device.name, "decode")
        rejected = self._enqueue_new()
        migrations = self._plan_migrations()
        batches = {}
        for device in devices:
            batch = self._step(device.name)
            if batch is not None:
                batches[device.name] = batch
                self._launched[id(batch)] = device.name
        return Plan(batches, rejected=rejected, migrations=migrations)

    def update(self, batch: Batch, result, now: float) -> None:
        name = self._launched.pop(id(batch))
        rows = self._rows[name]
        pos, present = rows.find(batch.request_ids)
        pos = pos[present]
        fed = (batch.num_cached_tokens + batch.num_new_tokens)[present]
        rows.computed[pos] = fed
        rows.known[pos] = np.where(result.emitted[present], fed + 1, rows.known[pos])
        done = batch.request_ids[result.finished & present]
        if done.size:
            self._kv[name].free(done)
            rows.take(~np.isin(rows.ids, done))
            for rid in done.tolist():
                self._requests.pop(rid, None)
                self._where.pop(rid, None)
                self._local.discard(rid)

    def migrated(self, request_id: int, device_name: str, now: float) -> None:
        moving = self._moving.pop(request_id, None)
        if moving is None:
            return  # aborted during the transfer
        source, target = moving
        rows = self._rows[source]
        pos = int(np.flatnonzero(rows.ids == request_id)[0])
        computed, known, rank = int(rows.computed[pos]), int(rows.known[pos]), int(rows.rank[pos])
        rows.take(np.arange(rows.ids.size) != pos)
        self._kv[source].free(request_id)
        self._rows[target].append(request_id, computed, known, rank)
        self._where[request_id] = target
        self.num_migrations += 1

    def check_valid(self) -> None:
        for name, rows in self._rows.items():
            kv = self._kv[name]
            kv.check_valid()
            held = kv.num_held(rows.ids) * self.block_size
            assert (held >= rows.computed).all(), f"a row on {name} outgrew its blocks"
            assert (rows.computed <= rows.known).all(), "a row computed more than it knows"
            assert all(self._where.get(r) == name for r in rows.ids.tolist()), (
                "rows and _where disagree")
        for rid, (source, target) in self._moving.items():
            assert self._where.get(rid) == source and source != target
            assert self._kv[target].num_held(rid) > 0, "a transfer has no room reserved"

    # -- roles, queues and transfers ------------------------------------------------------
    def _assign_roles(self, names: list[str]) -> None:
        if len(names) <= self.num_prefill:
            self._role = {n: "both" for n in names}
        else:
            self._role = {n: "prefill" if i < self.num_prefill else "decode"
                          for i, n in enumerate(names)}

    def _capacity(self, *roles: str) -> int:
        return max((kv.num_blocks for n, kv in self._kv.items() if self._role[n] in roles),
                   default=0) * self.block_size

    def _enqueue_new(self) -> list[int]:
        """Queue new requests for the split route if a prefill device and a decode device can
        each hold prompt + max_new_tokens (a preempted sequence is recomputed on a prefill
        device from all its tokens), else for a single device that can, else reject."""
        split = min(self._capacity("prefill", "both"), self._capacity("decode", "both"))
        most = self._capacity("prefill", "decode", "both")
        rejected = []
        for r in self._unchecked:
            total = r.prompt_tokens + r.max_new_tokens
            if total > most:
                rejected.append(r.id)
                self._requests.pop(r.id, None)
            elif total <= split:
                heapq.heappush(self._queue, (self._rank[r.id], r.id))
            else:
                self._local.add(r.id)
                heapq.heappush(self._local_queue, (self._rank[r.id], r.id))
        self._unchecked.clear()
        return rejected

    def _plan_migrations(self) -> dict[int, str]:
        """Send every prefilled sequence on a prefill device to the decode device with the
        most free blocks that can take it, reserving its room there first."""
        plan = {}
        decoders = [n for n, role in self._role.items() if role == "decode"]
        for name, role in self._role.items():
            rows = self._rows[name]
            if role != "prefill" or rows.ids.size == 0:
                continue
            ready = np.flatnonzero(rows.computed > 0)
            for i in ready[np.argsort(rows.rank[ready], kind="stable")].tolist():
                rid, known = int(rows.ids[i]), int(rows.known[i])
                if rid in self._moving or rid in self._local:
                    continue
                # Only a decode device that can hold the sequence to its cap: on a smaller one
                # it would outgrow the device and preempt itself with nothing left to plan.
                request = self._requests.get(rid)
                if request is None:
                    continue   # aborted while its step ran: update drops the row
                whole = -(-(request.prompt_tokens + request.max_new_tokens) // self.block_size)
                fits = [n for n in decoders if self._kv[n].num_blocks >= whole
                        and self._kv[n].can_grow(rid, known)]
                if not fits:
                    break
                target = max(fits, key=lambda n: self._kv[n].num_free_blocks)
                self._kv[target].grow(rid, known)
                self._moving[rid] = (name, target)
                plan[rid] = target
        return plan

    # -- one device's step ----------------------------------------------------------------
    def _step(self, name: str) -> Batch | None:
        """Decodes first (every row on a decode device; local rows on a prefill device), then
        whole prompts: the split route's on prefill devices, local ones on any device."""
        role, rows = self._role[name], self._rows[name]
        dec = self._fit_decodes(name)
        ids, new, cached = [rows.ids[dec]], [rows.known[dec] - rows.computed[dec]], \
            [rows.computed[dec]]
        room, budget, admitted = self.max_num_seqs - dec.size, self.max_prefill_tokens, []
        if role != "decode":
            budget = self._admit(name, self._queue, room, budget, admitted)
        self._admit(name, self._local_queue, room, budget, admitted)
        if admitted:
            a = np.array(admitted, np.int64)
            ids.append(a)
            new.append(rows.known[rows.find(a)[0]])
            cached.append(np.zeros(a.size, np.int64))
        ids = np.concatenate(ids)
        if ids.size == 0:
            return None
        return Batch(ids, np.concatenate(new), np.concatenate(cached))

    def _fit_decodes(self, name: str) -> np.ndarray:
        """Positions of the rows to decode (earliest arrivals first, at most max_num_seqs),
        grown by one token each; preempts the latest arrival while memory falls short."""
        rows, kv = self._rows[name], self._kv[name]
        while True:
            if self._role[name] == "prefill":  # the rest wait for their transfer
                mine = np.flatnonzero(np.isin(rows.ids, list(self._local)))
            else:
                mine = np.arange(rows.ids.size)
            sel = mine[np.argsort(rows.rank[mine], kind="stable")[: self.max_num_seqs]]
            if kv.can_grow(rows.ids[sel], rows.known[sel]):
                kv.grow(rows.ids[sel], rows.known[sel])
                return sel
            movable = np.flatnonzero(~np.isin(rows.ids, list(self._moving)))
            victim = int(movable[np.argmax(rows.rank[movable])])
            rid = int(rows.ids[victim])
            kv.free(rid)
            del self._where[rid]
            self._known[rid] = int(rows.known[victim])  # recompute prompt + generated
            queue = self._local_queue if rid in self._local else self._queue
            heapq.heappush(queue, (self._rank[rid], rid))
            rows.take(np.arange(rows.ids.size) != victim)

    def _admit(self, name: str, queue: list, room: int, budget: int, admitted: list) -> int:
        """Whole prompts from `queue`, in arrival order, under the prefill token budget (the
        first one runs even if it alone exceeds it) and this device's memory; a local request
        only where it can grow to its end. Appends to `admitted`; returns the budget left."""
        rows, kv = self._rows[name], self._kv[name]
        whole = kv.num_blocks * self.block_size
        while queue and len(admitted) < room:
            rank, rid = queue[0]
            request = self._requests.get(rid)
            if request is None or rid in self._where or self._rank[rid] != rank:
                heapq.heappop(queue)  # aborted, or a stale entry
                continue
            known = self._known.get(rid) or request.prompt_tokens
            if (known > budget and admitted) or not kv.can_grow(rid, known) or (
                    rid in self._local and request.prompt_tokens + request.max_new_tokens > whole):
                break
            kv.grow(rid, known)
            heapq.heappop(queue)
            self._known.pop(rid, None)
            self._where[rid] = name
            rows.append(rid, 0, known, rank)
            admitted.append(rid)
            budget -= known
        return budget
