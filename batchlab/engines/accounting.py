"""Step accounting shared by every engine: per-device totals booked step by step.

The simulator, the wall-clock engine and the serving front all book a finished step the same
way (`DeviceTotals.book`) and hand the same per-device table to `Result`; a change to what a
step adds to the totals is made here once. Totals are plain Python floats while a run goes
(numpy field updates cost more than the sums on the simulator's step path) and become a
`DEVICE_DTYPE` table only when asked for (`table()`); the simulator's multi-step stretches
(`book_steps`) are held as rows of a numpy block and added to them in bulk, in step order.
"""

from __future__ import annotations

import numpy as np

from ..core.step import cost_row
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


# Steps a device's held block takes before it is summed (`DeviceTotals.book_steps`): about
# 90 kB a device; a longer stretch grows its block.
HELD_STEPS = 1024


class DeviceTotals:
    """What each device of one run did. `stats` holds the fields engines set directly
    (failures, KV transfers); `book` adds one finished step, `book_steps` a stretch of them.

    A stretch's float columns are not summed when it is booked: its rows are copied into a
    per-device block and the block is summed down its rows (one cumulative sum from the
    totals so far, the same additions in the same order as step by step) when it is full,
    when a single step is booked in Python floats, or when the totals are read. A stretch
    booked at once made and summed a block of its own, about 6 us in the vidur case's 6,300
    stretches; a copy into the held block is two slice assignments."""

    def __init__(self, devices):
        self.stats = device_table(devices)
        self.acc = [[0.0] * len(ACC_FIELDS) for _ in devices]
        # Per device: the block of held rows (None until its first stretch): row 0 takes the
        # totals so far when it is summed, rows 1..held the steps booked since, in order.
        self._block: list = [None] * len(devices)
        self._held = [0] * len(devices)
        # Per device: (rows, context tokens) per step of the held stretches whose rows left on
        # the way (int sums: exact in any order), summed with the block.
        self._held_totals: list = [[] for _ in devices]

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
        held = self._held[d]
        if held:  # after held steps: a row of the block, to keep the order of the additions
            if held == len(self._block[d]) - 1:
                self._sum_held(d)
            else:
                held += 1
                row = self._block[d][held]
                row[0] = duration
                row[1:] = cost_row(cost)  # routed tokens, bubble time: made in _sum_held
                self._held[d] = held
                return
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
        in the same order (held, then summed down the steps: the class doc). Step 1 is the
        batch as planned, the later ones decode every row still in it.
        totals: (rows, context tokens) per step where rows left on the way; None: every
        row ran every step."""
        j, rows, acc = len(durations), batch.num_seqs, self.acc[d]
        # The token counts are whole numbers far below 2**53: their sums, taken in ints, are
        # the floats a step-by-step sum gives. Every row emits a token at every step of a
        # stretch; step 1 feeds what was planned (prefill chunks too), a later one its rows.
        acc[0] += j
        if totals is None:
            acc[1] += batch.num_tokens + rows * (j - 1)
            acc[2] += batch.num_context_tokens * j + rows * (j * (j - 1) // 2)
            acc[3] += rows * j
        else:  # the steps' rows (their tokens emitted, and fed after step 1) and context
            acc[1] += batch.num_tokens - rows
            self._held_totals[d].append(totals)
        block, held = self._block[d], self._held[d]
        if block is None or held + j >= len(block):  # full: sum it, grow it for a long stretch
            if held:
                self._sum_held(d)
                held = 0
            if block is None or j >= len(block):
                block = self._block[d] = np.empty((max(j, HELD_STEPS) + 1, _NUM_SUMMED))
        rows_j = block[held + 1:held + 1 + j]
        rows_j[:, 0] = durations
        rows_j[:, 1:] = costs  # routed tokens, bubble time: made in _sum_held
        self._held[d] = held + j

    def _sum_held(self, d: int) -> None:
        """Add device `d`'s held rows to its totals (the class doc)."""
        acc, held = self.acc[d], self._held[d]
        block = self._block[d][:held + 1]
        # Busy time, then the cost columns, in ACC_FIELDS' order: tokens per expert and bubble
        # fraction become routed tokens and bubble time (times experts touched, duration).
        block[0] = acc[BUSY:]
        block[1:, 8] *= block[1:, 7]
        block[1:, 9] *= block[1:, 0]
        # A cumulative sum adds sequentially, as `book` does step by step (np.add.reduce
        # promises no order); np.cumsum is this accumulate behind a Python-level wrapper.
        acc[BUSY:] = np.add.accumulate(block, axis=0)[-1].tolist()
        self._held[d] = 0
        totals = self._held_totals[d]
        if totals:
            emitted = int(np.add.reduce(np.concatenate([rows for rows, _ in totals])))
            acc[1] += emitted
            acc[2] += int(np.add.reduce(np.concatenate([context for _, context in totals])))
            acc[3] += emitted
            totals.clear()

    def add_busy(self, d: int, seconds: float) -> None:
        """A step that did not complete (a failure) still kept the device busy."""
        if self._held[d]:
            self._sum_held(d)
        self.acc[d][BUSY] += seconds

    def table(self) -> np.ndarray:
        """A fresh DEVICE_DTYPE table of the totals so far."""
        for d, held in enumerate(self._held):
            if held:
                self._sum_held(d)
        stats = self.stats.copy()
        for d, acc in enumerate(self.acc):
            for field, value in zip(ACC_FIELDS, acc):
                stats[d][field] = value
        return stats
