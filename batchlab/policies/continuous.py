"""Continuous batching: iteration-level scheduling, as Orca and vLLM do it.

Every step, per idle device: the sequences already running there get tokens first (a decode
needs one; a prefill or a recompute needs the rest of its known tokens), in priority order,
under a token budget (`max_num_batched_tokens`); then waiting requests are admitted while the
budget, the sequence cap (`max_num_seqs`) and KV memory allow. With `chunked_prefill` a long
prompt is split across steps so decodes keep flowing (Sarathi); without it a prompt runs whole
(a prompt larger than the budget is let through as the step's only prefill, or it could
never run). Decodes are served before prefills, so a long prompt never stalls them.

When KV blocks run out, the lowest-ranked running sequence on that device is preempted: its
blocks are freed and it goes back to the waiting queue, to be recomputed from scratch later
(recompute, as vLLM does by default) — never dropped. Order is FCFS (arrival) or priority
(higher first, then arrival).

Hooks, for policies that change only what most custom policies change (subclass and override;
each default is today's behaviour, so the built-in is unchanged):
- `rank_key(request) -> number`: smaller runs first, in the waiting queue and among the
  running rows (the largest is preempted first); ties go by arrival. Called once, at `add`.
- `may_admit(request, device) -> bool`: may this waiting request start now on this device?
  A refused request keeps its place and is asked about again at the next step.
- `max_num_seqs_on(device)`, `token_budget_on(device)`: per-device sequence cap and token
  budget (default: the `max_num_seqs` and `max_num_batched_tokens` parameters).
Hooks may read `num_running_on(device)` and `num_waiting()`; they must not change state.

Speed: the running set of each device is kept as numpy arrays sorted by rank, so a step costs
a handful of whole-array operations, not a Python loop over sequences. And when a step feeds
every running row and leaves the next steps the same decisions again until something
changes (a pure decode that admitted nobody; or a step that admitted the last waiting
prompts whole, so every row emits and the next steps decode them all), the policy plans it
as a multi-step batch (`Batch.num_steps`, up to `max_num_steps`, as far as the KV blocks it
can reserve now reach; on a single device, see `may_plan_ahead`). While nobody waits, a
finish changes nothing but the batch's rows, so the batch lets finished rows drop out
(`Batch.drop_finished`) rather than end there. The engine stops it at the first event that
matters, and the records are the same as when every step is planned on its own
(`max_num_steps=1`).
"""

from __future__ import annotations

import attrs
import numpy as np

from ..core import Batch, KVBlockManager, Plan, PolicyError, Request
from ..core.fastnp import ONE, count_nonzero
from ..core.reoffer import plan_devices
from ..core.validators import positive, seconds
from .plan_ahead import PlanAheadGauge
from .running import RunningRows, merged_order
from .waiting import WaitingQueue


# 0..n-1 for the rows of a step that feeds every running row (`_schedule_device`)
_ROWS = np.arange(1 << 12)
_ROWS.setflags(write=False)


def _order(instance, attribute, value):
    if value not in ("fcfs", "priority"):
        raise ValueError(f"{attribute.name} must be 'fcfs' or 'priority', got {value!r}")




