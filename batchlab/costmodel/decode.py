"""`DecodePricer`: the roofline time of pure decode steps, k steps in one vectorised call.

A decode step of R rows feeds R tokens and reads the rows' cached context; of the nine batch
features (`features.py`) only rows (R of them, feeding R tokens) and context keys (read once,
one query each) are not zero, so each op's compute time,
memory time, FLOPs and bytes are a constant plus one column times the rows plus another
times the keys: element-wise arithmetic over a (steps x ops) array, then the roofline max
per op and one reduction along each row. The simulator's records must be the same whether a
stretch is priced at once or step by step, so `CostModelDevice.run` prices every single
decode step through this same code with k = 1; element-wise operations and a reduction along
a contiguous row give the same floating-point result whatever k is, and whatever the other
steps priced with it (a stretch whose rows leave as they finish prices steps of different
rows together: `price_totals`).

It covers what the simulator runs most: dense models without pipeline stages. For anything
else (MoE routing, pipelines, padding) `for_model` returns None and the device uses
`StepModel.cost`. On construction it checks itself against `StepModel.cost` on a few decode
batches and declines (returns None) if they disagree beyond rounding (the columns are summed
in another order), so a change to the step model can make the fast path slower, never wrong.
"""

from __future__ import annotations

import numpy as np

from .ops import CD, NUM_FEATURES, QD, R, RD, T, TD
_TOLERANCE = 1e-9
# Row counts up to which `DecodePricer._base` keeps a table (4 x ops floats a row).
_MOST_TABLE_ROWS = 1 << 14


