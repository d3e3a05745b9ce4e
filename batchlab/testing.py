"""`batchlab.testing`: the conformance kit that property-tests a policy against the contract.

Three lines in a plugin's own test suite:

    from batchlab.testing import check_policy
    from my_plugin import MyPolicy
    def test_my_policy_conforms(): check_policy(MyPolicy)

`check_policy(factory)` drives fresh policies (`factory()` makes one) through random
interleavings of arrivals, schedule calls, step completions in any order across devices,
aborts, device failures and repairs, and time passing, on 1-3 devices of random KV capacity
(a hypothesis `RuleBasedStateMachine`, `PolicyMachine`), then stops arrivals and runs every
request to its end. It talks to the policy only through the Scheduler protocol and books
everything with the engine's own `RequestTable` and `check_batch`, as the simulator does.
After every step it checks:

- conservation: every request that arrived is exactly one of waiting, running (in one batch,
  once), finished, rejected or aborted; nothing is finished twice;
- memory: every batch passes the engine's rules (`check_batch`: capacity, no request twice,
  only open requests, token counts); the policy's `check_valid()` holds, if it has one; and
  the KV tokens resident on a device never exceed its capacity (see "Memory" below);
- tokens: a finished request emitted exactly its output length, and tokens are counted once;
  no row feeds past prompt + generated;
- causality: arrival <= first scheduled <= first token <= finish; no step ends before it
  launched; time never runs backwards; a wake-up is asked for the future;
- liveness: once arrivals stop, every request that fits in memory finishes within a bound of
  steps (one that cannot fit anywhere may be rejected instead);
- blindness: a request's true output length does not exist until the step that emits its
  last token (the kit decides it then), so a policy cannot depend on it; `oracle=True`
  fills `Request.oracle_output_tokens` for policies that ask for it;
- determinism: replaying the same calls on a fresh policy gives the same plans, and
  `check_determinism` runs the simulator twice and compares the records bit for bit.

A failure is a `PolicyError` that names the policy and the rule, after hypothesis has shrunk
the example to a short list of steps and printed it.

Protocol choices the kit makes (and the engines share):
- Abort while in flight: the policy is told at once (`abort(id)`); the step still completes,
  its `update` still carries the row (what it emitted, finished or not), and the request is
  closed as aborted right after. A policy must accept rows it has forgotten in `update`.
  `abort_in_flight=False` aborts only requests that are not in a running batch.
- A device failure loses the batch in flight and every KV cache on that device; the policy
  hears of it through `lost(device_name, batch, now)` if it has one, else through a fallback
  of calls it already handles (see `batchlab.adapters.faults`). The device is offered again
  after it is repaired.
- Memory: the engine cannot see a policy's blocks, and a policy that preempts a sequence frees
  its blocks while the engine still counts its cache until it is recomputed. So the kit
  counts, on each device at each launch, the tokens of the batch plus the cached tokens of
  every other request that later *continues* from that cache on that device (it must have
  been kept all along). A cache that is recomputed from 0 counts as freed as early as
  possible. This never blames a correct policy and catches one that keeps more sequences
  resident than fit, as a double-booking policy does.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable

import attrs
import numpy as np
from hypothesis import HealthCheck, Phase, settings as Settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule, run_state_machine_as_test)

from .adapters.faults import lose_device
from .core import Batch, Plan, Request, StepCost, StepResult
from .core.errors import PolicyError
from .core.protocols import policy_name
from .core.table import ABORTED, FINISHED, PENDING, REJECTED, WAITING, RequestTable
from .core.validate import check_batch

__all__ = ["KitDevice", "PolicyMachine", "check_determinism", "check_policy",
           "policy_state_machine"]

MIN_EXAMPLES = 200          # check_policy never runs fewer (more under a longer profile)
STEPS_PER_EXAMPLE = 30      # random steps before arrivals stop and the run is drained
CAPACITY_UNIT = 128         # device capacities are 1-8 units of KV tokens
FIT_SLACK = 64              # "fits": prompt + cap <= largest capacity - slack (block rounding)
MAX_ABORTS = 3              # per example, so that most requests live long enough to matter
MAX_FAILURES = 3            # device failures per example
DRAIN_TOKENS = 32           # while draining, a request emits at most this many more tokens
                            # (32 = the largest cap: each runs to its cap)
DRAIN_STEP = 0.005          # seconds each step takes while draining


@attrs.frozen
class KitDevice:
    """The kit's device: a name and a KV capacity. The kit decides when its steps end."""

    name: str
    kv_capacity_tokens: int
    price_per_hour: float | None = None

    def run(self, batch: Batch) -> StepResult:
        return StepResult(DRAIN_STEP)

    def kv_transfer_time(self, num_tokens: int, to_device) -> float:
        return 1e-6 * num_tokens


