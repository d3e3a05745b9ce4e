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

from ..core import Plan, Request, StepResult
from ..core.errors import ConfigError, PolicyError
from ..core.protocols import policy_name
from ..core.table import REJECTED, WAITING, RequestTable
from ..core.validate import check_batch
from ..metrics import Result, device_table
from .simulator import ACC_FIELDS

MAX_IDLE_WAKES = 100_000


class WallClock:
    """One run of one policy on real devices; use `run_wallclock()` unless you need parts."""

    def __init__(self, policy, workload, devices: Sequence, *, realtime: bool = False,
                 seed: int = 0):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"seed must be an int, got {seed!r}")
        self.policy, self.name = policy, policy_name(policy)
        self.devices = list(devices)
        if not self.devices:
            raise ConfigError("run_wallclock needs at least one device")
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise ConfigError(f"device names must be unique, got {names}")
        self.index = {name: i for i, name in enumerate(names)}
        self.realtime, self.seed = bool(realtime), int(seed)
        self.workload = wl = workload.sample(np.random.default_rng(self.seed))
        self.table = RequestTable.for_requests(wl.prompt_tokens, wl.output_tokens)
        # Pending arrivals: (time, id). Closed-loop follow-ups join when their user's
        # previous request ends.
        timed = np.flatnonzero(~np.isnan(wl.arrival))
        self.arrivals = [(float(wl.arrival[r]), int(r)) for r in timed]
        heapq.heapify(self.arrivals)
        self.follow_up = np.full(wl.num_requests, -1, dtype=np.int64)
        if wl.user is not None:
            for user in np.unique(wl.user):
                mine = np.flatnonzero(wl.user == user)
                self.follow_up[mine[:-1]] = mine[1:]
        self.stats = device_table(self.devices)
        self.acc = [[0.0] * len(ACC_FIELDS) for _ in self.devices]
        self.pending_wake: float | None = None
        self.skipped = 0.0
        self.num_events = 0
        self.start = 0.0

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
                open_ids = np.flatnonzero(self.table.status == WAITING)
                raise PolicyError(
                    self.name, "liveness",
                    f"{self.table.size - self.table.num_closed} requests never finished and "
                    f"the policy asked for no wake-up (first: request {int(open_ids[0])}); a "
                    "policy must run or reject every request it was given")
            self.wait_until(min(due))
        for d, acc in enumerate(self.acc):
            for field, value in zip(ACC_FIELDS, acc):
                self.stats[d][field] = value
        return Result(self.table.records(), self.stats, policy=self.name,
                      workload=self.workload.name, seed=self.seed,
                      wall_time=time.perf_counter() - self.start, num_events=self.num_events)

    def _deliver(self, now: float) -> bool:
        delivered = False
        while self.arrivals and self.arrivals[0][0] <= now:
            t, rid = heapq.heappop(self.arrivals)
            self.num_events += 1
            self.table.arrive(rid, t)
            for device in self.devices:
                register = getattr(device, "register", None)
                if register is not None:
                    register(rid, int(self.workload.prompt_tokens[rid]))
            self._call("add", self._request(rid), now)
            delivered = True
        return delivered

    def _request(self, rid: int) -> Request:
        wl = self.workload
        return Request(id=rid, arrival=float(self.table.arrival[rid]),
                       prompt_tokens=int(wl.prompt_tokens[rid]),
                       max_new_tokens=int(wl.max_new_tokens),
                       priority=0 if wl.priority is None else int(wl.priority[rid]))

    def _closed(self, rids, now: float) -> None:
        for rid in rids:
            rid = int(rid)
            for device in self.devices:
                free = getattr(device, "free", None)
                if free is not None:
                    free(rid)
            nxt = int(self.follow_up[rid])
            if nxt >= 0:
                heapq.heappush(self.arrivals, (now + float(self.workload.think[nxt]), nxt))

    # -- schedule, run, update -----------------------------------------------------------------
    def _schedule(self, now: float) -> bool:
        plan = self._call("schedule", now, list(self.devices))
        if not isinstance(plan, Plan):
            raise PolicyError(self.name, "plan-type",
                              f"schedule() returned {type(plan).__name__}, not a Plan")
        if plan.migrations:
            raise ConfigError(f"policy {self.name!r} planned KV migrations, which run_wallclock "
                              "does not support yet; run it in the simulator")
        if plan.wake_at is not None and not plan.wake_at > now:
            raise PolicyError(self.name, "wake", f"asked to be woken at {plan.wake_at}, "
                              f"not after now ({now})")
        self.pending_wake = plan.wake_at
        for rid in plan.rejected:
            rid = int(rid)
            if not (0 <= rid < self.table.size) or self.table.status[rid] != WAITING \
                    or self.table.in_flight[rid]:
                raise PolicyError(self.name, "reject", f"rejected request {rid}, which is not "
                                  "waiting (unknown, finished, or running)")
            self.table.close(rid, REJECTED, now)
            self._closed((rid,), now)
        launched = []
        for name, batch in plan.batches.items():
            d = self.index.get(name)
            if d is None:
                raise PolicyError(self.name, "device",
                                  f"planned a batch for device {name!r}, but no such device")
            check_batch(batch, self.devices[d], d, self.table, self.name)
            self.table.launch(batch, d, now)
            launched.append((d, batch))
        for d, batch in launched:
            result = self.devices[d].run(batch)
            end = self.clock()
            self._complete(d, batch, result, end)
        return bool(launched) or bool(plan.rejected)

    def _complete(self, d: int, batch, result: StepResult, end: float) -> None:
        self.num_events += 1
        emitted, finished, generated = self.table.complete(batch, end)
        cost, acc, duration = result.cost, self.acc[d], result.duration
        for i, value in enumerate((
                1, duration, batch.num_tokens, batch.num_context_tokens, int(emitted.sum()),
                cost.flops, cost.bytes, cost.compute, cost.memory, cost.communication,
                cost.overhead, cost.experts_touched,
                cost.tokens_per_expert * cost.experts_touched,
                cost.bubble_fraction * duration, cost.padded_tokens)):
            acc[i] += value
        full = StepResult(duration, cost, emitted, finished, generated, result.tokens)
        self._call("update", batch, full, end)
        if finished.any():
            self._closed(batch.request_ids[finished], end)

    def _call(self, method: str, *args):
        try:
            return getattr(self.policy, method)(*args)
        except (PolicyError, ConfigError):
            raise
        except Exception as exc:
            raise PolicyError(self.name, "raised",
                              f"{method}() raised {type(exc).__name__}: {exc}") from exc


def run_wallclock(policy, workload, devices: Sequence, *, realtime: bool = False,
                  seed: int = 0) -> Result:
    """Run `policy` (a Scheduler, or a policy name) on `workload` (a Workload or a
    WorkloadSpec, sampled with `seed`) on real `devices`, by the clock; return the Result.

    realtime: sleep until arrivals are due (True), or skip idle gaps (False; see the module
    docstring for what the timestamps then mean).
    """
    if isinstance(policy, str):
        from ..discovery import load_policy
        policy = load_policy(policy)
    return WallClock(policy, workload, devices, realtime=realtime, seed=seed).run()
