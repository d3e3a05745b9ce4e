"""Attention-length bucketing: what static-shape backends do (pad every row to a warmed length).

Backends that compile one graph per shape (XLA on TPUs, Neuron, TensorRT engines built for
fixed profiles) cannot run a batch of arbitrary lengths: they warm up a few lengths, the
bucket edges, and pad every sequence up to the edge of its bucket. This policy schedules for
such a backend. A sequence belongs to the bucket of the length it reaches in its next step
(its prompt for a prefill, its context + 1 for a decode), so it moves up a bucket as it
grows. A step runs the sequences of one bucket only, padded to that bucket's edge; the
padding costs compute and memory (the KV cache of a row is allocated at the edge, as a static
shape requires) and is reported as `padded_tokens` in every step's cost and as
`padding_fraction` in the run's summary.

Which bucket runs next: `pick="fullest"` (most sequences ready, ties to the one that waited
longest) or `pick="oldest"` (the bucket whose oldest sequence has waited longest). Under
"fullest" a bucket whose oldest sequence has waited `max_wait` seconds goes first, so a lone
long request is not starved by a busy short bucket.

Bucket edges: `buckets="exponential"` (min_len, 2 min_len, 4 min_len, ... up to max_len),
`"linear"` (num_buckets evenly spaced edges up to max_len), or explicit edges such as
`"256,1024,4096"` (or `[256, 1024, 4096]` from Python or a TOML array). Edges larger than
the largest device's KV memory are replaced by that memory, the largest shape that fits. A request whose prompt + max_new_tokens exceeds the
largest edge is rejected up front. Running sequences
that cannot grow into their next bucket are preempted (recomputed later), latest arrival
first, as in continuous batching.
"""

from __future__ import annotations

import heapq
import numbers

import attrs
import numpy as np

from ..core import Batch, KVBlockManager, Plan, Request
from ..core.reoffer import plan_devices
from ..core.validators import positive, seconds


def _pick(instance, attribute, value):
    if value not in ("fullest", "oldest"):
        raise ValueError(f"{attribute.name} must be 'fullest' or 'oldest', got {value!r}")