@attrs.frozen
class Arrival:
    """One request of an `arrive` step: prompt and cap (max_new) in tokens, priority,
    deadline (seconds after arrival, or None), and output: the true output length, used
    only with oracle=True (otherwise the kit decides it when the tokens come)."""

    prompt: int
    max_new: int
    priority: int = 0
    deadline: float | None = None
    output: int = 1


_ARRIVAL_FIELDS = dict(
    prompt=st.one_of(st.integers(1, 32), st.integers(1, 300),
                     st.integers(1, 8 * CAPACITY_UNIT + 100)),
    max_new=st.integers(1, 32), priority=st.integers(0, 3),
    deadline=st.sampled_from([None, 0.01, 0.1, 1.0]))
_SPECS = st.lists(st.builds(Arrival, **_ARRIVAL_FIELDS), min_size=1, max_size=4)
_ORACLE_SPECS = st.lists(st.builds(Arrival, **_ARRIVAL_FIELDS, output=st.integers(1, 32)),
                         min_size=1, max_size=4)
_DT = st.sampled_from([0.0, 0.001, 0.01, 0.03, 0.06, 0.2])   # around typical windows


@attrs.frozen
class _Ref:
    """A launched batch in the call log, by launch number (replays map it to their own)."""

    serial: int


@attrs.define
class _Flight:
    batch: Batch
    launched_at: float
    serial: int


@attrs.define
class _Resident:
    """Memory record of one launch: the batch's tokens, and the other caches on the device
    whose owners may yet continue from them (counted when they do)."""

    serial: int
    at: float
    used: int
    candidates: dict


