"""The discrete-event simulator: drives any Scheduler on cost-model devices in simulated time.

A heap of (time, priority, sequence, payload) events: step completions, KV migrations ending,
arrivals, scheduler wake-ups and, when `faults` are given, device failures and repairs. At one
instant, completions come first (they free memory), then migrations, then arrivals, then
wake-ups, then failures and repairs; the sequence number breaks the remaining ties, so a run
is deterministic for a seed. After all events of an instant are handled, the policy is asked
to schedule if a device is idle — the loop reads as: schedule, run, update.

The engine keeps each request's true output length to itself (in a RequestTable), decides when
a request finishes, validates every batch, and stops a misbehaving policy with a PolicyError.
Fault injection (`batchlab.engines.faults`; its events are handled by the `FaultEvents`
mixin in `sim_faults.py`) costs nothing when no faults are configured: the only check on the
per-step path is one `is None` at launch.

Multi-step plans (`Batch.num_steps > 1`): the engine advances such a batch through its
steps in one go (`stretch.py`), up to the first event that matters: the next event of any
kind on the heap (an arrival, another device's step, a wake-up), at which the policy would
have been asked again, or a row finishing (the engine knows the true lengths), unless the
batch lets finished rows drop out (`Batch.drop_finished`) and the finish sends no
closed-loop follow-up. The device prices the steps in vectorised calls where it can, the
table and the device totals book them step by step (same records, same sums as single
steps), and the policy hears the net effect in one `update` whose result says how many
steps ran. With faults configured every batch runs one step (a failure may strike any step).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence

import numpy as np

from ..core import Request, StepCost, StepResult
from ..core.errors import ConfigError, PolicyError
from ..core.fastnp import count_nonzero
from ..core.protocols import policy_name
from ..core.table import REJECTED, WAITING, RequestTable
from .accounting import DeviceTotals
from .contract import (check_plan, check_policy_object, check_rejectable, check_seed,
                       check_workload, claim_policy, follow_ups, index_devices, launch_batches,
                       planned_id, policy_raised, request_of, stalled)
from .events import ARRIVAL, DONE, MOVED, PROGRESS, WAKE, WOKEN
from .faults import Faults
from .result import Result
from .sim_faults import FaultEvents
from .stretch import Stretch

# A policy that keeps asking to be woken without doing anything is stuck, not slow.
MAX_IDLE_WAKES = 1_000_000


class Simulator(FaultEvents):
    """One run of one policy on one workload; use `simulate()` unless you need the parts."""

    def __init__(self, policy, workload, devices: Sequence, *, seed: int = 0,
                 oracle: bool = False, progress=None, faults: Faults | None = None):
        self.seed, self.oracle = check_seed(seed), oracle
        self.policy, self.name = check_policy_object(policy, "simulate"), policy_name(policy)
        self.devices, self.index = index_devices(devices, "simulate")
        self.workload = check_workload(workload, "simulate").sample(np.random.default_rng(self.seed))
        wl = self.workload
        self.table = RequestTable.for_requests(wl.prompt_tokens, wl.output_tokens)
        self.heap: list = []
        self.seq = 0
        self.now = 0.0
        self.num_events = 0
        self.idle = [True] * len(self.devices)
        self.num_idle = len(self.devices)  # kept with `idle`: no O(devices) scan per event
        self.running: list = [None] * len(self.devices)  # (batch, result, stretch or None)
        # Per device: its last stretch's first decode step priced from totals (seconds), so
        # the next stretch prices about as many steps as its horizon reaches (stretch.py).
        self.step_hint: list = [None] * len(self.devices)
        self.totals = DeviceTotals(self.devices)
        self.stats = self.totals.stats
        self.pending_wake: float | None = None
        # progress(closed, total) is called as requests close, about every 1% of them.
        self.progress = progress
        self.progress_step = max(1, self.table.size // 100)
        self.progress_next = self.progress_step
        # Open-loop arrivals are fed to the heap one at a time, in arrival order, to keep the
        # heap small; closed-loop follow-ups are pushed when their predecessor finishes.
        arrival = wl.arrival
        timed = np.flatnonzero(~np.isnan(arrival))
        self.arrival_order = timed[np.argsort(arrival[timed], kind="stable")]
        self.next_arrival = 0
        self.follow_up = follow_ups(wl)
        self.has_follow_ups = bool((self.follow_up >= 0).any())
        self.faults = faults
        if faults is not None:
            if not isinstance(faults, Faults):
                raise ConfigError(f"simulate: faults must be a batchlab.engines.faults.Faults "
                                  f"or None, got {faults!r}"[:200])
            self._init_faults(faults)
        claim_policy(self.policy, "simulate")  # last: a refused call leaves it unused

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> Result:
        start = time.perf_counter()
        self._push_next_open_arrival()
        idle_wakes = 0
        while self.heap:
            changed = self._handle(heapq.heappop(self.heap))
            while self.heap and self.heap[0][0] == self.now:
                changed |= self._handle(heapq.heappop(self.heap))
            if changed and self.num_idle:
                launched = self._schedule()
                idle_wakes = 0 if launched or changed & PROGRESS else idle_wakes + 1
                if idle_wakes:  # a wake-up that launched nothing: the rare path
                    # Every request has ended, so nothing can arrive: a policy that keeps
                    # asking to be woken (a ticker) has no more work, as run_wallclock sees.
                    # Its wake-up is dropped (the heap's event is then stale) and the events
                    # left (scheduled failures) run out; before, it ticked a million times
                    # and failed 'liveness' with every request finished.
                    if self.table.num_closed == self.table.size:
                        self.pending_wake = None
                    elif idle_wakes > MAX_IDLE_WAKES:
                        raise PolicyError(self.name, "liveness", f"woke {idle_wakes} times in "
                                          "a row without launching anything")
        if self.table.num_closed < self.table.size:
            raise stalled(self.table, self.name)
        if self.progress is not None:
            self.progress(self.table.num_closed, self.table.size)
        return Result(self.table.records(), self.totals.table(), policy=self.name,
                      workload=self.workload.name, seed=self.seed,
                      wall_time=time.perf_counter() - start, num_events=self.num_events,
                      itl=self.table.itl.flush())

    def _push(self, t: float, priority: int, kind_payload) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, priority, self.seq, kind_payload))

    def _handle(self, event) -> int:
        """Process one event; PROGRESS or WOKEN if the policy should be asked again."""
        t, priority, _, payload = event
        self.now = t
        self.num_events += 1
        if priority == DONE:
            self._complete(payload)
            return PROGRESS
        if priority == ARRIVAL:
            self._arrive(payload)
            return PROGRESS
        if priority == MOVED:
            self._moved(*payload)
            return PROGRESS
        if priority > WAKE:
            return self._fault_event(priority, payload)
        if t != self.pending_wake:  # superseded by a later plan
            return 0
        self.pending_wake = None
        return WOKEN

    def _push_next_open_arrival(self) -> None:
        if self.next_arrival < self.arrival_order.size:
            rid = self.arrival_order.item(self.next_arrival)  # item(): a Python int
            self.next_arrival += 1
            self._push(self.workload.arrival.item(rid), ARRIVAL, rid)

    def _arrive(self, rid: int) -> None:
        self.table.arrive(rid, self.now)
        if not math.isnan(self.workload.arrival.item(rid)):
            self._push_next_open_arrival()
        self._call("add", self._request(rid), self.now)

    def _request(self, rid: int) -> Request:
        """Request `rid` as the policy sees it (after it has arrived)."""
        return request_of(self.workload, self.table, rid, oracle=self.oracle)

    def _closed(self, rids) -> None:
        """Closed loop: a user sends its next request think-time after the last one ended."""
        for rid in rids:
            nxt = int(self.follow_up[rid])
            if nxt >= 0:
                self._push(self.now + float(self.workload.think[nxt]), ARRIVAL, nxt)

    # -- schedule, run, update --------------------------------------------------------------
    def _schedule(self) -> bool:
        if self.num_idle == len(self.devices):  # one device, or all idle: no scan
            idle = list(self.devices)
        else:
            idle = [d for d, free in zip(self.devices, self.idle) if free]
        plan = check_plan(self._call("schedule", self.now, idle), self.name, self.now)
        for rid in plan.rejected:
            self._reject(rid)
        stretches = []
        for d, batch in launch_batches(plan, self.devices, self.index, self.table, self.name,
                                       self.now, self.idle):
            self.idle[d] = False
            self.num_idle -= 1
            if batch.num_steps > 1 and self.faults is None:
                stretches.append((d, batch))
                continue
            result = self.devices[d].run(batch)
            duration = result.duration
            if not (duration >= 0 and math.isfinite(duration)):
                raise ConfigError(f"device {self.devices[d].name!r} returned step duration "
                                  f"{duration!r}")
            self.running[d] = (batch, result, None)
            if self.faults is None:
                self._push(self.now + duration, DONE, d)
            else:
                self._launch_faulty(d, duration)
        for rid, target in plan.migrations.items():
            self._migrate(rid, target)
        if plan.wake_at is not None and plan.wake_at != self.pending_wake:
            self._push(plan.wake_at, WAKE, None)
        self.pending_wake = plan.wake_at
        if stretches:  # last: how far they may run depends on everything else on the heap
            self._launch_stretches(stretches)
        return bool(plan.batches) or bool(plan.rejected) or bool(plan.migrations)

    def _launch_stretches(self, stretches) -> None:
        """Run multi-step batches up to the first event that matters (module docstring).

        A step ending at or after the next event on the heap is a stretch's last: at that
        event the policy would have been asked again. Other stretches launched now count by
        their first step, the earliest they could ask. A stretch that ends after one step is
        booked as a plain step (the same records, cheaper).
        """
        top = self.heap[0][0] if self.heap else math.inf
        table, follow_up = self.table, self.follow_up
        started = []
        for d, batch in stretches:
            idx = batch.request_ids
            left = table.output[idx] - table.generated[idx]
            chained = None
            if batch.drop_finished and self.has_follow_ups:
                chained = follow_up[idx] >= 0
            started.append((d, Stretch(batch, self.devices[d], self.now, left, chained,
                                       self.step_hint[d])))
        # One stretch (one device, as in most runs): the heap alone sets its horizon.
        firsts = [st.first_end for _, st in started] if len(started) > 1 else None
        for i, (d, st) in enumerate(started):
            horizon = top if firsts is None else min([top] + firsts[:i] + firsts[i + 1:])
            num_run = st.settle(horizon)
            if st.decode_step is not None:
                self.step_hint[d] = st.decode_step
            if num_run == 1:
                result = st.first_result
                if result is None:
                    row = st.costs[0].tolist()
                    row[-1] = int(row[-1])
                    result = StepResult(float(st.durations[0]), StepCost(*row))
                self.running[d] = (st.batch, result, None)
            else:
                self.running[d] = (st.batch, None, st)
            self._push(st.last_end, DONE, d)

    def _migrate(self, rid, target: str) -> None:
        table, rid = self.table, planned_id(rid, self.name, "migration")
        d = self.index.get(target)
        if not (0 <= rid < table.size) or table.status[rid] != WAITING or table.in_flight[rid]:
            raise PolicyError(self.name, "migration", f"asked to move request {rid}, which is "
                              "not waiting (unknown, finished, or running)")
        if d is None or table.cached[rid] == 0 or table.home[rid] == d:
            what = ("no such device" if d is None else "nothing is cached"
                    if table.cached[rid] == 0 else "it is already there")
            raise PolicyError(self.name, "migration", f"asked to move request {rid}'s KV cache "
                              f"to {target!r}, but {what}")
        source = self.devices[int(table.home[rid])]
        transfer = getattr(source, "kv_transfer_time", None)
        if transfer is None:
            raise ConfigError(f"device {source.name!r} cannot transfer KV caches (it has no "
                              "kv_transfer_time); use devices that model their links")
        seconds = float(transfer(int(table.cached[rid]), self.devices[d]))
        table.start_migration(rid)
        self.stats[d]["kv_transfers"] += 1
        self.stats[d]["kv_transfer_time"] += seconds
        self._push(self.now + seconds, MOVED, (rid, d))

    def _moved(self, rid: int, d: int) -> None:
        self.table.end_migration(rid, d)
        self._call("migrated", rid, self.devices[d].name, self.now)

    def _reject(self, rid) -> None:
        rid = check_rejectable(self.table, rid, self.name)
        self.table.close(rid, REJECTED, self.now)
        self._closed((rid,))

    def _complete(self, d: int) -> None:
        batch, result, stretch = self.running[d]
        self.running[d] = None
        self.idle[d] = True
        self.num_idle += 1
        if stretch is None:
            emitted, finished, generated = self.table.complete(batch, self.now)
            self.totals.book(d, batch, result, count_nonzero(emitted))
            full = StepResult(result.duration, result.cost, emitted, finished, generated,
                              result.tokens)
            if self.faults is not None:
                self._progressed(emitted)
        else:
            ends, durations, costs = stretch.ends, stretch.durations, stretch.costs
            row_steps, totals = stretch.row_steps(), stretch.step_totals()
            emitted, finished, generated = self.table.complete_steps(
                batch, ends, row_steps, None if totals is None else totals[0])
            self.totals.book_steps(d, batch, durations, costs, totals)
            # np.add.reduce: what .sum() calls, without its Python-level wrapper.
            total = np.add.reduce(costs, axis=0).tolist()
            total[-1] = int(total[-1])  # padded tokens
            full = StepResult(float(np.add.reduce(durations)),
                              StepCost(*total, stretch.hidden_total()), emitted, finished,
                              generated, num_steps=len(ends))
        # Read `finished` before the policy sees it: the arrays are the policy's to keep, and
        # one that edits them in update must not lose a closed-loop follow-up.
        ended = count_nonzero(finished)  # several times faster than any() on small arrays
        # else no finish sends a next request: nothing to push
        closed = batch.request_ids[finished] if ended and self.has_follow_ups else None
        self._call("update", batch, full, self.now)
        if ended:
            if closed is not None:
                self._closed(closed)
            if self.progress is not None and self.table.num_closed >= self.progress_next:
                self.progress_next = self.table.num_closed + self.progress_step
                self.progress(self.table.num_closed, self.table.size)

    def _call(self, method: str, *args):
        """Call the policy; an exception in its code becomes a PolicyError naming it.
        `call_policy` inlined: a few calls a step, each one frame fewer."""
        try:
            return getattr(self.policy, method)(*args)
        except PolicyError:
            raise
        except (Exception, SystemExit) as exc:  # SystemExit too: see call_policy
            raise policy_raised(self.name, method, exc) from exc


def simulate(policy, workload, devices: Sequence, *, seed: int = 0,
             oracle: bool = False, progress=None, faults: Faults | None = None) -> Result:
    """Run `policy` (a Scheduler, or a policy name) on `workload` (a Workload or a
    WorkloadSpec, sampled with `seed`) across `devices`; return the Result.

    A Scheduler instance serves one run: pass a fresh one (or a name) each time.
    oracle: fill `Request.oracle_output_tokens` (for research on oracle schedulers only).
    progress: optional callable(closed_requests, total_requests), called about every 1%.
    faults: optional `batchlab.engines.faults.Faults`: steps that fail and devices that are
        down for a repair time; lost work is recomputed (see that module for the protocol).
        The result counts failures and destroyed KV tokens per device (`failures`,
        `recomputed_tokens`).
    """
    if isinstance(policy, str):
        from ..policies.discovery import load_policy
        policy = load_policy(policy)
    return Simulator(policy, workload, devices, seed=seed, oracle=oracle,
                     progress=progress, faults=faults).run()
