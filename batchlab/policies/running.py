"""`RunningRows`: one device's running sequences for continuous batching, as numpy columns.

Kept sorted best rank first, so that a step is a handful of whole-array operations; admitted
rows are written into room kept beyond the live rows (`append`) rather than concatenated. The
rank itself (the policy's sort key and arrival rank) is not a column: the policy keeps it per
request and reads it only where admitted rows may break the order (`merged_order`). What a
step feeds each row under a token budget is `RunningRows.feed_within`.
"""

from __future__ import annotations

import bisect

import attrs
import numpy as np

from ..core.fastnp import ONE, count_nonzero

_EMPTY = np.zeros(0, dtype=np.int64)


@attrs.define
class RunningRows:
    """One device's running sequences, sorted best rank first (continuous batching's state;
    the ranks live in the policy, which keeps the order).

    A column is either an array of its own or, after `append`, a view of the first rows of
    a buffer with room beyond them: admitting writes into the room instead of concatenating
    a fresh array per column (about 2 us a step that admits). Any other change may bind a
    column to a fresh array (`take`, update's whole columns); `append` copies such a column
    into its buffer first. Nothing but this object keeps a column across calls (Batch copies
    what it is given)."""

    ids: np.ndarray = _EMPTY
    computed: np.ndarray = _EMPTY   # tokens in the KV cache
    known: np.ndarray = _EMPTY      # prompt + generated so far: what could be fed
    scheduled: np.ndarray | None = None  # positions of the rows of the batch in flight
    _buffers: tuple | None = attrs.field(default=None, init=False, repr=False)

    def feed_within(self, budget: int,
                    chunked_prefill: bool) -> tuple[np.ndarray, int, np.ndarray]:
        """Tokens each row gets within the step's token budget, their sum, and each row's
        tokens after the step: decodes first (Sarathi's stall-free order: a long prefill never
        holds up a running decode), then prefills and recomputes in rank order. Unchunked, a
        prefill runs whole or waits; the first one runs even if it alone exceeds the budget,
        or it could never run."""
        need = self.known - self.computed
        decode = need == ONE
        if need.size <= budget and count_nonzero(decode) == need.size:
            # every row a decode within budget (most steps): one token each, need itself (a
            # fresh array of ones); the sum without a reduction; each row then holds what it
            # knows, so known itself is the tokens after the step, without an addition
            return need, need.size, self.known
        take = (decode & (np.cumsum(decode) <= budget)).astype(np.int64)
        left = budget - int(count_nonzero(take))
        prefill = np.where(decode, 0, need)
        before = np.cumsum(prefill) - prefill
        if chunked_prefill:
            take = take + np.minimum(prefill, np.maximum(left - before, 0))
        else:
            whole = (prefill > 0) & (before + prefill <= left)
            first = np.flatnonzero(prefill)
            if first.size and not whole.any():
                whole[first[0]] = True
            take = np.where(whole, prefill, take)
        return take, int(np.add.reduce(take)), self.computed + take

    def take(self, keep: np.ndarray) -> None:
        self.ids, self.computed, self.known = self.ids[keep], self.computed[keep], self.known[keep]

    def append(self, ids: list, known: list) -> None:
        """Add rows (nothing computed yet) after the others."""
        n = self.ids.size
        m = n + len(ids)
        buffers = self._buffers
        if buffers is None or buffers[0].size < m:
            size = max(2 * m, 64)  # doubling: a buffer is outgrown a few times a run
            buffers = self._buffers = (
                np.empty(size, np.int64), np.empty(size, np.int64), np.empty(size, np.int64))
        b_ids, b_computed, b_known = buffers
        # A column that is no longer the view append left (rebound since: a take, update's
        # whole columns) is copied into its buffer first. Written out, not looped: this runs
        # at every step that admits.
        if self.ids.base is not b_ids:
            b_ids[:n] = self.ids
        if self.computed.base is not b_computed:
            b_computed[:n] = self.computed
        if self.known.base is not b_known:
            b_known[:n] = self.known
        if m == n + 1:  # one admitted (most steps that admit): items, cheaper than slices
            b_ids[n], b_computed[n], b_known[n] = ids[0], 0, known[0]
        else:
            b_ids[n:m], b_computed[n:m], b_known[n:m] = ids, 0, known
        self.ids, self.computed, self.known = b_ids[:m], b_computed[:m], b_known[:m]


def merged_order(ids: np.ndarray, num_before: int, key_of: dict) -> np.ndarray:
    """The order that sorts rows `ids` by their `key_of[id]` (the policy's entries: sort key,
    rank, ...) where both parts are sorted already, the running rows before num_before and
    the admitted ones after: each admitted row goes where a binary search of the running
    rows puts it. Ranks are distinct, so this is the one sorted order (the same as a lexsort
    of every row)."""
    older = ids[:num_before].tolist()
    admitted = [key_of[rid] for rid in ids[num_before:].tolist()]
    where = [bisect.bisect_left(older, entry, key=key_of.__getitem__) for entry in admitted]
    # Admitted row j lands at where[j] + j (where is non-decreasing: they are sorted).
    moved = np.zeros(ids.size, dtype=bool)
    moved[np.add(where, np.arange(len(where)))] = True
    order = np.empty(ids.size, dtype=np.int64)
    order[moved] = np.arange(num_before, ids.size)
    order[~moved] = np.arange(num_before)
    return order