def bucket_edges(buckets, num_buckets: int, min_len: int, max_len: int) -> np.ndarray:
    """The edges a `buckets` setting describes, increasing; ValueError names the field.
    Explicit edges come as a string ('256,1024,4096', from the CLI) or a list of ints (from
    Python or a TOML array)."""
    if buckets == "exponential":
        if min_len > max_len:
            raise ValueError(f"min_len ({min_len}) must not exceed max_len ({max_len})")
        edges, e = [], min_len
        while e < max_len:
            edges.append(e)
            e *= 2
        return np.array(edges + [max_len], dtype=np.int64)
    if buckets == "linear":
        return -(-max_len * np.arange(1, num_buckets + 1, dtype=np.int64) // num_buckets)
    edges = np.zeros(0, dtype=np.int64)   # not edges at all: the error below says what is
    if isinstance(buckets, str):
        try:
            edges = np.array([int(x) for x in buckets.split(",") if x.strip()], dtype=np.int64)
        except (ValueError, OverflowError):
            pass
    elif isinstance(buckets, (list, tuple)) and all(
            isinstance(x, numbers.Integral) and not isinstance(x, bool) and 0 < x < 2**62
            for x in buckets):
        edges = np.array(buckets, dtype=np.int64)
    if edges.size == 0 or edges[0] < 1 or (np.diff(edges) <= 0).any():
        raise ValueError(f"buckets must be 'exponential', 'linear' or increasing positive "
                         f"edges such as '256,1024,4096' or [256, 1024, 4096], got "
                         f"{buckets!r}"[:300])
    return edges


_EMPTY = np.zeros(0, dtype=np.int64)


@attrs.define
class _Rows:
    """One device's running sequences (unordered; `rank` is arrival order)."""

    ids: np.ndarray = _EMPTY
    computed: np.ndarray = _EMPTY   # tokens in the KV cache
    known: np.ndarray = _EMPTY      # prompt + generated: the length after the next step
    rank: np.ndarray = _EMPTY
    since: np.ndarray = attrs.field(factory=lambda: np.zeros(0))  # ready since (s)
    scheduled: np.ndarray | None = None  # positions of the rows in flight

    def take(self, keep) -> None:
        for f in ("ids", "computed", "known", "rank", "since"):
            setattr(self, f, getattr(self, f)[keep])

    def append(self, ids, known, rank, now) -> None:
        n = len(ids)
        self.ids = np.concatenate([self.ids, np.array(ids, np.int64)])
        self.computed = np.concatenate([self.computed, np.zeros(n, np.int64)])
        self.known = np.concatenate([self.known, np.array(known, np.int64)])
        self.rank = np.concatenate([self.rank, np.array(rank, np.int64)])
        self.since = np.concatenate([self.since, np.full(n, float(now))])


@attrs.define
class Bucketing:
    """Run one length bucket per step, every row padded to the bucket's edge, as
    static-shape backends do; choose the fullest (or the longest-waiting) bucket."""

    buckets: str = "exponential"
    num_buckets: int = attrs.field(default=8, validator=positive)    # "linear" only
    min_len: int = attrs.field(default=128, validator=positive)      # "exponential" only
    max_len: int = attrs.field(default=16384, validator=positive)
    pick: str = attrs.field(default="fullest", validator=_pick)
    max_wait: float = attrs.field(default=1.0, validator=seconds)  # 0: never forced
    max_batch: int = attrs.field(default=64, validator=positive)
    block_size: int = attrs.field(default=16, validator=positive)
    name: str = attrs.field(default="bucketing", init=False)
    edges: np.ndarray = attrs.field(init=False)
    num_padded_tokens: int = attrs.field(default=0, init=False)  # padding fed, summed
    num_real_tokens: int = attrs.field(default=0, init=False)    # cached + new, summed
    _num_preempted: int = attrs.field(default=0, init=False)     # preemptions so far
    _requests: dict = attrs.field(factory=dict, init=False)  # id -> Request, until it ends
    _unchecked: list = attrs.field(factory=list, init=False)
    _waiting: list = attrs.field(init=False)                 # per bucket: heap of (rank, id)
    _num_waiting: np.ndarray = attrs.field(init=False)       # live entries per bucket
    _bucket: dict = attrs.field(factory=dict, init=False)    # waiting id -> bucket
    _known: dict = attrs.field(factory=dict, init=False)     # preempted id -> known tokens
    _rank: dict = attrs.field(factory=dict, init=False)      # id -> arrival rank
    _where: dict = attrs.field(factory=dict, init=False)     # running id -> device name
    _rows: dict = attrs.field(factory=dict, init=False)      # device name -> _Rows
    _kv: dict = attrs.field(factory=dict, init=False)        # device name -> KVBlockManager
    _launched: dict = attrs.field(factory=dict, init=False)  # id(batch) -> device name
    _aborted: set = attrs.field(factory=set, init=False)     # aborted while in flight
    _fitted: bool = attrs.field(default=False, init=False)   # edges fitted to the devices

    def __attrs_post_init__(self):
        self.edges = bucket_edges(self.buckets, self.num_buckets, self.min_len, self.max_len)
        self._waiting = [[] for _ in self.edges]
        self._num_waiting = np.zeros(len(self.edges), dtype=np.int64)

    def bucket_of(self, lengths):
        """Index of the smallest edge that holds each length."""
        return np.searchsorted(self.edges, lengths, side="left")

    # -- protocol -----------------------------------------------------------------------------
    def add(self, request: Request, now: float) -> None:
        self._requests[request.id] = request
        self._rank[request.id] = len(self._rank)
        self._unchecked.append(request)

    def abort(self, request_id: int) -> None:
        if self._requests.pop(request_id, None) is None:
            return
        self._unchecked = [r for r in self._unchecked if r.id != request_id]
        self._known.pop(request_id, None)
        b = self._bucket.pop(request_id, None)
        if b is not None:  # its heap entry is skipped when it reaches the head
            self._num_waiting[b] -= 1
        device = self._where.pop(request_id, None)
        if device is None:
            return
        self._kv[device].free(request_id)
        rows = self._rows[device]
        if rows.scheduled is None:
            rows.take(rows.ids != request_id)
        else:  # positions of the batch in flight must stay valid: drop it at update
            self._aborted.add(request_id)

    def schedule(self, now: float, devices) -> Plan:
        for device in devices:  # every device is idle, hence offered, at the first call
            if device.name not in self._kv:
                self._kv[device.name] = KVBlockManager.for_capacity(
                    device.kv_capacity_tokens, self.block_size)
                self._rows[device.name] = _Rows()
        if not self._fitted:
            self._fit_edges()
        rejected = self._enqueue_new()
        batches = plan_devices(devices, lambda d: self._schedule_device(d.name, now),
                               lambda: self._num_preempted)
        for name, batch in batches.items():
            self._launched[id(batch)] = name
        return Plan(batches, rejected=rejected)

    def update(self, batch: Batch, result, now: float) -> None:
        name = self._launched.pop(id(batch))
        rows = self._rows[name]
        pos, rows.scheduled = rows.scheduled, None
        fed = batch.num_cached_tokens + batch.num_new_tokens
        rows.computed[pos] = fed
        rows.known[pos] = np.where(result.emitted, fed + 1, rows.known[pos])
        rows.since[pos] = now
        self.num_padded_tokens += batch.num_padded_tokens
        self.num_real_tokens += batch.num_context_tokens
        gone = np.zeros(rows.ids.size, dtype=bool)
        if result.finished.any():
            gone[pos[result.finished]] = True
            done = batch.request_ids[result.finished]
            self._kv[name].free(done)
            for rid in done.tolist():
                self._requests.pop(rid, None)
                self._where.pop(rid, None)
        if self._aborted:
            gone |= np.isin(rows.ids, np.fromiter(self._aborted, np.int64))
            self._aborted.difference_update(rows.ids.tolist())
        if gone.any():
            rows.take(~gone)

    def check_valid(self) -> None:
        for name, rows in self._rows.items():
            kv = self._kv[name]
            kv.check_valid()
            live = np.array([rid not in self._aborted for rid in rows.ids.tolist()], bool)
            held = kv.num_held(rows.ids[live]) * self.block_size  # aborted rows hold none
            computed = rows.computed[live]
            assert (held >= computed).all(), "a row's cache exceeds its blocks"
            edge = self.edges[self.bucket_of(computed)]
            assert (held >= np.where(computed > 0, edge, 0)).all(), (
                "a row holds less memory than its bucket's edge")
            assert len(set(rows.ids.tolist())) == rows.ids.size, "a request runs twice"
            assert all(self._where.get(r) == name for r in rows.ids[live].tolist())
        for b, heap in enumerate(self._waiting):
            live = {rid for _, rid in heap if self._bucket.get(rid) == b}
            assert len(live) == self._num_waiting[b], f"bucket {b}: waiting count is off"
        assert not set(self._bucket) & set(self._where), "a request waits and runs"

    # -- one device's step ----------------------------------------------------------------
    def _schedule_device(self, name: str, now: float) -> Batch | None:
        rows = self._rows[name]
        nb = len(self.edges)
        rb = self.bucket_of(rows.known)
        count = np.bincount(rb, minlength=nb) + self._num_waiting
        oldest = np.full(nb, np.inf)
        np.minimum.at(oldest, rb, rows.since)
        for b in np.flatnonzero(self._num_waiting).tolist():
            head = self._head(b)
            oldest[b] = min(oldest[b], self._requests[head].arrival)
        if self.pick == "oldest":
            order = np.argsort(oldest, kind="stable")
        else:
            fill = np.minimum(count, self.max_batch)
            overdue = (oldest <= now - self.max_wait) if self.max_wait > 0 else np.zeros(nb, bool)
            # overdue buckets first (oldest first), then the fullest, ties to the oldest
            order = np.lexsort((oldest, -fill, np.where(overdue, oldest, np.inf)))
        for b in order[count[order] > 0].tolist():
            batch = self._build(name, int(b), now)
            if batch is not None:
                return batch
        return None

    def _build(self, name: str, b: int, now: float) -> Batch | None:
        """The batch of bucket b on this device: its running rows (earliest arrivals first),
        then waiting requests of the bucket while the row cap and memory allow."""
        rows, kv, edge = self._rows[name], self._kv[name], int(self.edges[b])
        while True:  # grow the bucket's running rows to the edge, preempting if need be
            sel = np.flatnonzero(self.bucket_of(rows.known) == b)
            sel = sel[np.argsort(rows.rank[sel], kind="stable")[: self.max_batch]]
            if sel.size == 0 or kv.can_grow(rows.ids[sel], edge):
                kv.grow(rows.ids[sel], edge)
                break
            self._preempt(name, int(np.argmax(rows.rank)))  # the latest arrival goes
        ids, knowns, ranks = [], [], []
        heap = self._waiting[b]
        while sel.size + len(ids) < self.max_batch and self._num_waiting[b]:
            rid = self._head(b)
            if not kv.can_grow(rid, edge):
                break
            kv.grow(rid, edge)
            heapq.heappop(heap)
            del self._bucket[rid]
            self._num_waiting[b] -= 1
            self._where[rid] = name
            ids.append(rid)
            knowns.append(self._known.pop(rid, None) or self._requests[rid].prompt_tokens)
            ranks.append(self._rank[rid])
        if ids:
            sel = np.concatenate([sel, np.arange(rows.ids.size, rows.ids.size + len(ids))])
            rows.append(ids, knowns, ranks, now)
        if sel.size == 0:
            return None
        rows.scheduled = sel
        return Batch(rows.ids[sel], rows.known[sel] - rows.computed[sel], rows.computed[sel],
                     padded_len=edge)

    def _fit_edges(self) -> None:
        """Edges above the largest device's memory become that memory (in whole blocks): the
        largest shape that fits is the one a static-shape server would warm up. Done once,
        at the first schedule, before any request is queued in a bucket."""
        self._fitted = True
        cap = max(kv.num_blocks for kv in self._kv.values()) * self.block_size
        if cap and self.edges[-1] > cap:
            self.edges = np.append(self.edges[self.edges < cap], cap)
            self._waiting = [[] for _ in self.edges]
            self._num_waiting = np.zeros(len(self.edges), dtype=np.int64)

    def _head(self, b: int) -> int:
        """The earliest live waiting request of bucket b (drops aborted entries)."""
        heap = self._waiting[b]
        while self._bucket.get(heap[0][1]) != b:
            heapq.heappop(heap)
        return heap[0][1]

    def _push_waiting(self, rid: int, known: int) -> None:
        b = int(self.bucket_of(known))
        heapq.heappush(self._waiting[b], (self._rank[rid], rid))
        self._bucket[rid] = b
        self._num_waiting[b] += 1

    def _preempt(self, name: str, pos: int) -> None:
        """Free a running row's memory and queue it to be recomputed from scratch."""
        rows = self._rows[name]
        rid = int(rows.ids[pos])
        self._num_preempted += 1
        self._kv[name].free(rid)
        del self._where[rid]
        self._known[rid] = int(rows.known[pos])
        self._push_waiting(rid, self._known[rid])
        rows.take(np.arange(rows.ids.size) != pos)

    def _enqueue_new(self) -> list[int]:
        """Queue new requests in their prompt's bucket, or reject those that could never
        run: longer than the largest edge (which fits the largest device)."""
        rejected = []
        for r in self._unchecked:
            if r.prompt_tokens + r.max_new_tokens > self.edges[-1]:
                rejected.append(r.id)
                self._requests.pop(r.id, None)
            else:
                self._push_waiting(r.id, r.prompt_tokens)
        self._unchecked.clear()
        return rejected
