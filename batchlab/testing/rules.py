"""The contract checks the kit runs on a policy: memory at each launch, the invariants after
every step (conservation, tokens, causality, the policy's own `check_valid`), liveness once
arrivals stop (the drain), and determinism (a replay of the same calls on a fresh policy).

`ContractChecks` is a mixin of `PolicyMachine`; its methods read the machine's state.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis.stateful import invariant

from ..core import Batch, Plan
from ..core.errors import PolicyError
from ..core.table import FINISHED, PENDING, WAITING
from .world import DRAIN_STEP, DRAIN_TOKENS, _Ref, _Resident, _tracked


class ContractChecks:
    """What must hold of a policy; mixed into `PolicyMachine`."""

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
            # a multi-step batch holds one more token a row at each later step
            used = (batch.padded_len * batch.num_seqs if batch.padded_len is not None
                    else batch.num_context_tokens + (batch.num_steps - 1) * batch.num_seqs)
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
