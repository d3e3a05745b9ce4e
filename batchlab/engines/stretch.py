"""`Stretch`: the steps of one multi-step batch (`Batch.num_steps > 1`) in the simulator.

A stretch is priced lazily, a chunk of steps at a time, until a step ends at or after the
horizon the engine gives it (the next event on its heap, another stretch's first step), or it
has run all the steps it may. Which steps it may run:

- step 1 is the batch as planned: decodes, or prefill chunks that complete their prompts
  (every row emits a token at every step of a stretch; `core.validate` checks it);
- each later step decodes every row still in the stretch, one token on top of the last;
- a row reaching its true length (which the engine alone knows) ends the stretch, unless the
  batch says `drop_finished`: then the row leaves and the others run on, the steps after it
  priced as a batch of the rows left (a segment). A finish that makes a closed-loop user
  send its next request still ends the stretch, since that request arrives from then on.

Decode steps are priced in vectorised calls: from their per-step totals (rows, context
tokens) where the device has `price_decodes`, else a segment at a time by `run_steps`
(`Device`), else by `run` one step at a time and only for steps that happen (a device's
`run` may draw random numbers). From totals, one call prices the steps the horizon is
likely to reach at the device's recent decode step (`step_hint`, one step past it), or all of
them without a hint, and a second call the rest if the horizon lies further; by
`run_steps`, STEPS_GUESS at first and the rest only if the horizon lies further. The values
are the ones single steps would give: every step's batch has the same rows, tokens and
context as the batch planned alone. Where only one step runs, the engine books it as a
plain step.
"""

from __future__ import annotations

import math

import numpy as np

from ..core import Batch, StepCost, StepResult
from ..core.errors import ConfigError
from ..core.step import COST_FIELDS, cost_row

# Decode steps priced at first by `run_steps` (the rest when the horizon lies further away).
STEPS_GUESS = 16
_FLOAT = np.dtype(np.float64)