def _tracked(fn):
    """Note that a step failed, so teardown does not drain a broken run."""
    @functools.wraps(fn)
    def step(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except BaseException:
            self._failed = True
            raise
    return step


class PolicyMachine(RuleBasedStateMachine):
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
        stops at its cap). With
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
            rid = int(rid)
            if not (0 <= rid < table.size) or table.status[rid] != WAITING \
                    or table.in_flight[rid]:
                self._fail("reject", f"rejected request {rid}, which is not waiting "
                           "(unknown, finished, or running)")
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
            self._migrate(int(rid), target)
        if plan.wake_at is not None and not plan.wake_at > self.now:
            self._fail("wake", f"asked to be woken at {plan.wake_at}, not after now "
                       f"({self.now})")
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
        for rid in ids[finished].tolist():
            if rid in self.finished:
                self._fail("conservation", f"request {rid} finished twice")
            self.finished.add(rid)
        self.flight[d] = None
        result = StepResult(self.now - flight.launched_at, StepCost(), emitted, finished,
                            generated)
        self._call("update", batch, result, self.now)
        for rid in ids.tolist():
            if rid in self.aborting:
                self.aborting.discard(rid)
                table.close(rid, ABORTED, self.now)   # no-op if it finished in this step

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

    def _check_memory(self, batch: Batch, d: int) -> None:
        """Resident KV tokens on device d at this launch, as far as can be proven; see the
        module docstring ("Memory")."""
        table, cap = self.table, self.devices[d].kv_capacity_tokens
        ids = batch.request_ids.tolist()
        cached = batch.num_cached_tokens.tolist()
        continuing = {rid for rid, c in zip(ids, cached) if c > 0}
        for e, records in enumerate(self.memory):
            for rec in records:
                for rid in list(rec.candidates):
                    if e == d and rid in continuing:
                        rec.used += rec.candidates.pop(rid)
                        if rec.used > cap:
                            self._fail("memory", self._memory_detail(rec, d, rid))
                    elif rid in ids or table.home[rid] != e or table.in_flight[rid] \
                            or table.cached[rid] != rec.candidates[rid]:
                        del rec.candidates[rid]   # recomputed, lost, closed or moved: freed
            records[:] = [rec for rec in records if rec.candidates]
        n = table.size
        resident = np.flatnonzero((table.home[:n] == d) & (table.cached[:n] > 0)
                                  & (table.status[:n] == WAITING) & ~table.in_flight[:n])
        others = {int(r): int(table.cached[r]) for r in resident.tolist() if r not in ids}
        if others:
            used = (batch.padded_len * batch.num_seqs if batch.padded_len is not None
                    else batch.num_context_tokens)
            self.memory[d].append(_Resident(self.serial + 1, self.now, used, others))

    def _memory_detail(self, rec: _Resident, d: int, rid: int) -> str:
        dev = self.devices[d]
        return (f"at t={rec.at:g} device {dev.name!r} held {rec.used} KV tokens, more than its "
                f"{dev.kv_capacity_tokens}: the batch launched then plus caches that stayed "
                f"resident (request {rid} later continued from its cache there); a policy "
                "must keep every resident sequence's tokens within capacity")

    # -- invariants --------------------------------------------------------------------------
    @invariant()
    @_tracked
    def holds(self):
        """Conservation, tokens, causality, and the policy's own check_valid()."""
        self._check_valid()
        table, n = self.table, self.table.size
        status = table.status[:n]
        if (status == PENDING).any():
            raise AssertionError("kit bug: a registered request has not arrived")
        flying = [int(r) for f in self.flight if f is not None
                  for r in f.batch.request_ids.tolist()] + list(self.migrating)
        if len(flying) != len(set(flying)) or \
                sorted(flying) != np.flatnonzero(table.in_flight[:n]).tolist():
            self._fail("conservation", f"requests in flight {sorted(flying)} disagree with "
                       "the table")
        if (status[table.in_flight[:n]] != WAITING).any():
            self._fail("conservation", "a closed request is still in flight")
        closed = status != WAITING
        if table.num_closed != int(closed.sum()) or \
                table.num_finished != int((status == FINISHED).sum()):
            self._fail("conservation", "closed or finished counts disagree with the states")
        fin = np.flatnonzero(status == FINISHED)
        if set(fin.tolist()) != self.finished:
            self._fail("conservation", "finished requests disagree with the finishes reported")
        generated = table.generated[:n]
        if not np.array_equal(generated, self.emitted):
            self._fail("tokens", "tokens emitted disagree with tokens generated")
        if not np.array_equal(generated[fin], table.output[fin]):
            bad = int(fin[generated[fin] != table.output[fin]][0])
            self._fail("tokens", f"request {bad} finished with {int(generated[bad])} tokens, "
                       f"its output length is {int(table.output[bad])}")
        if (generated > self.caps).any():
            self._fail("tokens", "a request emitted more than its cap")
        if (table.cached[:n] > table.prompt[:n] + generated).any():
            self._fail("tokens", "a cache holds more than prompt + generated tokens")
        order = [("arrival", table.arrival[:n]), ("first scheduled", table.first_scheduled[:n]),
                 ("first token", table.first_token[:n]), ("finish", table.finish[:n])]
        for (a_name, a), (b_name, b) in zip(order, order[1:]):
            if b_name == "finish":
                a = np.where(status == FINISHED, a, np.nan)
            bad = a > b   # NaN (never happened) compares False
            if bad.any():
                rid = int(np.flatnonzero(bad)[0])
                self._fail("causality", f"request {rid}: {b_name} at {b[rid]} before "
                           f"{a_name} at {a[rid]}")
        if (np.isnan(table.first_scheduled[:n]) & ~np.isnan(table.first_token[:n])).any():
            self._fail("causality", "a request has a token but was never scheduled")
        for f in self.flight:
            if f is not None and f.launched_at > self.now:
                self._fail("causality", "a step launched in the future")

    def _check_valid(self) -> None:
        check = getattr(self.policy, "check_valid", None)
        if callable(check):
            try:
                check()
            except AssertionError as exc:
                raise PolicyError(self.name, "check-valid", str(exc) or "check_valid() "
                                  "failed") from exc

    # -- the end: drain, liveness, determinism -----------------------------------------------
    def teardown(self):
        if getattr(self, "_failed", True) or not hasattr(self, "policy"):
            return
        self._drain()
        self._replay()

    def _drain(self) -> None:
        """Arrivals have stopped: run like an engine until every request is closed."""
        table = self.table
        self.down = [False] * len(self.devices)
        for rid in sorted(self.migrating):
            self._end_migration(rid)
        open_ids = self._open()
        self.drain_until = self.table.generated[: table.size] + DRAIN_TOKENS
        bound = 100 + 20 * int(sum(table.prompt[r] + self.requests[r].max_new_tokens
                                   for r in open_ids.tolist()))
        steps, changed = 0, True
        while table.num_closed < table.size and steps < bound:
            if changed and self._idle():
                changed = self._schedule()
            else:
                changed = False
            busy = self._busy()
            if busy:
                d = min(busy, key=lambda d: self.flight[d].serial)
                self._complete(d, DRAIN_STEP, ())
                changed, steps = True, steps + 1
            elif self.migrating:
                self._end_migration(min(self.migrating))
                changed, steps = True, steps + 1
            elif self.wake is not None:
                self.now = max(self.now, self.wake)
                self.wake, changed, steps = None, True, steps + 1
            elif not changed:
                break
            self._check_valid()
        self.holds()
        still = self._open()
        if still.size:
            rid = int(still[0])
            why = (f"after {steps} steps (bound {bound})" if steps >= bound else
                   "with no step or transfer running and no wake-up asked for")
            self._fail("liveness", f"arrivals stopped, and {still.size} request(s) were still "
                       f"open {why} (first: request {rid}, prompt "
                       f"{int(table.prompt[rid])}, {int(table.generated[rid])} tokens so far); "
                       "a policy must run or reject every request it was given")

    def _replay(self) -> None:
        """Same calls, fresh policy: the plans must be the same, bit for bit."""
        policy = type(self).factory()
        batches: dict[int, Batch] = {}
        for k, (method, args, out) in enumerate(self.log):
            real = tuple(batches[a.serial] if isinstance(a, _Ref) else a for a in args)
            try:
                again = getattr(policy, method)(*real)
            except Exception as exc:
                self._fail("determinism", f"replaying call {k} ({method}) on a fresh policy "
                           f"raised {type(exc).__name__}: {exc}")
            if method != "schedule":
                continue
            if not _same_plan(out, again):
                self._fail("determinism", f"replaying the same calls on a fresh policy gave a "
                           f"different plan at call {k} (schedule at t={args[0]:g}): first "
                           f"{_show(out)}, then {_show(again)}; a policy must not depend on "
                           "object ids, set order of objects, unseeded randomness or state "
                           "shared between instances")
            for name in sorted(out.batches):
                batches[self.by_batch[id(out.batches[name])]] = again.batches[name]


