"""`PolicyMachine`: the hypothesis state machine that drives one policy as an engine would.

Its rules are the engine's moves (arrivals, schedule calls, step completions in any order,
aborts, device failures and repairs, migrations, time passing); after every move the contract
checks of `rules.ContractChecks` run. Configure it with `policy_state_machine(factory)`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from ..core import Batch, Plan, Request, StepCost, StepResult
from ..core.errors import PolicyError
from ..core.protocols import policy_name
from ..core.table import ABORTED, REJECTED, WAITING, RequestTable
from ..core.validate import check_batch
from ..engines.contract import check_rejectable, check_wake, planned_id
from ..engines.faults import lose_device
from .rules import ContractChecks
from .world import (_DT, _SPECS, CAPACITY_UNIT, DRAIN_STEP, FIT_SLACK, MAX_ABORTS, MAX_FAILURES,
                    KitDevice, _Flight, _Ref, _Resident, _tracked)


class PolicyMachine(ContractChecks, RuleBasedStateMachine):
    """Drives one policy through the Scheduler protocol at random; see the module docstring.

    Configure a subclass with `policy_state_machine(factory, ...)` rather than directly.
    """

    factory: Callable = None
    oracle: bool = False
    abort_in_flight: bool = True
    faults: bool = True
    allow_rejections: bool = False
    max_requests: int = 16

    # -- setup -------------------------------------------------------------------------------
    @initialize(units=st.lists(st.integers(1, 8), min_size=1, max_size=3))
    @_tracked
    def start(self, units):
        self._failed = False
        self.policy = type(self).factory()
        self.name = policy_name(self.policy)
        self.devices = [KitDevice(f"dev{i}", u * CAPACITY_UNIT) for i, u in enumerate(units)]
        self.index = {d.name: i for i, d in enumerate(self.devices)}
        self.largest = max(d.kv_capacity_tokens for d in self.devices)
        self.table = RequestTable()
        self.requests: dict[int, Request] = {}
        self.emitted = np.zeros(0, dtype=np.int64)   # tokens each request emitted, counted here
        self.caps = np.zeros(0, dtype=np.int64)      # max_new_tokens of each request
        self.drain_until = np.zeros(0, dtype=np.int64)   # last token while draining
        self.now = 0.0
        self.flight: list[_Flight | None] = [None] * len(self.devices)
        self.down = [False] * len(self.devices)
        self.wake: float | None = None
        self.num_aborts = self.num_failures = 0
        self.offered_all = False   # devices fail only after the policy has seen them all
        self.migrating: dict[int, int] = {}
        self.aborting: set[int] = set()
        self.finished: set[int] = set()
        self.memory: list[list[_Resident]] = [[] for _ in self.devices]
        self.serial = 0
        self.log: list = []
        self.by_batch: dict[int, int] = {}            # id(batch) -> serial, for the log

    # -- the policy, called as an engine calls it ----------------------------------------------
    def _call(self, method: str, *args):
        logged = tuple(_Ref(self.by_batch[id(a)]) if isinstance(a, Batch) else a for a in args)
        try:
            out = getattr(self.policy, method)(*args)
        except PolicyError:
            raise
        except Exception as exc:
            raise PolicyError(self.name, "raised",
                              f"{method}() raised {type(exc).__name__}: {exc}") from exc
        self.log.append((method, logged, out))
        return out

    def _fail(self, rule: str, detail: str):
        raise PolicyError(self.name, rule, detail)

    def _idle(self) -> list[int]:
        return [d for d in range(len(self.devices)) if self.flight[d] is None
                and not self.down[d]]

    def _busy(self) -> list[int]:
        return [d for d in range(len(self.devices)) if self.flight[d] is not None]

    def _open(self) -> np.ndarray:
        return np.flatnonzero(self.table.status[: self.table.size] == WAITING)

    def _fits(self, rid: int) -> bool:
        r = self.requests[rid]
        return r.prompt_tokens + r.max_new_tokens <= self.largest - FIT_SLACK

    # -- rules -----------------------------------------------------------------------------
    @precondition(lambda self: self.table.size < self.max_requests)
    @rule(requests=_SPECS)
    @_tracked
    def arrive(self, requests):
        """Requests arrive together (one `add` each, in order). A true output length is
        fixed at arrival only with oracle=True; otherwise it does not exist yet."""
        for spec in requests[: self.max_requests - self.table.size]:
            rid = int(self.table.register([spec.prompt], [spec.max_new])[0])
            self.emitted = np.append(self.emitted, 0)
            self.caps = np.append(self.caps, spec.max_new)
            self.drain_until = np.append(self.drain_until, spec.max_new)
            oracle = None
            if self.oracle:
                oracle = min(spec.output, spec.max_new)
                self.table.output[rid] = oracle
            self.table.arrive(rid, self.now)
            deadline = None if spec.deadline is None else self.now + spec.deadline
            request = Request(rid, self.now, spec.prompt, spec.max_new, spec.priority,
                              deadline, oracle)
            self.requests[rid] = request
            self._call("add", request, self.now)

    @rule(dt=_DT)
    @_tracked
    def advance(self, dt):
        """Time passes with nothing happening."""
        self.now += dt

    @precondition(lambda self: self.wake is not None)
    @rule()
    @_tracked
    def wake_up(self):
        """The wake-up the policy asked for comes (then it is asked to schedule)."""
        self.now = max(self.now, self.wake)
        self.wake = None
        if self._idle():
            self._schedule()

    @precondition(lambda self: bool(self._idle()))
    @rule()
    @_tracked
    def schedule(self):
        """The policy is asked to plan the idle devices."""
        self._schedule()

    @precondition(lambda self: bool(self._busy()))
    @rule(which=st.integers(0, 2), dt=_DT,
          stop=st.lists(st.integers(0, 11), max_size=3), then_schedule=st.booleans())
    @_tracked
    def complete(self, which, dt, stop, then_schedule):
        """A running step ends (any busy device, in any order). The emitting rows whose
        position (among the emitting rows) is in `stop` emit their last token (a row also
        stops at its cap). A multi-step batch whose first step finishes nothing runs on for
        as many steps as `stop` has entries (within its num_steps, before any row's end); one
        that lets finished rows drop out runs on for as many, rows leaving as they end. With
        then_schedule, the policy is asked to plan right away, as an engine would."""
        busy = self._busy()
        self._complete(busy[which % len(busy)], dt, stop)
        if then_schedule and self._idle():
            self._schedule()

    # A cheap precondition (it is evaluated at every step); the rule does nothing in the rare
    # case that every open request is being moved or already aborted.
    @precondition(lambda self: self.num_aborts < MAX_ABORTS
                  and self.table.num_closed + len(self.aborting) < self.table.size)
    @rule(which=st.integers(0, 15))
    @_tracked
    def abort(self, which):
        """A client cancels an open request (waiting, or running if abort_in_flight)."""
        candidates = self._abortable()
        if not candidates:
            return
        rid = candidates[which % len(candidates)]
        self.num_aborts += 1
        self._call("abort", rid)
        if self.table.in_flight[rid]:
            self.aborting.add(rid)   # closed when its step comes back
        else:
            self.table.close(rid, ABORTED, self.now)

    @precondition(lambda self: self.faults and self.offered_all and not all(self.down)
                  and self.num_failures < MAX_FAILURES)
    @rule(which=st.integers(0, 2))
    @_tracked
    def fail(self, which):
        """A device fails now: its step in flight, if any, and its KV caches are lost."""
        up = [d for d in range(len(self.devices)) if not self.down[d]]
        self.num_failures += 1
        self._lose(up[which % len(up)])

    @precondition(lambda self: any(self.down))
    @rule(which=st.integers(0, 2))
    @_tracked
    def repair(self, which):
        """A failed device comes back, with empty memory."""
        down = [d for d in range(len(self.devices)) if self.down[d]]
        self.down[down[which % len(down)]] = False

    @precondition(lambda self: bool(self.migrating))
    @rule(which=st.integers(0, 15))
    @_tracked
    def end_migration(self, which):
        """A KV transfer the policy planned ends."""
        rid = sorted(self.migrating)[which % len(self.migrating)]
        self._end_migration(rid)

    def _abortable(self) -> list[int]:
        table = self.table
        open_ids = self._open()
        if not self.abort_in_flight:
            open_ids = open_ids[~table.in_flight[open_ids]]
        return [rid for rid in open_ids.tolist()
                if rid not in self.migrating and rid not in self.aborting]

    # -- engine mechanics -------------------------------------------------------------------
    def _schedule(self) -> bool:
        idle = self._idle()
        self.offered_all = self.offered_all or len(idle) == len(self.devices)
        plan = self._call("schedule", self.now, [self.devices[d] for d in idle])
        if not isinstance(plan, Plan):
            self._fail("plan-type", f"schedule() returned {type(plan).__name__}, not a Plan")
        table = self.table
        for rid in plan.rejected:
            rid = check_rejectable(table, rid, self.name)
            if self._fits(rid) and not self.allow_rejections:
                r = self.requests[rid]
                self._fail("liveness", f"rejected request {rid} (prompt {r.prompt_tokens} + "
                           f"cap {r.max_new_tokens} tokens), which fits in device memory "
                           f"({self.largest} tokens); reject only what can never run")
            table.close(rid, REJECTED, self.now)
            self.aborting.discard(rid)
        for name in sorted(plan.batches):
            batch, d = plan.batches[name], self.index.get(name)
            if d is None or d not in idle:
                what = "no such device" if d is None else "it is not idle"
                self._fail("device", f"planned a batch for device {name!r}, but {what}")
            check_batch(batch, self.devices[d], d, table, self.name)
            self._check_memory(batch, d)
            table.launch(batch, d, self.now)
            self.serial += 1
            self.by_batch[id(batch)] = self.serial
            self.flight[d] = _Flight(batch, self.now, self.serial)
        for rid, target in plan.migrations.items():
            self._migrate(planned_id(rid, self.name, "migration"), target)
        if plan.wake_at is not None:
            check_wake(plan.wake_at, self.name, self.now)
        self.wake = plan.wake_at
        return bool(plan.batches) or bool(plan.rejected) or bool(plan.migrations)

    def _complete(self, d: int, dt: float, stop) -> None:
        flight, table = self.flight[d], self.table
        batch = flight.batch
        self.now = max(self.now + dt, flight.launched_at)
        ids = batch.request_ids
        before = table.generated[ids]
        emits = batch.num_cached_tokens + batch.num_new_tokens - table.prompt[ids] + 1 > before
        if not self.oracle:
            # The true output length is decided here, when the token is emitted, and not before.
            # While draining, a request stops DRAIN_TOKENS tokens after the drain began (or at
            # its cap): a function of the state alone, which hypothesis can shrink around.
            for j, rid in enumerate(ids[emits].tolist()):
                if j in stop or self.table.generated[rid] + 1 >= self.drain_until[rid]:
                    table.output[rid] = min(table.output[rid], int(table.generated[rid]) + 1)
        emitted, finished, generated = table.complete(batch, self.now)
        if not np.array_equal(emitted, emits):
            raise AssertionError("kit bug: emitted rows disagree with the table")
        np.add.at(self.emitted, ids[emitted], 1)
        steps = 1
        if batch.num_steps > 1 and emitted.all() and batch.drop_finished:
            steps, finished, generated = self._run_on_dropping(batch, len(stop), finished,
                                                               generated)
        elif batch.num_steps > 1 and emitted.all() and not finished.any():
            # A multi-step batch runs on, as an engine may: as many more steps as `stop` has
            # entries, while no row reaches its end (an engine stops a stretch at the first
            # finish); the policy hears all of them in one update (result.num_steps).
            end = np.minimum(table.output[ids], self.drain_until[ids])
            room = int((end - table.generated[ids]).min()) - 1
            for _ in range(max(0, min(batch.num_steps - 1, len(stop), room))):
                self.now += DRAIN_STEP
                # Step 1 was the batch as planned; each later one decodes every row.
                step = Batch.decode(ids, batch.num_cached_tokens + batch.num_new_tokens
                                    + (steps - 1), num_micro_batches=batch.num_micro_batches)
                emitted, finished, generated = table.complete(step, self.now)
                np.add.at(self.emitted, ids[emitted], 1)
                steps += 1
        for rid in ids[finished].tolist():
            if rid in self.finished:
                self._fail("conservation", f"request {rid} finished twice")
            self.finished.add(rid)
        self.flight[d] = None
        result = StepResult(self.now - flight.launched_at, StepCost(), emitted, finished,
                            generated, num_steps=steps)
        self._call("update", batch, result, self.now)
        for rid in ids.tolist():
            if rid in self.aborting:
                self.aborting.discard(rid)
                table.close(rid, ABORTED, self.now)   # no-op if it finished in this step

    def _run_on_dropping(self, batch, extra: int, finished, generated):
        """A `drop_finished` batch runs on for up to `extra` more steps (within num_steps),
        each decoding the rows not finished yet, as an engine may; a row reaching its end
        leaves. Returns (steps, finished, num_generated) over the whole batch."""
        table, ids = self.table, batch.request_ids
        fed = batch.num_cached_tokens + batch.num_new_tokens
        finished, generated = finished.copy(), generated.copy()
        steps = 1
        while steps < batch.num_steps and steps <= extra and not finished.all():
            self.now += DRAIN_STEP
            alive = ~finished
            rows = ids[alive]
            if not self.oracle:  # the drain rule decides lengths at emission, as at step 1
                for rid in rows.tolist():
                    if table.generated[rid] + 1 >= self.drain_until[rid]:
                        table.output[rid] = min(table.output[rid], int(table.generated[rid]) + 1)
            step = Batch.decode(rows, fed[alive] + (steps - 1),
                                num_micro_batches=min(batch.num_micro_batches, rows.size))
            _, done, now_generated = table.complete(step, self.now)
            np.add.at(self.emitted, rows, 1)
            finished[alive], generated[alive] = done, now_generated
            steps += 1
        return steps, finished, generated

    def _lose(self, d: int) -> None:
        flight = self.flight[d]
        batch = None if flight is None else flight.batch
        gone = [] if batch is None else [r for r in batch.request_ids.tolist()
                                         if r in self.aborting]
        elapsed = 0.0 if flight is None else self.now - flight.launched_at
        self.flight[d] = None
        self.down[d] = True
        lose_device(self._call, self.policy, self.table, d, self.devices[d].name, batch,
                    self.now, self.requests.__getitem__, elapsed=elapsed, keep_out=gone)
        for rid in gone:
            self.aborting.discard(rid)
            self.table.close(rid, ABORTED, self.now)

    def _migrate(self, rid: int, target: str) -> None:
        table, d = self.table, self.index.get(target)
        if not (0 <= rid < table.size) or table.status[rid] != WAITING or table.in_flight[rid]:
            self._fail("migration", f"asked to move request {rid}, which is not waiting "
                       "(unknown, finished, or running)")
        if d is None or table.cached[rid] == 0 or table.home[rid] == d:
            what = ("no such device" if d is None else "nothing is cached"
                    if table.cached[rid] == 0 else "it is already there")
            self._fail("migration", f"asked to move request {rid}'s KV cache to {target!r}, "
                       f"but {what}")
        table.start_migration(rid)
        self.migrating[rid] = d

    def _end_migration(self, rid: int) -> None:
        d = self.migrating.pop(rid)
        self.table.end_migration(rid, d)
        self._call("migrated", rid, self.devices[d].name, self.now)
