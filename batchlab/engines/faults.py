"""Fault injection: devices that fail mid-step and come back after a repair time.

`Faults` says when devices fail: each launched step fails with probability `failure_rate`
(at a uniformly drawn point of its duration), and/or at fixed `(time, device)` pairs; a
failed device is down for `repair_time` seconds. Draws come from a stream seeded by the run's
seed and `Faults.seed`, so a run with faults is as deterministic as one without.

What a failure destroys, and how the policy hears of it, is `lose_device`, shared by the
simulator and the conformance kit (`batchlab.testing`) so that both follow one protocol:

- the batch in flight produces nothing, and every KV cache on the device is gone: the batch's
  rows and any other request whose cache lived there (a policy may keep sequences resident
  that the step did not feed). The engine sets their cached tokens to 0; tokens already
  emitted stay emitted.
- a policy with a `lost(device_name, batch, now)` method is told exactly that (`batch` is None
  when the device was idle) and recomputes the requests from 0 itself, as after a preemption.
- a policy without it gets a fallback made only of calls it already handles: `update(batch,
  result)` with nothing emitted and nothing finished (the step ran for nothing), then, for
  each request whose cache was lost, `abort(id)` and `add(request)` again, where the request
  keeps its id, arrival and priority and carries its prompt plus the tokens generated so far
  as its prompt (and a cap reduced by as many): recomputing that prompt from 0 brings the
  sequence back to where it was, and the engine emits the next token when it does.

Not modelled: a failure does not interrupt a KV transfer (`Plan.migrations`) under way.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from ..core import Request, StepResult
from ..core.errors import ConfigError
from ..core.table import WAITING, RequestTable


def _rate(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 <= value < 1:
        raise ConfigError(f"Faults.{attribute.name} must be a probability in [0, 1) (the "
                          f"share of steps that fail), got {value!r}")


def _non_negative(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ConfigError(f"Faults.{attribute.name} must be a finite number of seconds >= 0, "
                          f"got {value!r}")


def _seed(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"Faults.{attribute.name} must be an int >= 0, got {value!r}")


def _schedule(value):
    try:
        pairs = tuple((t, name) for t, name in (value or ()))
    except (TypeError, ValueError):
        raise ConfigError(f"Faults.schedule must be (time, device name) pairs, got "
                          f"{value!r}") from None
    for t, name in pairs:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) \
                or t < 0:
            raise ConfigError(f"Faults.schedule: failure time {t!r} must be a finite number "
                              "of seconds >= 0")
        if not isinstance(name, str):
            raise ConfigError(f"Faults.schedule: {name!r} must be a device name")
    return tuple(sorted((float(t), name) for t, name in pairs))


@attrs.frozen
class Faults:
    """When devices fail, and for how long.

    failure_rate: probability that a launched step fails (each step independently); it fails
        at a uniformly drawn point of its duration, and its batch is lost.
    schedule: (time, device name) pairs: that device fails at that time; if it is running a
        step, the step is lost; if it is idle, its KV caches are lost. A device already down
        is not failed again. Policies learn the cluster from the first `schedule` call, which
        therefore offers every device: a failure scheduled before the first step launches
        strikes at that launch instead.
    repair_time: seconds a failed device stays down; then it is offered to the policy again,
        with empty memory.
    seed: the fault stream's seed, combined with the run's seed.
    """

    failure_rate: float = attrs.field(default=0.0, validator=_rate)
    schedule: tuple = attrs.field(default=(), converter=_schedule)
    repair_time: float = attrs.field(default=1.0, validator=_non_negative)
    seed: int = attrs.field(default=0, validator=_seed)

    def rng(self, run_seed: int) -> np.random.Generator:
        return np.random.default_rng([int(run_seed), int(self.seed)])


def resubmitted(request: Request, num_generated: int) -> Request:
    """The request as the fallback re-adds it after a failure: same id, arrival and priority;
    the tokens generated so far are appended to its prompt and taken off its cap."""
    if num_generated == 0:
        return request
    oracle = request.oracle_output_tokens
    return attrs.evolve(request, prompt_tokens=request.prompt_tokens + num_generated,
                        max_new_tokens=request.max_new_tokens - num_generated,
                        oracle_output_tokens=None if oracle is None else oracle - num_generated)


def lose_device(call, policy, table: RequestTable, device_index: int, device_name: str,
                batch, now: float, request_of, *, elapsed: float = 0.0,
                keep_out=()) -> int:
    """Book a failure of one device and tell the policy; returns the KV tokens destroyed.

    call(method, *args): calls the policy (the engine's wrapper that names it on errors).
    batch: the Batch the device was running, or None if it was idle.
    request_of(rid): the Request as the policy first received it.
    elapsed: how long the lost step ran (the fallback's `update` reports it as the duration).
    keep_out: ids the policy has already forgotten (aborted while in flight): their caches are
        lost but they are not handed back to it.
    """
    n = table.size
    resident = (table.home[:n] == device_index) & (table.status[:n] == WAITING) \
        & ~table.in_flight[:n] & (table.cached[:n] > 0)
    ids = np.flatnonzero(resident)
    if batch is not None:
        ids = np.union1d(ids, batch.request_ids)
    destroyed = int(table.cached[ids].sum())
    if batch is not None:
        table.lose(batch)
    table.cached[ids] = 0
    table.home[ids] = -1
    if callable(getattr(policy, "lost", None)):
        call("lost", device_name, batch, now)
        return destroyed
    if batch is not None:
        rows = batch.num_seqs
        nothing = np.zeros(rows, dtype=bool)
        call("update", batch, StepResult(elapsed, emitted=nothing, finished=nothing.copy(),
                                         num_generated=table.generated[batch.request_ids]
                                         .copy()), now)
    if len(keep_out):
        ids = ids[~np.isin(ids, np.asarray(list(keep_out), dtype=np.int64))]
    # Re-add in arrival order, so that a first-come-first-served policy keeps its order.
    for rid in sorted(ids.tolist(), key=lambda r: (table.arrival[r], r)):
        call("abort", rid)
        call("add", resubmitted(request_of(rid), int(table.generated[rid])), now)
    return destroyed
