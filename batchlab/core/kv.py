"""`KVBlockManager`: block-granular KV-cache accounting that policies share.

Policy apart from mechanism: every policy that manages memory asks this helper instead of
counting blocks itself. Memory is split into fixed-size blocks (vLLM's paged attention uses 16
tokens); a sequence holding T tokens holds ceil(T / block_size) blocks. Operations accept a
single id or an array of ids, so a policy can grow a whole decode batch in one call.
"""

from __future__ import annotations

import attrs
import numpy as np

from .fastnp import ZERO, constant, int_sum


@attrs.define
class KVBlockManager:
    """Blocks held per request id, and how many are free.

    num_blocks: total blocks on the device (capacity_tokens // block_size).
    block_size: tokens per block.
    """

    num_blocks: int
    block_size: int = 16
    _held: np.ndarray = attrs.field(init=False)
    num_free_blocks: int = attrs.field(init=False)
    # (block_size, block_size - 1 as an int64 0-d array (fastnp), the division by block_size
    # as a ufunc and its operand) for `_blocks`
    _block_arrays: tuple = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self):
        if self.block_size < 1:
            raise ValueError(f"KVBlockManager.block_size must be >= 1, got {self.block_size}")
        if self.num_blocks < 0:
            raise ValueError(f"KVBlockManager.num_blocks must be >= 0, got {self.num_blocks}")
        self._held = np.zeros(64, dtype=np.int64)
        self._block_arrays = self._make_block_arrays()
        self.num_free_blocks = int(self.num_blocks)

    @classmethod
    def for_capacity(cls, capacity_tokens: int, block_size: int = 16) -> "KVBlockManager":
        return cls(int(capacity_tokens) // block_size, block_size)

    # -- queries (no side effects) ------------------------------------------------------
    def blocks_for(self, num_tokens):
        """Blocks needed to hold num_tokens tokens (int or array)."""
        return -(-np.asarray(num_tokens, dtype=np.int64) // self.block_size)

    def num_held(self, ids):
        """Blocks held by a request id (or array of ids); 0 for unknown ids."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim == 1 and ids.size and ids.max() < len(self._held):
            return self._held[ids]  # every id known (the usual case): a copy, no masks
        out = np.zeros(ids.shape, dtype=np.int64)
        known = ids < len(self._held)
        out[known] = self._held[ids[known]]
        return out if out.ndim else int(out)

    def num_extra_blocks(self, ids, num_tokens) -> int:
        """Blocks that `grow(ids, num_tokens)` would take from the free pool."""
        need = self.blocks_for(num_tokens) - self.num_held(ids)
        return int(np.maximum(need, 0).sum())

    def can_grow(self, ids, num_tokens) -> bool:
        """Whether every id can hold num_tokens tokens (each) without running out of blocks."""
        if isinstance(ids, (int, np.integer)) and isinstance(num_tokens, (int, np.integer)):
            rid = int(ids)  # the common scalar case (an admission), without arrays
            held = int(self._held[rid]) if 0 <= rid < len(self._held) else 0
            need = -(-int(num_tokens) // self.block_size) - held
            return need <= self.num_free_blocks
        return self.num_extra_blocks(ids, num_tokens) <= self.num_free_blocks

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= self.num_free_blocks

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def usage(self) -> float:
        """Fraction of blocks in use (0 when the device has no blocks)."""
        return self.num_used_blocks / self.num_blocks if self.num_blocks else 0.0

    # -- changes ------------------------------------------------------------------------
    def grow(self, ids, num_tokens, *, unique: bool = False) -> None:
        """Make each id hold enough blocks for num_tokens tokens; never shrinks.

        `ids` is one id or an array of distinct ids. Raises MemoryError (nothing changed) if
        the free blocks do not suffice: ask `can_grow` first and preempt when it says no.
        unique: the caller guarantees distinct, non-negative ids (a policy's own running
        set), which skips their check on a hot path.
        """
        if isinstance(ids, (int, np.integer)):  # the common scalar case, without arrays
            rid, need, extra = self._one(ids, num_tokens)
            if extra > 0:
                self._take(extra)
                self._held[rid] = need
            return
        ids = ids if unique else self._distinct(ids)
        if ids.size == 0:
            return
        held = self._held_by(ids)
        want = np.maximum(self._blocks(num_tokens), held)
        self._take(int_sum(want - held))
        self._held[ids] = want

    def fit(self, ids: np.ndarray, num_tokens: np.ndarray) -> None:
        """Make each of distinct, non-negative ids (a policy's own running set) hold exactly
        the blocks num_tokens tokens need: `trim` then `grow` in one pass, for a caller whose
        rows may still hold blocks reserved ahead (`reserve_steps`) that they did not use.
        Raises MemoryError (nothing changed) if the growth exceeds the free blocks and what
        the trim gives back."""
        if ids.size == 0:
            return
        held = self._held_by(ids)
        want = self._blocks(num_tokens)
        self._take(int_sum(want - held))  # < 0: blocks given back
        self._held[ids] = want

    def grow_if_fits(self, rid: int, num_tokens: int) -> bool:
        """`grow(rid, num_tokens)` for one id if `can_grow` says yes, in one call; returns
        whether it grew (nothing changes when it does not fit). A policy admitting a request
        asks both for every admission."""
        rid, need, extra = self._one(rid, num_tokens)
        if extra > self.num_free_blocks:
            return False
        if extra > 0:
            self.num_free_blocks -= extra
            self._held[rid] = need
        return True

    def num_steps_fit(self, ids, num_tokens, max_steps: int) -> int:
        """The most steps k <= max_steps (at least 0) for which every id can grow by k tokens
        from num_tokens without running out of blocks: how far a decode batch may run ahead
        on the memory it can reserve now (multi-step plans)."""
        ids = np.asarray(ids, dtype=np.int64)
        tokens = np.asarray(num_tokens, dtype=np.int64)
        held = self.num_held(ids)
        b = self.block_size
        # Row i needs its j-th block more (j >= 1) from k = (held + j - 1) * b - tokens + 1
        # on; need(k) counts the thresholds <= k, so the most k with need(k) <= free lies
        # just below the (free + 1)-th smallest threshold.
        most = int((-(-(tokens + max_steps) // b) - held).max()) if ids.size else 0
        if most <= 0 or most * ids.size <= self.num_free_blocks:
            return max_steps  # every block a row could want fits
        first = held * b - tokens + 1
        thresholds = (first[:, None] + b * np.arange(most)).ravel()
        free = self.num_free_blocks
        kth = int(np.partition(thresholds, free)[free])
        return max(0, min(max_steps, kth - 1))

    def reserve_steps(self, ids: np.ndarray, num_tokens: np.ndarray, max_steps: int) -> int:
        """Grow distinct ids (a policy's own running set) by as many steps k <= max_steps as
        fit, from num_tokens tokens each (`num_steps_fit`), and return k: the reservation of
        a decode batch planned k steps ahead, in one pass over the blocks held."""
        if ids.size == 0:
            return max_steps
        held = self._held_by(ids)
        b = self.block_size
        # Blocks each row holds after k steps, and the growth: what the table takes.
        grown = np.maximum(self._blocks(num_tokens, max_steps), held)
        need = int_sum(grown - held)
        k = max_steps
        if need > self.num_free_blocks:  # the (free + 1)-th block threshold: num_steps_fit
            most = int((grown - held).max())
            first = held * b - num_tokens + 1
            thresholds = (first[:, None] + b * np.arange(most)).ravel()
            free = self.num_free_blocks
            k = max(0, min(max_steps, int(np.partition(thresholds, free)[free]) - 1))
            if k == 0:
                return 0
            grown = np.maximum(self._blocks(num_tokens, k), held)
            need = int_sum(grown - held)
        if need:
            self._held[ids] = grown
            self.num_free_blocks -= need
        return k

    def trim(self, ids, num_tokens, *, unique: bool = False) -> None:
        """Give back blocks beyond what num_tokens tokens need (each id): the unused part of
        a reservation for steps that did not run. Never grows. unique: as in `grow`."""
        ids = ids if unique else self._distinct(ids)
        if ids.size == 0:
            return
        held = self._held[ids]
        keep = np.minimum(self._blocks(num_tokens), held)
        self.num_free_blocks += int_sum(held - keep)
        self._held[ids] = keep

    def free(self, ids, *, unique: bool = False) -> None:
        """Release every block the ids hold (unknown ids are fine). unique: as in `grow`."""
        ids = ids if unique else self._distinct(ids)
        try:  # every id known (the usual case): no mask
            held = self._held[ids]
        except IndexError:  # ids past the array hold nothing
            ids = ids[ids < len(self._held)]
            held = self._held[ids]
        self.num_free_blocks += int_sum(held)
        self._held[ids] = ZERO

    def _one(self, rid, num_tokens) -> tuple[int, int, int]:
        """(id, blocks it needs for num_tokens, blocks beyond those it holds) of one id, the
        table grown to hold it."""
        rid = int(rid)
        if rid < 0:
            raise ValueError(f"request ids must be non-negative, got {rid}")
        if rid >= len(self._held):
            self._ensure_size(rid + 1)
        need = -(-int(num_tokens) // self.block_size)
        return rid, need, need - self._held.item(rid)

    def _blocks(self, num_tokens, ahead: int = 0):
        """`blocks_for` on the hot paths: ceil(n / b) as (n + b - 1) // b, two array
        operations instead of three (the same for every integer), for an int64 array as
        it is. ahead: tokens more per row (steps reserved ahead), folded into the b - 1."""
        if type(num_tokens) is not np.ndarray or num_tokens.dtype != np.int64:
            return self.blocks_for(np.asarray(num_tokens, dtype=np.int64) + ahead)
        b, b_less_one, divide, by = self._block_arrays
        if b != self.block_size:  # reassigned since (nothing does): make them again
            b, b_less_one, divide, by = self._block_arrays = self._make_block_arrays()
        return divide(num_tokens + (ahead + b - 1 if ahead else b_less_one), by)

    def _make_block_arrays(self) -> tuple:
        b = int(self.block_size)
        if b & (b - 1) == 0:  # a power of two (16, the usual): a shift floors as // does, faster
            return b, constant(b - 1, np.int64), np.right_shift, constant(b.bit_length() - 1,
                                                                          np.int64)
        return b, constant(b - 1, np.int64), np.floor_divide, constant(b, np.int64)

    def _held_by(self, ids: np.ndarray) -> np.ndarray:
        """Blocks held by distinct, non-negative ids, the table grown to hold them (an id one
        past its end raises and none wraps around, so max() is taken only for a new id)."""
        try:
            return self._held[ids]
        except IndexError:
            self._ensure_size(int(ids.max()) + 1)
            return self._held[ids]

    def _take(self, extra: int) -> None:
        if extra > self.num_free_blocks:
            raise MemoryError(f"KV cache out of blocks: need {extra} more, "
                              f"{self.num_free_blocks} free of {self.num_blocks}")
        self.num_free_blocks -= extra

    @staticmethod
    def _distinct(ids) -> np.ndarray:
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        if ids.size > 1:
            ordered = np.sort(ids)
            if (ordered[1:] == ordered[:-1]).any():
                raise ValueError("KVBlockManager: an id appears twice in one call")
        if ids.size and ids.min() < 0:
            raise ValueError("request ids must be non-negative")
        return ids

    def check_valid(self) -> None:
        """Raise AssertionError if the accounting is inconsistent."""
        assert (self._held >= 0).all(), "a request holds a negative number of blocks"
        assert 0 <= self.num_free_blocks <= self.num_blocks, (
            f"free blocks {self.num_free_blocks} outside [0, {self.num_blocks}]"
        )
        assert int(self._held.sum()) + self.num_free_blocks == self.num_blocks, (
            f"held {int(self._held.sum())} + free {self.num_free_blocks} != "
            f"total {self.num_blocks}"
        )

    def _ensure_size(self, n: int) -> None:
        if n > len(self._held):
            grown = np.zeros(max(n, 2 * len(self._held)), dtype=np.int64)
            grown[: len(self._held)] = self._held
            self._held = grown
