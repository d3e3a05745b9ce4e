"""The two protocols everything else plugs into: `Scheduler` (a policy) and `Device`.

They are `typing.Protocol`s: a policy or a device is any object with these methods, no base
class needed. `runtime_checkable` lets discovery reject a plugin that lacks one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .batch import Batch
from .plan import Plan
from .request import Request
from .step import StepResult


@runtime_checkable
class Device(Protocol):
    """Something that runs one Batch at a time.

    name: unique within a run; plans address devices by it.
    kv_capacity_tokens: how many tokens of KV cache fit in its memory (after weights and
        activations). The engine rejects a batch whose rows need more.
    run(batch): execute (or predict) one step and return its duration and cost breakdown;
        `emitted`, `finished` and `num_generated` are left for the engine to fill.

    Optional attributes that reports use when present: `price_per_hour` (USD per device-hour)
    and `num_gpus` (GPUs this device stands for, for per-GPU throughput), `peak_flops` and
    `peak_bandwidth` (for MFU and bandwidth utilisation), `num_experts` (MoE).
    Optional method: `kv_transfer_time(num_tokens, to_device) -> float`, the seconds it takes
    to send num_tokens tokens of KV cache to another device; needed for `Plan.migrations`.
    Optional method: `run_steps(batch, num_steps) -> (durations, costs) | None`, the steps
    1..num_steps of a multi-step decode batch (`Batch.num_steps`; step j feeds each row one
    token on top of `num_cached_tokens + j - 1`) priced in one vectorised call: a float array
    of num_steps durations and a (num_steps, 10) float array of their costs, columns in
    `core.step.COST_FIELDS` order. It must give exactly what `run` gives on each step's
    batch (the engine's single-step and multi-step records are compared for equality);
    return None to let the engine call `run` once per step instead.
    Optional method: `price_decodes(rows, context, micro_batches) -> (durations, costs) |
    None`, for a device whose decode step depends only on its totals: int arrays with one
    entry per step of the rows decoding, the context tokens they attend over (cached + 1
    each) and the micro-batches (rows and micro-batches may be ints, the same for every
    step); it must give the same (durations, costs) as `run` on each step's batch. The
    simulator prices the decode steps of a stretch, rows leaving or not, with one such
    call. A multi-step batch given to `run` is priced as its first step (`num_steps`
    ignored).
    Optional method: `price_step(batch) -> (duration, cost row)`, what `run` gives, the cost
    as a sequence in `COST_FIELDS` order: the simulator prices a multi-step batch's first
    step with it where present (and makes a StepResult only if that step runs alone), and
    calls `run` where it returns None (a step whose cost a row cannot hold, such as
    `communication_hidden`).
    """

    name: str
    kv_capacity_tokens: int

    def run(self, batch: Batch) -> StepResult: ...


@runtime_checkable
class Scheduler(Protocol):
    """A batching and scheduling policy.

    The engine calls, in time order and never concurrently:
    - `add(request, now)` when a request arrives. The request carries no true output length.
    - `schedule(now, devices)` when at least one device is idle and something changed (an
      arrival, a finished step, or the wake-up time the policy asked for). `devices` are the
      idle devices; the policy returns a `Plan` with at most one Batch per idle device, and
      optionally the time it next wants to be asked.
    - `update(batch, result, now)` when a batch it launched has run: `result.emitted`,
      `result.finished` and `result.num_generated` say, per row, what happened. A finished
      request is gone: the policy must free its memory and never schedule it again.
    - `abort(request_id)` when a client cancels a request (or a device lost it); the policy
      forgets it and frees its memory.

    A policy owns its queues and its view of KV memory (use `batchlab.core.KVBlockManager`).
    It never sleeps, reads a clock, draws unseeded randomness, or does I/O: everything it
    knows comes through these calls, so the same policy object runs in the simulator, on a
    real backend, and inside someone else's server loop. One instance serves one run.

    The engine guarantees: `now` never decreases; every request is added once before it
    appears anywhere else (after a device failure, a policy without `lost` has it aborted
    and added again); the first `schedule` call offers every device (a policy may learn the
    cluster from it); every batch is checked (see `batchlab.core.validate`) before it runs,
    and a bad one stops the run with a `PolicyError` naming the policy and the rule.

    Policies may define `name` (a str used in messages and reports) and `check_valid()`
    (raises AssertionError if internal state is inconsistent; property tests call it). A
    policy that plans KV migrations (`Plan.migrations`) must define
    `migrated(request_id, device_name, now)`, called when a transfer has ended.

    Optional: `lost(device_name, batch, now)`, called when a device fails (fault injection,
    `batchlab.engines.faults`). `batch` is the Batch it was running, or None if it was
    idle; that step produced nothing. Every KV cache on the device is gone (the engine now
    has 0 cached tokens for those requests); the requests stay the policy's: it frees their
    memory there and recomputes each from 0, feeding prompt + tokens generated so far, as
    after a preemption by recompute. The device is not offered to `schedule` until it is
    repaired, with empty memory. A policy without `lost` is told through calls it already
    handles: `update(batch, result)` with nothing emitted or finished, then, per request
    whose cache was lost, `abort(id)` and `add(request)` again with the same id, arrival and
    priority, the tokens generated so far appended to its prompt and taken off its cap.
    """

    def add(self, request: Request, now: float) -> None: ...

    def schedule(self, now: float, devices: Sequence[Device]) -> Plan: ...

    def update(self, batch: Batch, result: StepResult, now: float) -> None: ...

    def abort(self, request_id: int) -> None: ...


def policy_name(policy) -> str:
    """The name to use for a policy in messages: its `name` attribute, else its class name."""
    name = getattr(policy, "name", None)
    return name if isinstance(name, str) and name else type(policy).__name__