class Stretch:
    """The priced steps of one multi-step batch on one device, from `start`."""

    def __init__(self, batch: Batch, device, start: float, left: np.ndarray, chained=None,
                 step_hint: float | None = None):
        """left: per row, the tokens it has yet to emit (>= 1: it emits at step 1).
        chained: per row, whether its finish sends a closed-loop follow-up (None: none).
        step_hint: about how long a decode step of this device took lately (None: unknown),
        to price from totals only the steps the horizon is likely to reach (`_price`)."""
        self.batch, self.device, self.start = batch, device, start
        self.step_hint = step_hint
        self.decode_step = None  # the first decode step's duration, once priced from totals
        self.left = left
        k = int(batch.num_steps)
        # ufunc reductions: what .min()/.max() call, without their Python-level wrappers
        first_out = int(np.minimum.reduce(left))  # the step after which the first row is done
        if not batch.drop_finished:
            k = min(k, first_out)
        else:
            k = min(k, int(np.maximum.reduce(left)))
            if chained is not None and chained.any():
                k = min(k, int(left[chained].min()))
        self.num_steps = k  # the most steps it may run
        # Rows leave before the last step: the steps after the first leaves have fewer.
        self.shrinks = first_out < k
        self.first_out = first_out
        self._cuts = None  # the steps after which rows leave, where needed (_segment)
        # Per step: rows in it and the context tokens they attend over, once rows leave
        # within the steps priced (`_count_rows`).
        self.rows = self.context = None
        self.price_decodes = getattr(device, "price_decodes", None)
        self.run_steps = getattr(device, "run_steps", None)
        self.is_decode = batch.num_tokens == batch.num_seqs
        self.durations: list = []  # priced chunks: durations, costs, ends
        self.costs: list = []
        self.ends: list = []
        self.num_priced = 0
        self.end = start  # end of the last step priced
        self.num_run = 0  # steps it runs: set by `settle`
        # step 1's StepResult where it runs alone (`settle`) and was priced on its own
        self.first_result = None
        self.lead = False  # step 1 priced on its own (a prefill step: `_run`)
        # Per step priced, the communication hidden under computation (StepCost's field that
        # a cost row has no column for), once a step priced by `run` had some; else None
        self._hidden = None
        # `run` as (duration, cost row), where the device has it: step 1's StepResult is
        # then made only if that step runs alone (~2 us a stretch that runs on)
        self.price_step = getattr(device, "price_step", None)
        self._price()

    def _count_rows(self) -> None:
        """Rows in each step and their context (exact ints), for rows that leave."""
        k = self.num_steps
        base = self.batch.num_cached_tokens + self.batch.num_new_tokens
        # Rows that leave after step s, and their tokens, counted by s (rows with more steps
        # left than k run all k): the rows in step s are those no earlier step let go.
        last = np.minimum(self.left, k)
        # np.add.accumulate: what .cumsum() computes, without its dispatch (~0.6 us each)
        gone = np.add.accumulate(np.bincount(last, minlength=k + 1))
        # Token sums as float64 weights: exact while below 2**53, which a batch's context,
        # bounded by a device's memory, is far from.
        gone_tokens = np.add.accumulate(np.bincount(last, weights=base, minlength=k + 1))
        self.rows = self.batch.num_seqs - gone[:k]
        stay = self.batch.num_context_tokens - gone_tokens[:k].astype(np.int64)
        self.context = stay + self.rows * np.arange(k)

    @property
    def first_end(self) -> float:
        return float(self.ends[0][0])

    @property
    def last_end(self) -> float:
        """When the steps it runs end (after `settle`)."""
        return float(self.ends[-1])

    def extend(self, horizon: float) -> None:
        """Price steps until one ends at or after `horizon`, or every step it may run."""
        while self.num_priced < self.num_steps and self.end < horizon:
            self._price(horizon)

    def settle(self, horizon: float) -> int:
        """Fix the steps it runs: up to the first ending at or after `horizon`."""
        self.extend(horizon)
        if self.lead and self.ends[0][0] >= horizon:
            self.ends, self.num_run = self.ends[0][:1], 1  # one step, priced by `_run`
            if self.first_result is None:  # priced by price_step: the StepResult run gives
                self.first_result = StepResult(self.durations[0][0],
                                               StepCost(*self.costs[0][0]))
            return 1
        if len(self.ends) == 1 and not isinstance(self.ends[0], tuple):  # one priced chunk
            ends, durations, costs = self.ends[0], self.durations[0], self.costs[0]
        else:
            ends, durations = np.concatenate(self.ends), np.concatenate(self.durations)
            costs = np.concatenate(self.costs).astype(float, copy=False)
        # ends.searchsorted: np.searchsorted without its Python-level wrapper (~1 us)
        j = len(ends) if ends[-1] < horizon else int(ends.searchsorted(horizon)) + 1
        if j < len(ends):
            ends, durations, costs = ends[:j], durations[:j], costs[:j]
        self.ends, self.durations, self.costs = ends, durations, costs
        self.num_run = j
        return j

    def hidden_total(self) -> float:
        """Communication hidden under computation over the steps it runs (after `settle`),
        summed step by step: what the steps' StepCosts said, which their cost rows cannot."""
        return 0.0 if self._hidden is None else float(sum(self._hidden[:self.num_run]))

    def row_steps(self) -> np.ndarray | None:
        """Steps each row ran (None: all of them, every row)."""
        if not self.shrinks or self.first_out >= self.num_run:
            return None
        return np.minimum(self.left, self.num_run)

    def step_totals(self):
        """(rows, context tokens) per step run, or None if every row ran every step."""
        if not self.shrinks or self.first_out >= self.num_run:
            return None
        if self.rows is None:
            self._count_rows()
        return self.rows[:self.num_run], self.context[:self.num_run]

    # -- pricing ------------------------------------------------------------------------
    def _price(self, horizon: float = math.inf) -> None:
        """Price the next chunk of steps: step 1 alone if it is a prefill step; else every
        decode step by `price_decodes`, or up to STEPS_GUESS of them at first by
        `run_steps`, then the rest (within a segment, where rows leave), or one step by
        `run`."""
        s = self.num_priced + 1  # the first step not priced yet (1-based)
        batch = self.batch
        if s == 1 and not self.is_decode:  # a prefill step leads: priced as planned
            self._run(batch)
            return
        if self.price_decodes is not None:
            # Priced from per-step totals, the steps the horizon is likely to reach (one step
            # past its time over a recent first decode step's: later steps attend over more
            # context, so this seldom falls short; in the vidur case, 30 second calls in 9,000
            # stretches, and a fifth fewer steps priced than a 25% margin), or all of them
            # where no recent step says how long one takes. Each step is priced alone
            # (element-wise over steps), so the values do not depend on how many are priced
            # at once.
            last = self.num_steps
            hint = self.step_hint
            if hint and horizon != math.inf:
                reach = (horizon - self.end) / hint  # a float: may be huge
                if reach < last - s - 1:
                    last = s + 1 + int(reach)
            if self.shrinks and self.first_out < last:  # rows leave within these steps
                if self.rows is None:
                    self._count_rows()
                rows, context = self.rows[s - 1:last], self.context[s - 1:last]
            else:  # every row: an int, the same for each step
                rows, c = batch.num_seqs, batch.num_context_tokens
                context = np.arange(c + rows * (s - 1), c + rows * last, rows)  # one call, not 3
            m = batch.num_micro_batches
            if m != 1:  # capped at the rows, as a policy planning the step alone would
                m = min(m, rows) if isinstance(rows, int) else np.minimum(rows, m)
            priced = self.price_decodes(rows, context, m)
            if priced is not None:
                self._append(*priced, last - s + 1, "price_decodes")
                if self.decode_step is None:
                    self.decode_step = float(priced[0][0])
                return
        first = s == 1 or (s == 2 and not self.is_decode)  # the first decode steps
        last = min(self.num_steps, s + STEPS_GUESS - 1) if first else self.num_steps
        last, rows = self._segment(s, last)
        ids, new, cached = batch.request_ids, batch.num_new_tokens, batch.num_cached_tokens
        if rows is not None:
            ids, new, cached = ids[rows], new[rows], cached[rows]
        if s == 1 and rows is None:
            step = batch  # run_steps and run read the rows, not num_steps
        else:  # the rows decode on: step s attends over cached + new + (s - 2) per row
            step = Batch(ids, np.ones(ids.size, np.int64), cached + new + (s - 2),
                         num_micro_batches=min(batch.num_micro_batches, ids.size))
        if self.run_steps is not None:
            priced = self.run_steps(step, last - s + 1)
            if priced is not None:
                self._append(*priced, last - s + 1, "run_steps")
                return
        self._run(step)  # one step at a time: only steps that happen

    def _segment(self, s: int, last: int) -> tuple[int, np.ndarray | None]:
        """(last step from s on with the same rows, up to `last`; which rows (None: all))."""
        if not self.shrinks:
            return last, None
        if self._cuts is None:
            self._cuts = np.unique(self.left[self.left < self.num_steps])
        i = int(np.searchsorted(self._cuts, s))  # first cut at or after step s
        if i < self._cuts.size:
            last = min(last, int(self._cuts[i]))
        return last, (None if i == 0 else self.left >= s)

    def _run(self, step: Batch) -> None:
        hidden = 0.0  # price_step's rows: none (it declines steps that hide communication)
        if self.num_priced == 0:
            self.lead = True
            priced = None if self.price_step is None else self.price_step(step)
            if priced is not None:
                duration, row = priced
            else:
                self.first_result = result = self.device.run(step)
                duration, row = result.duration, cost_row(result.cost)
                hidden = result.cost.communication_hidden
        else:
            result = self.device.run(step)
            duration, row = result.duration, cost_row(result.cost)
            hidden = result.cost.communication_hidden
        if not (duration >= 0 and math.isfinite(duration)):
            raise ConfigError(f"device {self.device.name!r} returned step duration "
                              f"{duration!r}")
        end = self.end + duration
        # Sequences, not arrays: `settle` makes arrays only if more steps follow.
        self.durations.append((duration,))
        self.costs.append((row,))
        self.ends.append((end,))
        if hidden or self._hidden is not None:
            if self._hidden is None:
                self._hidden = [0.0] * self.num_priced
            self._hidden.append(hidden)
        self.num_priced += 1
        self.end = end

    def _append(self, durations, costs, k: int, method: str) -> None:
        """Book `k` priced steps; a device that priced another number, or gave costs of
        another shape, is named (its steps would be booked as tokens nobody asked for)."""
        ends = seq = None
        if (getattr(durations, "shape", None) == (k,) and k
                and getattr(costs, "shape", None) == (k, len(COST_FIELDS))):
            if self.num_priced == 1 and self.lead:
                # After a prefill step priced by `_run`: one chunk of every step from the
                # start (the same sequential sums), which `settle` takes without joining.
                # Filled in place where the device gives float64 (~0.8 us fewer than
                # concatenating, which converts step 1's tuples on the way).
                if durations.dtype == _FLOAT and costs.dtype == _FLOAT:
                    seq = np.empty(k + 2)
                    seq[0], seq[1] = self.start, self.durations[0][0]
                    seq[2:] = durations
                else:
                    seq = np.concatenate(((self.start,), self.durations[0], durations))
                ends = np.add.accumulate(seq)[1:]
            else:  # sequential sums; np.add.accumulate: np.cumsum without its wrapper
                ends = np.add.accumulate(np.concatenate(((self.end,), durations)))[1:]
        # Every duration >= 0 (NaN fails it) and a finite last end: all finite, in two checks.
        if ends is None or not (np.minimum.reduce(durations) >= 0 and math.isfinite(ends[-1])):
            raise ConfigError(
                f"device {self.device.name!r}: {method} was asked for {k} steps and returned "
                f"durations of shape {getattr(durations, 'shape', None)} and costs of shape "
                f"{getattr(costs, 'shape', None)}; it must return ({k},) durations >= 0 and "
                f"({k}, {len(COST_FIELDS)}) costs")
        if seq is not None:  # step 1's chunk becomes the joined one
            self.durations[0] = seq[1:]
            if costs.dtype == _FLOAT:  # the same values as concatenating, as above
                joined = np.empty((k + 1, len(COST_FIELDS)))
                joined[0] = self.costs[0][0]
                joined[1:] = costs
                self.costs[0] = joined
            else:
                self.costs[0] = np.concatenate((self.costs[0], costs))
            self.ends[0] = ends
        else:
            self.durations.append(durations)
            self.costs.append(costs)
            self.ends.append(ends)
        if self._hidden is not None:  # steps priced as rows hide nothing
            self._hidden.extend([0.0] * k)
        self.num_priced += k
        self.end = float(ends[-1])