class DecodePricer:
    """Duration and cost rows of decode steps on one StepModel (dense, one stage)."""

    def __init__(self, step_model):
        sm, eff = step_model, step_model.efficiency
        self._M = sm._M                       # (4 x ops, NUM_FEATURES)
        self._K0 = np.ascontiguousarray(sm._K[0])
        self._n = sm._n
        self._scale, self._size = sm._scale, sm._size
        self._ovh = sm._ovh[0]
        self._h_bytes = sm._h_bytes
        self._stage = sm._stages[0]
        self._step_overhead = eff.step_overhead
        M = self._M
        # Per op and quantity: constant, per scaled row (tokens, rows, decode rows and decode
        # tokens are all R in a decode step), per scaled context key (keys read and query-key
        # pairs are equal: one query a row). In each column pair one of the two is zero
        # wherever the other is not (build_ops), so the sums are exact.
        self._A = np.ascontiguousarray(M[:, 0])
        self._B = M[:, T] + M[:, R] + M[:, RD] + M[:, TD]
        self._C = M[:, CD] + M[:, QD]
        # The same, shaped (4 quantities, 1, ops) for price_totals' (4, steps, ops) layout.
        self._A3, self._B3, self._C3 = (a.reshape(4, 1, self._n)
                                        for a in (self._A, self._B, self._C))
        self._C2 = self._C.reshape(4, self._n)  # price_one's (4 quantities, ops)
        layers, dense, _, ar_l, ar_s, _ = self._stage
        # Two all-reduces' worth per layer: latency, and bytes (R / m rows of hidden states).
        self._comm0 = (layers + dense) * ar_l if ar_s else 0.0
        self._comm1 = (layers + dense) * self._scale * self._h_bytes * ar_s if ar_s else 0.0
        # micro-batches -> (4, rows, ops) table of A + B x scaled rows for rows 0, 1, ...
        # (`_base`): a step's base is then a slice, and a stretch's steps one take.
        self._base_tables: dict = {}
        # One micro-batch: cost columns from (compute, time, FLOPs, bytes) per step in one
        # product. Each column has at most two terms, each exact (x 1, x -1) or the one
        # rounding the element-wise form makes (x scale); the rest are exact zeros. So any
        # summation order a BLAS kernel takes gives the element-wise form's bits:
        # compute, time - compute, FLOPs x scale, bytes x scale. For finite values only
        # (inf x 0 is NaN): `for_model` declines a step model with a non-finite constant.
        w = np.zeros((4, 10))
        w[0, 0] = 1.0
        w[1, 1], w[0, 1] = 1.0, -1.0
        w[2, 4] = w[3, 5] = self._size
        self._one_batch = w

    @classmethod
    def for_model(cls, step_model) -> "DecodePricer | None":
        """A pricer for this step model, or None where it does not apply or disagrees."""
        try:
            if (step_model.layout.pp != 1 or step_model._experts is not None
                    or step_model.router is not None
                    or step_model._M.shape[1] != NUM_FEATURES):
                return None
            pricer = cls(step_model)
            constants = (pricer._M, pricer._K0, pricer._comm0, pricer._comm1, pricer._ovh,
                         pricer._step_overhead, pricer._scale, pricer._size)
            if not all(np.isfinite(c).all() for c in constants):
                return None  # finite inputs then price finite steps (see __init__)
            from batchlab.core import Batch
            for rows, context in ((1, 1), (7, 300), (64, 2048), (256, 40_000)):
                for m in (1, 2):
                    batch = Batch.decode(np.arange(rows), np.full(rows, context),
                                         num_micro_batches=min(m, rows))
                    want, cost = step_model.cost(batch)
                    got, costs = pricer.price(batch, 1)
                    if not np.allclose([got[0], costs[0, 0], costs[0, 1], costs[0, 4]],
                                       [want, cost.compute, cost.memory, cost.flops],
                                       rtol=_TOLERANCE, atol=0.0):
                        return None
        except (AttributeError, IndexError, TypeError, ValueError):
            return None  # the step model changed shape: use its own path
        return pricer

    def price(self, batch, num_steps: int):
        """Durations (num_steps,) and cost rows (num_steps, 10; `COST_FIELDS` order) of
        steps 1..num_steps of a decode batch (step j: context + (j - 1) tokens per row)."""
        rows = batch.num_seqs
        if num_steps == 1:  # every single decode step: the same context, without arange
            context = np.array([batch.num_context_tokens], dtype=np.int64)
        else:
            context = batch.num_context_tokens + rows * np.arange(num_steps, dtype=np.int64)
        m = max(1, min(int(batch.num_micro_batches), rows))
        return self.price_totals(rows, context, m)

    def price_one(self, batch) -> tuple[float, list]:
        """`price(batch, 1)` as (duration, cost row as a list, padded tokens an int): what
        `CostModelDevice.run` needs for every single decode step. With one micro-batch, the
        per-op arrays are those of `price_totals` without the steps' axis and the rest is
        scalar arithmetic in the same order, so the bits are the same (the simulator's
        records rely on it)."""
        rows = batch.num_seqs
        if rows < 1 or int(batch.num_micro_batches) != 1:
            durations, costs = self.price(batch, 1)
            row = costs[0].tolist()
            row[-1] = 0  # padded tokens: an int
            return float(durations[0]), row
        s = self._scale / 1  # price_totals' scale at one micro-batch
        base = self._base(rows, 1).reshape(4, self._n)
        # x 1.0 changes no bit (see price_totals); the context as a float64, as there
        context = float(batch.num_context_tokens)
        out = base + self._C2 * (context if s == 1.0 else context * s)
        comp_op, mem_op = out[0], out[1]
        bound = comp_op >= mem_op
        np.maximum(comp_op, mem_op, out=mem_op)
        np.multiply(mem_op, bound, out=comp_op)
        # The same reduction along each contiguous row as price_totals'.
        comp, time, flops, nbytes = np.add.reduce(out * self._K0, axis=1).tolist()
        comm = self._comm0 + self._comm1 * rows
        # price_totals' cost columns, each its one rounding (see __init__: _one_batch).
        return ((time + self._ovh + comm) + self._step_overhead,
                [comp, time - comp, comm, self._ovh + self._step_overhead,
                 flops * self._size, nbytes * self._size, 0.0, 0.0, 0.0, 0])

    def _base(self, rows, micro: int) -> np.ndarray:
        """A + B x scaled rows per op, shaped (4 quantities, steps, ops), of every step's
        rows (a Python int: one step; an integer array: one per step; >= 1 each) at
        `micro` micro-batches.

        Read from a table of every row count up to the most seen (per micro-batch count,
        grown by doubling): a slice for an int, one take for an array, instead of a product
        and a sum over every step priced (~2 us a call of ~16). The table's entries are the
        same element-wise products and sums, so the values are the same bits. Other rows (a
        numpy scalar, floats) and huge ones are computed as they come, the same values."""
        whole = type(rows) is int
        listed = not whole and getattr(rows, "ndim", 0) == 1 and rows.dtype.kind in "iu"
        table = self._base_tables.get(micro)
        if table is not None:
            if whole:
                if 0 <= rows < table.shape[1]:
                    return table[:, rows:rows + 1]
            elif listed:
                try:
                    return table.take(rows, axis=1)
                except IndexError:  # rows past the table
                    pass
        s = self._scale / micro
        unscaled = isinstance(s, float) and s == 1.0  # x 1.0 changes no bit: skip it
        most = rows if whole else int(np.maximum.reduce(rows)) if listed and rows.size else -1
        if not 0 <= most < _MOST_TABLE_ROWS:  # huge, or not a table's kind of rows
            scaled = np.asarray(rows if unscaled else rows * s).reshape(1, -1, 1)
            return self._A3 + self._B3 * scaled
        size = min(_MOST_TABLE_ROWS, max(64, 2 * (most + 1)))
        scaled = np.arange(size, dtype=np.int64)
        self._base_tables[micro] = self._A3 + self._B3 * (
            scaled if unscaled else scaled * s).reshape(1, -1, 1)
        return self._base(rows, micro)

    def price_totals(self, rows: np.ndarray, context: np.ndarray, micro):
        """Durations and cost rows of decode steps given by their totals, one entry per
        step: rows (>= 1), context tokens attended after the step (cached + 1 per row) and
        micro-batches (1..rows); rows and micro-batches may be ints, the same for every
        step. Element-wise over steps, so a step is priced the same alone or among others
        (the simulator's records rely on it): (A + B x rows) + C x keys per op, the first
        sum read from a table where micro-batches are an int (`_base`), the same values."""
        k = len(context)
        s = self._scale / micro
        # x 1.0 changes no bit (ints become the same floats in the product): skip it
        unscaled = isinstance(s, float) and s == 1.0
        # Laid out (4 quantities, k steps, n ops): the compute and memory planes the roofline
        # compares are contiguous, and each op's row is still one contiguous reduction.
        if isinstance(micro, int):  # A + B x scaled rows from the table: the same values
            base = self._base(rows, micro)
        else:
            scaled = np.asarray(rows if unscaled else rows * s)
            base = self._A3 + self._B3 * scaled.reshape(1, -1, 1)
        # In place: the same sums as base + C x keys (addition commutes exactly).
        out = self._C3 * (context if unscaled else context * s).reshape(1, k, 1)
        out += base
        comp_op, mem_op = out[0], out[1]
        bound = comp_op >= mem_op
        np.maximum(comp_op, mem_op, out=mem_op)   # row 1 becomes the op's roofline time
        np.multiply(mem_op, bound, out=comp_op)   # row 0 its compute-bound share
        out *= self._K0
        # One reduction along each contiguous row: the same sums whatever k is.
        sums = np.add.reduce(out, axis=2)  # (4, k); = .sum, without its wrapper
        one = isinstance(micro, int) and micro == 1  # x 1 and / 1 change no bit: skip them
        comm = self._comm0 + self._comm1 * (rows if one else rows / micro)
        if one:
            # (see __init__) all but two columns; .dot: the product without matmul's ufunc
            # dispatch (~0.25 us)
            costs = sums.T.dot(self._one_batch)
            costs[:, 2] = comm
            costs[:, 3] = self._ovh + self._step_overhead
            return (sums[1] + self._ovh + comm) + self._step_overhead, costs
        comp, time, flops, nbytes = sums
        costs = np.zeros((k, 10))
        costs[:, 0] = micro * comp
        costs[:, 1] = micro * (time - comp)
        costs[:, 2] = micro * comm
        costs[:, 3] = micro * self._ovh + self._step_overhead
        duration = micro * (time + self._ovh + comm) + self._step_overhead
        scale = self._size * micro
        costs[:, 4] = flops * scale
        costs[:, 5] = nbytes * scale
        return duration, costs
