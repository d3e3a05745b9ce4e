"""`run_wallclock`: drives any Scheduler on real devices (such as `TorchDevice`) by the clock.

The same bookkeeping as the simulator — a `RequestTable`, `check_batch` on every batch, a
`Result` with per-request records and per-device totals — but steps really run and their
times are measured. Devices run one at a time in this process: a plan's batches run one
after another, so with several devices their steps are serialised, not overlapped.

The loop: deliver due arrivals, ask the policy to schedule, run each planned batch, book it
(`RequestTable.complete`) and tell the policy (`update`); when nothing is due and nothing
ran, wait for the next arrival or the wake-up the policy asked for.

Time. `now` is seconds since the run started, read from `time.perf_counter`; the policy gets
it as an argument and never reads a clock itself.
- realtime=True: the engine sleeps until an arrival (or a wake-up) is due. Timestamps are
  plain elapsed seconds.
- realtime=False (default): instead of sleeping, the clock jumps forward to the next
  arrival or wake-up, so idle gaps cost no wall time. Timestamps are then "elapsed seconds
  with the idle waits skipped": virtual = real elapsed + total time skipped. A request's
  arrival is its workload arrival time on that clock; step durations, and everything the
  policy and the devices did, are real measured time. This is what realtime=True would show
  with an exact sleep, minus its oversleep.
Either way a request that arrives while a step runs is delivered when the step ends, with its
true arrival time, as a server that queued it would see it.

Devices may define `register(request_id, prompt_tokens)` (called on every device when a
request arrives, so a real backend knows its prompt) and `free(request_id)` (called on every
device when a request finishes, is rejected, or is aborted, so caches are dropped).

Not supported here: KV migrations (`Plan.migrations`, used by pd-disaggregated) and fault
injection; a plan with migrations stops the run with a ConfigError.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence

import numpy as np

from ..core import Request, StepResult
from ..core.errors import ConfigError, PolicyError
from ..core.protocols import policy_name
from ..core.table import REJECTED, RequestTable
from .accounting import DeviceTotals
from .contract import (call_policy, check_plan, check_policy_object, check_rejectable,
                       check_seed, check_workload, claim_policy, follow_ups, index_devices,
                       launch_batches, request_of, stalled, tell_devices)
from .result import Result

MAX_IDLE_WAKES = 100_000


class WallClock:
    """One run of one policy on real devices; use `run_wallclock()` unless you need parts."""

    def __init__(self, policy, workload, devices: Sequence, *, realtime: bool = False,
                 seed: int = 0):
        self.seed = check_seed(seed)
        self.policy, self.name = check_policy_object(policy, "run_wallclock"), policy_name(policy)
        self.devices, self.index = index_devices(devices, "run_wallclock")
        self.realtime = bool(realtime)
        self.workload = wl = check_workload(workload, "run_wallclock").sample(
            np.random.default_rng(self.seed))
        self.table = RequestTable.for_requests(wl.prompt_tokens, wl.output_tokens)
        # Pending arrivals: (time, id). Closed-loop follow-ups join when their user's
        # previous request ends.
        timed = np.flatnonzero(~np.isnan(wl.arrival))
        self.arrivals = [(float(wl.arrival[r]), int(r)) for r in timed]
        heapq.heapify(self.arrivals)
        self.follow_up = follow_ups(wl)
        self.totals = DeviceTotals(self.devices)
        self.pending_wake: float | None = None
        self.skipped = 0.0
        self.num_events = 0
        self.start = 0.0
        claim_policy(self.policy, "run_wallclock")  # last: a refused call leaves it unused

    # -- the clock ---------------------------------------------------------------------------
    def clock(self) -> float:
        return time.perf_counter() - self.start + self.skipped

    def wait_until(self, t: float) -> None:
        now = self.clock()
        if t <= now:
            return
        if self.realtime:
            time.sleep(t - now)
        else:
            self.skipped += t - now

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> Result:
        self.start = time.perf_counter()
        changed, idle_wakes = True, 0
        while self.table.num_closed < self.table.size:
            now = self.clock()
            changed |= self._deliver(now)
            if self.pending_wake is not None and now >= self.pending_wake:
                self.pending_wake = None
                changed = True
                idle_wakes += 1
            if changed:
                progressed = self._schedule(now)
                if progressed:
                    idle_wakes = 0
                elif idle_wakes > MAX_IDLE_WAKES:
                    raise PolicyError(self.name, "liveness", f"woke {idle_wakes} times in a row "
                                      "without launching anything")
                changed = progressed
                continue
            due = [t for t in (self.arrivals[0][0] if self.arrivals else None,
                               self.pending_wake) if t is not None]
            if not due:
                raise stalled(self.table, self.name)
            self.wait_until(min(due))
        return Result(self.table.records(), self.totals.table(), policy=self.name,
                      workload=self.workload.name, seed=self.seed,
                      wall_time=time.perf_counter() - self.start, num_events=self.num_events,
                      itl=self.table.itl.flush())

    def _deliver(self, now: float) -> bool:
        delivered = False
        while self.arrivals and self.arrivals[0][0] <= now:
            t, rid = heapq.heappop(self.arrivals)
            self.num_events += 1
            self.table.arrive(rid, t)
            tell_devices(self.devices, "register", rid, int(self.workload.prompt_tokens[rid]))
            self._call("add", self._request(rid), now)
            delivered = True
        return delivered

    def _request(self, rid: int) -> Request:
        return request_of(self.workload, self.table, rid)

    def _closed(self, rids, now: float) -> None:
        for rid in rids:
            rid = int(rid)
            tell_devices(self.devices, "free", rid)
            nxt = int(self.follow_up[rid])
            if nxt >= 0:
                heapq.heappush(self.arrivals, (now + float(self.workload.think[nxt]), nxt))

    # -- schedule, run, update -----------------------------------------------------------------
    def _schedule(self, now: float) -> bool:
        plan = check_plan(self._call("schedule", now, list(self.devices)), self.name, now,
                          migrations="run_wallclock")
        self.pending_wake = plan.wake_at
        for rid in plan.rejected:
            rid = check_rejectable(self.table, rid, self.name)
            self.table.close(rid, REJECTED, now)
            self._closed((rid,), now)
        launched = launch_batches(plan, self.devices, self.index, self.table, self.name, now)
        for d, batch in launched:
            result = self.devices[d].run(batch)
            end = self.clock()
            self._complete(d, batch, result, end)
        return bool(launched) or bool(plan.rejected)

    def _complete(self, d: int, batch, result: StepResult, end: float) -> None:
        self.num_events += 1
        emitted, finished, generated = self.table.complete(batch, end)
        self.totals.book(d, batch, result, int(emitted.sum()))
        full = StepResult(result.duration, result.cost, emitted, finished, generated,
                          result.tokens)
        ended = batch.request_ids[finished]  # before update: the policy may edit `finished`
        self._call("update", batch, full, end)
        if ended.size:
            self._closed(ended, end)

    def _call(self, method: str, *args):
        return call_policy(self.policy, self.name, method, args, (PolicyError, ConfigError))


def run_wallclock(policy, workload, devices: Sequence, *, realtime: bool = False,
                  seed: int = 0) -> Result:
    """Run `policy` (a Scheduler, or a policy name) on `workload` (a Workload or a
    WorkloadSpec, sampled with `seed`) on real `devices`, by the clock; return the Result.

    realtime: sleep until arrivals are due (True), or skip idle gaps (False; see the module
    docstring for what the timestamps then mean).
    """
    if isinstance(policy, str):
        from ..policies.discovery import load_policy
        policy = load_policy(policy)
    return WallClock(policy, workload, devices, realtime=realtime, seed=seed).run()
