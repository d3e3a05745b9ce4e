"""`StepCost` and `StepResult`: what running one Batch took, and what came of it.

A Device fills in the duration and the cost breakdown. Which rows emitted an output token and
which requests finished is decided by the engine, which alone knows each request's true output
length; it completes the device's result before the policy sees it in `Scheduler.update`.
"""

from __future__ import annotations

import attrs
import numpy as np

_EMPTY_BOOL = np.zeros(0, dtype=bool)
_EMPTY_BOOL.flags.writeable = False


@attrs.frozen(slots=True)
class StepCost:
    """Where a step's time went, in seconds, plus utilisation figures.

    compute, memory, communication, overhead: time attributed to each (a roofline model
        attributes each op to whichever of compute and memory bounds it; they sum to the
        step's duration when the model is additive, and the device documents when not).
    flops, bytes: work done, for MFU and bandwidth utilisation.
    experts_touched: distinct routed experts that received at least one token (MoE), else 0.
    tokens_per_expert: mean routed tokens per touched expert (MoE), else 0.
    bubble_fraction: share of the step pipeline stages sat idle (pipelines, disaggregation).
    padded_tokens: padding fed through the model (bucketing).
    communication_hidden: communication that ran under computation (overlapped micro-batches)
        and so is not part of the duration; `communication` is the exposed part.
    """

    compute: float = 0.0
    memory: float = 0.0
    communication: float = 0.0
    overhead: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0
    experts_touched: float = 0.0
    tokens_per_expert: float = 0.0
    bubble_fraction: float = 0.0
    padded_tokens: int = 0
    communication_hidden: float = 0.0


COST_FIELDS = ("compute", "memory", "communication", "overhead", "flops", "bytes",
               "experts_touched", "tokens_per_expert", "bubble_fraction", "padded_tokens")
"""StepCost's fields in order: the columns of the per-step cost matrix of
`Device.run_steps` (one row per step)."""


def cost_row(cost: StepCost) -> tuple:
    """A StepCost as one row of a per-step cost matrix (COST_FIELDS order)."""
    return (cost.compute, cost.memory, cost.communication, cost.overhead, cost.flops,
            cost.bytes, cost.experts_touched, cost.tokens_per_expert, cost.bubble_fraction,
            cost.padded_tokens)


@attrs.frozen(slots=True)
class StepResult:
    """The outcome of one step.

    duration: seconds the step took (predicted by a cost model, or measured).
    cost: the breakdown of that time.
    emitted: bool per batch row: the row produced an output token this step.
    finished: bool per batch row: the row's request produced its last token this step.
    num_generated: int per batch row: output tokens the request has produced so far,
        after this step (so a policy knows how long a sequence is without seeing its future).
    tokens: optional int per batch row: the token ids a real backend produced.
    num_steps: how many steps of a multi-step batch (`Batch.num_steps`) this result covers;
        duration and cost are their totals, emitted/finished/num_generated their net effect
        (a row emitted if it emitted in any of them).
    """

    duration: float
    cost: StepCost = attrs.field(factory=StepCost)
    emitted: np.ndarray = _EMPTY_BOOL
    finished: np.ndarray = _EMPTY_BOOL
    num_generated: np.ndarray = attrs.field(factory=lambda: np.zeros(0, dtype=np.int64))
    tokens: np.ndarray | None = None
    num_steps: int = 1

    def finished_ids(self, batch) -> np.ndarray:
        """Request ids of the rows that finished, given the batch this result belongs to."""
        return batch.request_ids[self.finished]
