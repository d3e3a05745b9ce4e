"""Step accounting shared by every engine: per-device totals booked step by step.

The simulator, the wall-clock engine and the serving front all book a finished step the same
way (`DeviceTotals.book`) and hand the same per-device table to `Result`; a change to what a
step adds to the totals is made here once. Totals are plain Python floats while a run goes
(numpy field updates cost more than the sums on the simulator's step path) and become a
`DEVICE_DTYPE` table only when asked for (`table()`).
"""

from __future__ import annotations

import numpy as np

from .result import device_table

# Per-device totals accumulated during a run, in this order (DEVICE_DTYPE field names).
# The counts first, then the float sums `book_steps` takes down a stretch's steps in one
# block: busy time, then the fields of the cost columns they sum, in their order
# (core.step.COST_FIELDS: compute, memory, communication, overhead, flops, bytes, experts
# touched, tokens per expert x experts, bubble fraction x duration, padded tokens), so the
# block's first row is one slice of the totals and its cost columns a plain copy of the
# stretch's cost matrix (a `take` in another order cost about 1 us).
ACC_FIELDS = ("steps", "new_tokens", "context_tokens", "output_tokens", "busy_time",
              "compute_time", "memory_time", "communication_time", "overhead_time", "flops",
              "bytes", "experts_touched", "routed_tokens", "bubble_time", "padded_tokens")
BUSY = ACC_FIELDS.index("busy_time")
_NUM_SUMMED = len(ACC_FIELDS) - BUSY  # book_steps' float columns: busy time and the costs


class DeviceTotals:
    """What each device of one run did. `stats` holds the fields engines set directly
    (failures, KV transfers); `book` adds one finished step."""

    def __init__(self, devices):
        self.stats = device_table(devices)
        self.acc = [[0.0] * len(ACC_FIELDS) for _ in devices]

    def book(self, d: int, batch, result, num_emitted: int, duration: float | None = None):
        """Add one step of device `d`: its batch, its StepResult, the tokens it emitted.
        duration: the time to book as busy, if not the result's (a measured one)."""
        cost, acc = result.cost, self.acc[d]
        if duration is None:
            duration = result.duration
        acc[0] += 1
        acc[1] += batch.num_tokens
        acc[2] += batch.num_context_tokens
        acc[3] += num_emitted
        acc[4] += duration
        acc[5] += cost.compute
        acc[6] += cost.memory
        acc[7] += cost.communication
        acc[8] += cost.overhead
        acc[9] += cost.flops
        acc[10] += cost.bytes
        acc[11] += cost.experts_touched
        acc[12] += cost.tokens_per_expert * cost.experts_touched
        acc[13] += cost.bubble_fraction * duration
        acc[14] += cost.padded_tokens

    def book_steps(self, d: int, batch, durations: np.ndarray, costs: np.ndarray,
                   totals=None) -> None:
        """Add the steps of a multi-step batch (durations, and their costs in
        `core.step.COST_FIELDS` columns), as `book` would one by one: the same values, added
        in the same order (a cumulative sum down the steps adds sequentially). Step 1 is the
        batch as planned, the later ones decode every row still in it.
        totals: (rows, context tokens) per step where rows left on the way; None: every
        row ran every step."""
        j, rows, acc = len(durations), batch.num_seqs, self.acc[d]
        # The token counts are whole numbers far below 2**53: their sums, taken in ints, are
        # the floats a step-by-step sum gives. Every row emits a token at every step of a
        # stretch; step 1 feeds what was planned (prefill chunks too), a later one its rows.
        if totals is None:
            emitted = rows * j
            context = batch.num_context_tokens * j + rows * (j * (j - 1) // 2)
        else:
            emitted, context = int(np.add.reduce(totals[0])), int(np.add.reduce(totals[1]))
        # The float columns, summed down the steps as `book` would (a cumulative sum adds
        # sequentially), from the totals so far: busy time, then the cost columns, in
        # ACC_FIELDS' order (tokens per expert and bubble fraction made routed tokens and
        # bubble time below).
        block = np.empty((j + 1, _NUM_SUMMED))
        block[0] = acc[BUSY:]
        block[1:, 0] = durations
        block[1:, 1:] = costs
        block[1:, 8] *= costs[:, 6]
        block[1:, 9] *= durations
        # np.cumsum is this same accumulate behind a Python-level wrapper (about 1 us a call).
        sums = np.add.accumulate(block, axis=0)[-1].tolist()
        self.acc[d] = [acc[0] + j, acc[1] + (batch.num_tokens + emitted - rows),
                       acc[2] + context, acc[3] + emitted] + sums

    def add_busy(self, d: int, seconds: float) -> None:
        """A step that did not complete (a failure) still kept the device busy."""
        self.acc[d][BUSY] += seconds

    def table(self) -> np.ndarray:
        """A fresh DEVICE_DTYPE table of the totals so far."""
        stats = self.stats.copy()
        for d, acc in enumerate(self.acc):
            for field, value in zip(ACC_FIELDS, acc):
                stats[d][field] = value
        return stats