@attrs.define
class ContinuousBatching:
    """Iteration-level batching under a token budget, with chunked prefill and preemption by
    recompute when KV memory runs out."""

    max_num_batched_tokens: int = attrs.field(default=8192, validator=positive)
    max_num_seqs: int = attrs.field(default=256, validator=positive)
    chunked_prefill: bool = True
    order: str = attrs.field(default="fcfs", validator=_order)
    block_size: int = attrs.field(default=16, validator=positive)
    # Micro-batches per step, for pipeline-parallel devices (capped by the batch's rows).
    num_micro_batches: int = attrs.field(default=1, validator=positive)
    # Seconds an idle device may wait to gather a fuller step (0: never wait). A step starts
    # once max_num_seqs requests are in hand or the window since the device went idle ends:
    # the MoE trade of latency for tokens per expert.
    window: float = attrs.field(default=0.0, validator=seconds)
    # Seconds new prompts are held back while sequences run (vLLM's scheduler delay): a
    # device that is decoding admits waiting prompts only once the oldest has waited this
    # long, so they join in fewer, fuller prefill steps; decodes never wait. An idle device
    # admits at once. `window` above delays every step; this delays admissions only.
    admission_delay: float = attrs.field(default=0.0, validator=seconds)
    # Steps a pure decode batch may be planned ahead (multi-step plans); 1: plan every step.
    max_num_steps: int = attrs.field(default=64, validator=positive)
    name: str = attrs.field(default="continuous", init=False)
    # Entries (sort key, rank, id, prompt tokens, arrival): ranks are distinct, so an entry
    # sorts by (sort key, rank) alone.
    _waiting: WaitingQueue = attrs.field(factory=WaitingQueue, init=False)
    # id -> its entry, until it ends: the very tuple the queue holds while it waits (a queue
    # entry is current if it is this one), and numbers, not the Request, which the cyclic GC
    # would walk at every full collection (an overloaded run keeps ~500k waiting; a tuple of
    # numbers is untracked)
    _requests: dict = attrs.field(factory=dict, init=False)
    _asked: dict = attrs.field(factory=dict, init=False)  # id -> Request, for a may_admit override
    _known: dict = attrs.field(factory=dict, init=False)     # id -> known tokens if preempted
    _where: dict = attrs.field(factory=dict, init=False)     # id -> device name if running
    _running: dict = attrs.field(factory=dict, init=False)   # device name -> RunningRows
    _kv: dict = attrs.field(factory=dict, init=False)        # device name -> KVBlockManager
    _launched: dict = attrs.field(factory=dict, init=False)  # id(batch) -> device name
    _aborted: set = attrs.field(factory=set, init=False)     # aborted while in flight
    _unchecked: list = attrs.field(factory=list, init=False)
    # [arrival rank of the last request added] (a list: set in place, no attrs setattr hook)
    _rank: list = attrs.field(factory=lambda: [0], init=False)
    _idle_since: dict = attrs.field(factory=dict, init=False)  # device name -> time
    _offered: dict = attrs.field(factory=dict, init=False)   # device name -> device, for hooks
    # [device, admitted so far] while admitting (a list: set in place, no attrs setattr hook)
    _admitting: list = attrs.field(factory=lambda: [None, 0], init=False)
    # [now] of the last schedule call (a list: set in place, no attrs setattr hook)
    _clock: list = attrs.field(factory=lambda: [0.0], init=False)
    # whether multi-step plans pay for themselves (plan_ahead.py)
    _payoff: PlanAheadGauge = attrs.field(factory=PlanAheadGauge, init=False)
    # [most KV blocks of any device seen] (set as each device is first offered: devices do
    # not change during a run; a list: set in place, no attrs setattr hook)
    _most_blocks: list = attrs.field(factory=lambda: [0], init=False)

    # -- hooks: override in a subclass (see the module docstring) -----------------------------
    def rank_key(self, request: Request) -> float:
        """Sort key of a request, smaller first; ties go by arrival."""
        return -float(request.priority) if self.order == "priority" else 0.0

    def may_admit(self, request: Request, device) -> bool:
        """Whether the waiting `request` may start now on `device` (an idle Device). A
        refusal that could turn into a yes without an arrival, a finish or a wake-up (one that
        reads the clock) needs `max_num_steps=1`, or a multi-step batch runs past it."""
        return True

    def max_num_seqs_on(self, device) -> int:
        """Most sequences running at once on `device`."""
        return self.max_num_seqs

    def token_budget_on(self, device) -> int:
        """Most tokens fed in one step on `device`."""
        return self.max_num_batched_tokens

    def _asks(self) -> bool:
        """Whether may_admit is overridden (else it says yes, and needs no Request kept)."""
        return type(self).may_admit is not ContinuousBatching.may_admit

    # -- what hooks may read ----------------------------------------------------------------
    def num_running_on(self, device) -> int:
        """Sequences holding memory on `device` now (admitted, not finished or preempted)."""
        run = self._running.get(device.name)
        admitting = self._admitting[1] if self._admitting[0] == device.name else 0
        return admitting + (0 if run is None else int(run.ids.size))

    def num_waiting(self) -> int:
        """Requests waiting to start (new, or preempted to be recomputed)."""
        return len(self._requests) - len(self._where)
    _num_preempted: int = attrs.field(default=0, init=False)   # preemptions so far

    # -- protocol -----------------------------------------------------------------------------
    def add(self, request: Request, now: float) -> None:
        self._rank[0] = rank = self._rank[0] + 1
        key = self.rank_key(request)
        if isinstance(key, bool) or not isinstance(key, (int, float, np.integer, np.floating)) \
                or key != key:
            raise PolicyError(self.name, "rank_key", f"rank_key must return a number (smaller "
                              f"runs first), got {key!r} for request {request.id}")
        rid, key = request.id, float(key)
        self._requests[rid] = entry = (key, rank, rid, request.prompt_tokens, request.arrival)
        if self._asks():
            self._asked[rid] = request
        self._waiting.push(entry)
        self._unchecked.append(request)

    def abort(self, request_id: int) -> None:
        if self._requests.pop(request_id, None) is None:
            return
        self._asked.pop(request_id, None)
        self._known.pop(request_id, None)
        device = self._where.pop(request_id, None)
        if device is None:
            return  # a waiting entry is skipped when it reaches the head of the queue
        self._kv[device].free(request_id)
        run = self._running[device]
        if run.scheduled is None:
            run.take(run.ids != request_id)
        else:  # its row is in flight: drop it when the step comes back
            self._aborted.add(request_id)

    def schedule(self, now: float, devices) -> Plan:
        for device in devices:  # every device is idle, hence offered, at the first call
            if device.name not in self._kv:
                self._kv[device.name] = kv = KVBlockManager.for_capacity(
                    device.kv_capacity_tokens, self.block_size)
                self._running[device.name] = RunningRows()
                self._most_blocks[0] = max(self._most_blocks[0], kv.num_blocks)
            self._offered[device.name] = device
        rejected = self._reject_impossible()
        self._clock[0] = now
        wake, todo = None, []
        for device in devices:
            if self.window > 0:
                due = self._idle_since.setdefault(device.name, now) + self.window
                if now < due and len(self._requests) < self.max_num_seqs:
                    if self._requests:  # work in hand: come back when the window ends
                        wake = due if wake is None else min(wake, due)
                    continue
            todo.append(device)
        batches = plan_devices(todo, lambda d: self._schedule_device(d.name),
                               lambda: self._num_preempted)
        for name, batch in batches.items():
            self._launched[id(batch)] = name
        return Plan(batches, wake_at=wake, rejected=rejected)

    def update(self, batch: Batch, result, now: float) -> None:
        name = self._launched.pop(id(batch))
        self._idle_since[name] = now
        run = self._running[name]
        rows, run.scheduled = run.scheduled, None
        steps = getattr(result, "num_steps", 1)
        if batch.num_steps > 1:
            self._payoff.book(steps > 1)
        fed = batch.num_cached_tokens + batch.num_new_tokens
        if steps > 1:
            fed = fed + (steps - 1)
        # A batch stopped early leaves blocks reserved ahead for steps that did not run: the
        # next schedule gives them back (`_fit_running` fits each row's blocks to its tokens,
        # in the pass that would grow them after a trim here: ~4 us a stretch).
        # The batch ran every row (most steps): rows is 0..n-1 (the running set cannot change
        # while its batch is in flight), so fed, a fresh array, replaces the column whole.
        whole = rows.size == run.ids.size
        if whole:
            run.computed = fed
        else:
            run.computed[rows] = fed
        # An emitted token is known from now on: it is fed at the next step.
        emitted = result.emitted
        if count_nonzero(emitted) == emitted.size:  # every row (always, in a stretch)
            if whole:
                run.known = fed + ONE
            else:
                run.known[rows] = fed + ONE
        else:
            run.known[rows] = np.where(emitted, fed + 1, run.known[rows])
        finished = result.finished
        num_finished = count_nonzero(finished)
        if not (num_finished or self._aborted):
            return  # nobody leaves the running set
        if num_finished:
            done = batch.request_ids[finished]
            self._kv[name].free(done, unique=True)
            requests, where, asked = self._requests, self._where, self._asked
            for rid in done.tolist():
                requests.pop(rid, None)
                where.pop(rid, None)
                if asked:
                    asked.pop(rid, None)
        if whole and not self._aborted:  # rows is 0..n-1: the rows not finished stay
            run.take(np.logical_not(finished))
            return
        gone = np.zeros(run.ids.size, dtype=bool)
        if num_finished:
            gone[rows[finished]] = True
        if self._aborted:
            gone |= np.isin(run.ids, np.fromiter(self._aborted, np.int64))
            self._aborted.difference_update(batch.request_ids.tolist())
        if count_nonzero(gone):
            run.take(~gone)

    def check_valid(self) -> None:
        for name, run in self._running.items():
            kv = self._kv[name]
            kv.check_valid()
            live = ~np.isin(run.ids, np.fromiter(self._aborted, np.int64, len(self._aborted)))
            ids, computed = run.ids[live], run.computed[live]  # aborted rows hold nothing
            assert (run.computed <= run.known).all(), "a row computed more than it knows"
            held = kv.num_held(ids) * self.block_size
            assert (held >= computed).all(), "a row's cache exceeds its blocks"
            assert len(set(run.ids.tolist())) == run.ids.size, "a request runs twice"
            assert all(self._where.get(rid) == name for rid in ids.tolist()), (
                "running rows and _where disagree")
            assert run.ids.size <= self.max_num_seqs_on(self._offered[name])

    # -- one device's step ----------------------------------------------------------------
    def _schedule_device(self, name: str) -> Batch | None:
        run, kv = self._running[name], self._kv[name]
        if run.ids.size == 0 and not self._waiting:  # an idle device with nothing to do:
            return None  # cheap, so a cluster of many idle devices costs little per call
        budget = self.token_budget_on(self._offered[name])
        preempted, take, num_fed, completes = self._fit_running(run, kv, budget)
        num_running = run.ids.size
        # like vLLM: no admissions in a step that had to preempt
        if not preempted and self._admission_due(run):
            take, whole = self._admit(name, run, kv, budget - num_fed, take)
            completes = completes and whole
        if count_nonzero(take) == take.size:  # every row gets tokens (most steps)
            # 0..n-1 as a slice of a kept read-only range (~0.2 us less than np.arange)
            rows = _ROWS[:take.size] if take.size <= _ROWS.size else np.arange(take.size)
        else:
            rows = np.flatnonzero(take)
        if rows.size == 0:
            return None
        run.scheduled = rows
        steps, drop = 1, False
        # Not while admissions are held back (admission_delay): the hold ends at a time the
        # engine does not know of, so a stretch could run past it.
        if (self.max_num_steps > 1 and self.window == 0 and not preempted
                and rows.size == run.ids.size and self.may_plan_ahead()
                and self._payoff.worth(self._waiting)):
            # Every row must complete what it knows, so emit, at the first step: a running
            # prompt's chunk can be a single leftover budget token and not finish it.
            if completes:  # known already (most steps): fed is what the rows know
                fed, emits = run.known, True  # (an addition and a comparison saved, ~1 us)
            else:
                fed = run.computed + take
                emits = not count_nonzero(fed != run.known)
            # None admitted (num_running == rows.size): take sums to num_fed, all decodes if
            # that is one token a row
            if emits and num_running == rows.size and num_fed == rows.size:
                if self.admission_delay == 0 or not self._waiting:  # all decode, none admitted
                    steps = self._steps_ahead(run, kv, fed)
            elif emits and not self._waiting and rows.size <= budget:
                # Nobody is left waiting: the next steps decode every row, as a pure decode
                # batch would.
                steps = self._steps_ahead(run, kv, fed)
            # Nobody waits for the room a finish frees: the other rows just run on.
            drop = steps > 1 and not self._waiting
        if rows.size == run.ids.size:  # every row (Batch copies its arrays anyway)
            ids, new, cached = run.ids, take, run.computed
        else:
            ids, new, cached = run.ids[rows], take[rows], run.computed[rows]
        return Batch(ids, new, cached, num_micro_batches=min(self.num_micro_batches, rows.size),
                     num_steps=steps, drop_finished=drop)

    def may_plan_ahead(self) -> bool:
        """Whether to plan multi-step batches at all: on one device. With several, every
        step another device ends stops a stretch (the policy would be asked then), so they
        would run a step or two and the reservation would cost more than it saves."""
        return len(self._kv) == 1

    def _steps_ahead(self, run: RunningRows, kv: KVBlockManager, fed: np.ndarray) -> int:
        """How many steps this batch of every running row may be planned ahead, and reserve
        them. fed: each row's tokens after this step (reserved already); every row emits.

        Planned one at a time, the next steps would decode the same rows: nothing is left
        to admit, or nothing was admitted now and the budget and the sequence cap stay as
        they are, while free blocks only shrink as the rows grow; and no row stops before
        the engine says so. They would differ only where a row could not grow, so the batch
        runs ahead as far as the blocks it can reserve now reach; unused ones are given back
        at the next call (`_fit_running`).
        """
        return 1 + kv.reserve_steps(run.ids, fed, self.max_num_steps - 1)

    def _admission_due(self, run: RunningRows) -> bool:
        if self.admission_delay <= 0 or run.ids.size == 0 or not self._waiting:
            return True
        entry = self._requests.get(self._waiting.peek()[2])  # a stale head: admit, it is skipped
        return entry is None or self._clock[0] >= entry[4] + self.admission_delay  # arrival

    def _fit_running(self, run: RunningRows, kv: KVBlockManager, budget: int):
        """Preempt the lowest-ranked rows until what this step feeds to the running rows
        fits in memory, and reserve it; returns (whether it preempted, tokens per row, their
        sum, whether every row is fed all it knows: True for sure, False where it is not
        known without comparing the arrays)."""
        preempted = False
        while True:
            take, fed, tokens = run.feed_within(budget, self.chunked_prefill)
            try:
                # Grows, or gives back blocks a batch stopped early had reserved ahead
                # (update leaves them): every row holds what its tokens need, no more (held
                # <= needed otherwise: rows hold what they computed). No change if it raises.
                kv.fit(run.ids, tokens)
                # tokens is run.known itself where every row is a decode (feed_within)
                return preempted, take, fed, tokens is run.known
            except MemoryError:
                pass
            victim = run.ids.size - 1
            rid = int(run.ids[victim])
            kv.free(rid)
            del self._where[rid]
            self._known[rid] = int(run.known[victim])  # prompt + generated, to recompute
            self._waiting.push(self._requests[rid])
            run.take(np.arange(run.ids.size) != victim)
            preempted = True
            self._num_preempted += 1

    def _admit(self, name, run: RunningRows, kv: KVBlockManager, left: int,
               take: np.ndarray) -> tuple[np.ndarray, bool]:
        """Admit waiting requests while budget, sequence cap and memory allow; returns the
        take of every row, the admitted ones included, in the running set's new order, and
        whether every admitted row is fed all it knows (its prompt, or what it recomputes)."""
        ids, takes, knowns = [], [], []
        device, admitting = self._offered[name], self._admitting
        cap, refused = self.max_num_seqs_on(device), []
        # no prefill in the batch yet (read only when prompts run whole)
        alone = not self.chunked_prefill and not (take > 1).any()
        # Locals: this loop runs for every admission and for the head that does not fit.
        waiting, requests, where = self._waiting, self._requests, self._where
        known_of, room = self._known, cap - run.ids.size
        asked = self._asked if self._asks() else None
        while len(ids) < room and left > 0:
            entry = waiting.peek()
            if entry is None:  # nobody waits
                break
            rid = entry[2]
            if requests.get(rid) is not entry or rid in where:
                waiting.pop()  # aborted, finished, already running, or its id added again
                continue
            if asked is not None:
                admitting[0], admitting[1] = name, len(ids)  # so num_running_on counts them
                if not self.may_admit(asked[rid], device):
                    refused.append(waiting.pop())  # keeps its place: pushed back
                    continue
            known = known_of.get(rid) or entry[3]  # else its prompt
            if self.chunked_prefill:
                chunk = min(known, left)
            elif known <= left or (alone and not ids):
                chunk = known
            else:
                break
            if not kv.grow_if_fits(rid, chunk):
                break
            waiting.pop()
            known_of.pop(rid, None)
            where[rid] = name
            ids.append(rid)
            takes.append(chunk)
            knowns.append(known)
            left -= chunk
        admitting[0], admitting[1] = None, 0
        for entry in refused:
            waiting.push(entry)
        if not ids:
            return take, True
        num_before = run.ids.size
        run.append(ids, knowns)
        if len(takes) == 1:  # one admitted (most steps that admit): its take an item set
            n = take.size
            joined = np.empty(n + 1, np.int64)
            joined[:n] = take
            joined[n] = takes[0]
            take = joined  # ~0.2 us less than concatenate converting the list
        else:  # a list goes into concatenate as it is: one conversion inside, not a call each
            take = np.concatenate((take, takes))
        # The first admitted is the best ranked of them (they left the heap in order).
        if num_before and requests[run.ids.item(num_before - 1)] > requests[ids[0]]:
            # A recomputed or high-priority request jumped in.
            order = merged_order(run.ids, num_before, requests)
            run.take(order)
            take = take[order]
        return take, takes == knowns

    def _reject_impossible(self) -> list[int]:
        """A request whose prompt + max_new_tokens exceeds every device's memory could be
        preempted forever; refuse it up front (its cap is visible, its true length is not)."""
        if not self._unchecked:  # nothing added since the last call (most steps)
            return []
        most = self._most_blocks[0]  # max(kv.num_blocks for kv in self._kv.values())
        too_big = [r.id for r in self._unchecked if r.id in self._requests  # not aborted
                   and -(-(r.prompt_tokens + r.max_new_tokens) // self.block_size) > most]
        self._unchecked.clear()
        for rid in too_big:
            self._requests.pop(rid, None)
            self._asked.pop(rid, None)
        return too_big
