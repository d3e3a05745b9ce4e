"""The serving front's engine: one thread that runs schedule, run, update for the `Server`
in `serving.py`, fed by its submissions and cancellations through a queue and sending each
token back to the event loop as soon as its step ends. The same bookkeeping as the simulator
and `run_wallclock` (`RequestTable`, `check_batch` through `contract.launch_batches`,
`DeviceTotals`, the same `Result`)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence

import numpy as np

from ..core import Request, StepResult
from ..core.errors import ConfigError, PolicyError
from ..core.protocols import policy_name
from ..core.table import ABORTED, REJECTED, WAITING, RequestTable
from .accounting import DeviceTotals
from .contract import (call_policy, check_plan, check_policy_object, check_rejectable,
                       claim_policy, index_devices, launch_batches, tell_devices)
from .result import Result


class ServingEngine:
    """The serving loop, on its own thread: requests come in through `inbox`, tokens and
    endings go out through `deliver([(request id, kind, value), ...])`."""

    def __init__(self, policy, devices: Sequence):
        self.policy, self.name = check_policy_object(policy, "Server"), policy_name(policy)
        self.devices, self.index = index_devices(devices, "Server")
        unique = {}
        for d in self.devices:
            h = getattr(d, "history", None)
            if h is not None:
                unique[id(h)] = h
        self.histories = list(unique.values())
        self.table = RequestTable()
        self.requests: dict[int, Request] = {}
        self.totals = DeviceTotals(self.devices)
        self.lock = threading.Lock()
        self.pending_wake: float | None = None
        self.error: BaseException | None = None
        self.num_events = 0
        self.num_failed = 0   # requests ended by a policy error that concerned them alone
        self.start = time.perf_counter()
        claim_policy(self.policy, "Server")  # last: a refused call leaves it unused

    def clock(self) -> float:
        return time.perf_counter() - self.start

    # -- the loop -----------------------------------------------------------------------------
    def serve(self, inbox: queue.SimpleQueue, deliver) -> None:
        self.start = time.perf_counter()
        changed, stopping = False, False
        try:
            while not stopping:
                cmds = []
                if not changed:   # nothing to do until a command or the policy's wake-up
                    timeout = None if self.pending_wake is None else \
                        max(0.0, self.pending_wake - self.clock())
                    try:
                        cmds.append(inbox.get(timeout=timeout))
                    except queue.Empty:
                        pass
                while True:
                    try:
                        cmds.append(inbox.get_nowait())
                    except queue.Empty:
                        break
                with self.lock:
                    events: list = []
                    now = self.clock()
                    stopping = any(c[0] == "stop" for c in cmds)
                    changed |= self._take_commands(cmds, now, events)
                    if self.pending_wake is not None and now >= self.pending_wake:
                        self.pending_wake = None
                        changed = True
                    if stopping:
                        self._abort_all(now, events)
                    elif changed:
                        changed = self._schedule(now, events, deliver)
                if events:
                    deliver(events)
        except BaseException as exc:   # noqa: BLE001 - handed to every waiting client
            self.error = exc
            open_ids = np.flatnonzero(self.table.status[:self.table.size] == WAITING)
            deliver([(int(rid), "error", exc) for rid in open_ids])

    def _take_commands(self, cmds, now: float, events: list) -> bool:
        subs = [c for c in cmds if c[0] == "submit"]
        if subs:
            ids = self.table.register([len(c[2]) for c in subs], [c[3] for c in subs])
            for rid, (_, sid, prompt, cap, priority) in zip(ids.tolist(), subs):
                assert rid == sid, "server and engine disagree on request ids"
                self.table.arrive(rid, now)
                for h in self.histories:   # the client's own ids, not derived ones
                    h.prompt_len[rid] = len(prompt)
                    h.tokens[rid] = list(prompt)
                tell_devices(self.devices, "register", rid, len(prompt))
                request = Request(id=rid, arrival=now, prompt_tokens=len(prompt),
                                  max_new_tokens=cap, priority=priority)
                self.requests[rid] = request
                self.num_events += 1
                try:
                    self._call("add", request, now)
                except (PolicyError, ConfigError) as exc:
                    self._fail_one(rid, exc, now, events)
        aborted = False
        for cmd in cmds:
            if cmd[0] == "abort":
                rid = cmd[1]
                if rid < self.table.size and self.table.status[rid] == WAITING:
                    self._call("abort", rid)
                    self.table.close(rid, ABORTED, now)
                    self._gone(rid)
                    events.append((rid, "aborted", None))
                    aborted = True
        return bool(subs) or aborted

    def _fail_one(self, rid: int, exc: BaseException, now: float, events: list) -> None:
        """The policy choked on this one request: end it with the error, tell the policy to
        forget it (whatever of it the failed call kept), and keep serving the others."""
        try:
            self._call("abort", rid)
        except PolicyError:
            pass   # the request is gone either way; its own error is the one to report
        self.table.close(rid, ABORTED, now)
        self._gone(rid)
        self.num_failed += 1
        events.append((rid, "error", exc))

    def _abort_all(self, now: float, events: list) -> None:
        for rid in np.flatnonzero(self.table.status[:self.table.size] == WAITING).tolist():
            self._call("abort", rid)
            self.table.close(rid, ABORTED, now)
            self._gone(rid)
            events.append((rid, "aborted", None))

    def _gone(self, rid: int) -> None:
        tell_devices(self.devices, "free", rid)
        for h in self.histories:   # a server runs for long: keep no finished sequences
            h.tokens.pop(rid, None)
            h.prompt_len.pop(rid, None)
        self.requests.pop(rid, None)

    # -- schedule, run, update -----------------------------------------------------------------
    def _schedule(self, now: float, events: list, deliver) -> bool:
        plan = check_plan(self._call("schedule", now, list(self.devices)), self.name, now,
                          migrations="the serving front")
        self.pending_wake = plan.wake_at
        for rid in plan.rejected:
            rid = check_rejectable(self.table, rid, self.name)
            self.table.close(rid, REJECTED, now)
            self._gone(rid)
            events.append((rid, "rejected", None))
        launched = launch_batches(plan, self.devices, self.index, self.table, self.name, now)
        for d, batch in launched:
            t0 = time.perf_counter()
            result = self.devices[d].run(batch)
            # A device that predicts rather than runs is waited out, to stand in for one.
            left = result.duration - (time.perf_counter() - t0)
            if left > 0:
                time.sleep(left)
            self._complete(d, batch, result, time.perf_counter() - t0, self.clock(), events)
            if events:   # stream this step's tokens now, not after the whole plan
                deliver(list(events))
                events.clear()
        return bool(launched) or bool(plan.rejected)

    def _complete(self, d, batch, result: StepResult, duration, end, events) -> None:
        self.num_events += 1
        emitted, finished, generated = self.table.complete(batch, end)
        self.totals.book(d, batch, result, int(emitted.sum()), duration)
        tokens = result.tokens
        ids = batch.request_ids
        for row in np.flatnonzero(emitted).tolist():
            events.append((int(ids[row]), "token", -1 if tokens is None else int(tokens[row])))
        full = StepResult(result.duration, result.cost, emitted, finished, generated, tokens)
        ended = ids[finished].tolist()  # before update: the policy may edit `finished`
        self._call("update", batch, full, end)
        for rid in ended:
            self._gone(rid)
            events.append((rid, "finished", None))

    def _call(self, method: str, *args):
        return call_policy(self.policy, self.name, method, args, (PolicyError, ConfigError))

    def result(self) -> Result:
        with self.lock:
            return Result(self.table.records(), self.totals.table(), policy=self.name, workload="served",
                          wall_time=self.clock(), num_events=self.num_events,
                          itl=self.table.itl.copy())