class _OracleMachine(PolicyMachine):
    """With oracle=True the true output lengths are drawn at arrival and handed over."""

    oracle = True

    @precondition(lambda self: self.table.size < self.max_requests)
    @rule(requests=_ORACLE_SPECS)
    def arrive(self, requests):
        PolicyMachine.arrive(self, requests)


def _same_plan(a: Plan, b) -> bool:
    if not isinstance(b, Plan) or sorted(a.batches) != sorted(b.batches):
        return False
    same_wake = a.wake_at == b.wake_at or (a.wake_at is not None and b.wake_at is not None
                                           and math.isnan(a.wake_at) and math.isnan(b.wake_at))
    return (same_wake and [int(r) for r in a.rejected] == [int(r) for r in b.rejected]
            and dict(a.migrations) == dict(b.migrations)
            and all(a.batches[k] == b.batches[k] for k in a.batches))


def _show(plan) -> str:
    if not isinstance(plan, Plan):
        return repr(plan)
    rows = {k: list(zip(b.request_ids.tolist(), b.num_new_tokens.tolist(),
                        b.num_cached_tokens.tolist())) for k, b in sorted(plan.batches.items())}
    return f"batches {rows} wake_at={plan.wake_at} rejected={list(plan.rejected)}"


def policy_state_machine(factory: Callable, *, oracle: bool = False,
                         abort_in_flight: bool = True, faults: bool = True,
                         allow_rejections: bool = False,
                         max_requests: int = 16) -> type[PolicyMachine]:
    """A `PolicyMachine` subclass for `factory` (a zero-argument callable returning a fresh
    policy: the class itself, or a lambda with parameters). Use it as
    `TestMine = policy_state_machine(MyPolicy).TestCase` to let pytest run it, or hand it to
    `hypothesis.stateful.run_state_machine_as_test`.

    oracle: fill `Request.oracle_output_tokens` (output lengths are then drawn at arrival).
    abort_in_flight: also abort requests whose batch is running (see the module docstring).
    faults: inject device failures and repairs.
    allow_rejections: the policy may reject requests that would fit (admission control);
        every request must still end.
    max_requests: requests per example.
    """
    if not callable(factory):
        raise TypeError(f"factory must be a callable returning a policy, got {factory!r}")
    # The class name says which policy a printed counterexample is about, and keeps
    # hypothesis' example database apart for different policies (its key is the name).
    label = re.sub(r"\W+", "_", policy_name(factory())).strip("_") or "policy"
    base = _OracleMachine if oracle else PolicyMachine
    return type(f"{label}_machine", (base,), {
        "factory": staticmethod(factory),
        "abort_in_flight": abort_in_flight, "faults": faults,
        "allow_rejections": allow_rejections, "max_requests": max_requests,
        "__doc__": f"The conformance state machine for {label}.",
    })


def check_policy(factory: Callable, *, max_examples: int | None = None,
                 step_count: int = STEPS_PER_EXAMPLE, settings: Settings | None = None,
                 determinism: bool = True, **machine_options) -> None:
    """Run the conformance kit on `factory` (see the module docstring); raise on a violation.

    max_examples: examples of the state machine; default: the larger of 200 and the active
        hypothesis profile's max_examples (so a longer profile searches longer).
    step_count: random steps per example before the drain.
    settings: hypothesis settings to start from (e.g. a registered profile).
    determinism: also run `check_determinism` (two simulations compared bit for bit).
    machine_options: passed to `policy_state_machine` (oracle, abort_in_flight, faults,
        allow_rejections, max_requests).
    """
    machine = policy_state_machine(factory, **machine_options)
    base = settings if settings is not None else Settings.default
    examples = max_examples if max_examples is not None else max(MIN_EXAMPLES,
                                                                base.max_examples)
    # No "explain" phase: on a state machine it costs several times the shrinking itself.
    phases = [p for p in base.phases if p is not Phase.explain]
    chosen = Settings(base, max_examples=examples, stateful_step_count=step_count,
                      phases=phases, deadline=None, report_multiple_bugs=False,
                      suppress_health_check=[
                          HealthCheck.too_slow, HealthCheck.filter_too_much,
                          HealthCheck.data_too_large])
    run_state_machine_as_test(machine, settings=chosen)
    if determinism:
        check_determinism(factory, oracle=machine_options.get("oracle", False))


def check_determinism(factory: Callable, workload=None, devices=None, *, seed: int = 0,
                      oracle: bool = False) -> None:
    """Simulate twice with fresh policies (with and without injected faults) and compare
    records and per-device totals bit for bit; raise PolicyError(rule 'determinism') if not.

    workload, devices: default to 120 requests on two small devices (memory pressure, so
    preemption and rejection paths run too).
    """
    from .adapters.affine import affine_devices
    from .adapters.faults import Faults
    from .adapters.simulator import simulate
    from .workloads import make_workload

    if workload is None:
        workload = make_workload("poisson", rate=40.0, num_requests=120,
                                 prompt="lognormal:200:1.0:1500", output="lognormal:40:1.0:200")
    if devices is None:
        devices = affine_devices(2, kv_capacity_tokens=4096)
    for faults in (None, Faults(failure_rate=0.05, repair_time=0.05, seed=seed)):
        runs = [simulate(factory(), workload, devices, seed=seed, oracle=oracle,
                         faults=faults) for _ in range(2)]
        for what in ("records", "devices"):
            a, b = (getattr(r, what) for r in runs)
            if a.tobytes() != b.tobytes():
                raise PolicyError(runs[0].policy, "determinism",
                                  f"two runs with seed {seed}"
                                  f"{' and faults' if faults else ''} gave different {what}; "
                                  "a policy must not depend on object ids, set order of "
                                  "objects, unseeded randomness or state shared between "
                                  "instances")
