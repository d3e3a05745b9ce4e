"""KVBlockManager: unit cases and a hypothesis state machine over random operations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from batchlab.core import KVBlockManager


def test_blocks_are_rounded_up_and_freed():
    kv = KVBlockManager(10, block_size=16)
    kv.grow(3, 17)
    assert kv.num_held(3) == 2 and kv.num_free_blocks == 8
    kv.grow(3, 20)                       # still two blocks
    assert kv.num_free_blocks == 8
    kv.grow(np.array([1, 2]), np.array([16, 48]))
    assert kv.num_held(np.array([1, 2])).tolist() == [1, 3]
    assert kv.usage == pytest.approx(0.6)
    kv.free([1, 3, 99])                  # unknown ids are fine
    assert kv.num_free_blocks == 7
    kv.check_valid()


def test_out_of_blocks_raises_and_changes_nothing():
    kv = KVBlockManager(2, block_size=4)
    assert not kv.can_grow([0, 1], [8, 1])
    with pytest.raises(MemoryError, match="need 3 more, 2 free"):
        kv.grow(np.array([0, 1]), np.array([8, 1]))
    assert kv.num_free_blocks == 2
    kv.check_valid()


def test_grow_if_fits_on_a_new_id_past_the_array():
    kv = KVBlockManager(10, block_size=4)
    assert kv.grow_if_fits(500, 8) and kv.num_held(500) == 2 and kv.num_free_blocks == 8
    assert not kv.grow_if_fits(501, 40)  # 10 blocks, 8 free: nothing changes
    assert kv.num_held(501) == 0 and kv.num_free_blocks == 8
    with pytest.raises(ValueError, match="non-negative"):
        kv.grow_if_fits(-1, 4)
    kv.check_valid()


def test_fit_is_trim_then_grow_of_rows_holding_a_reservation():
    """fit gives back blocks reserved ahead and grows in one pass: the trim to what the rows
    computed and the grow to their next tokens, raising where the grow would."""
    one, other = KVBlockManager(12, block_size=4), KVBlockManager(12, block_size=4)
    ids, computed = np.array([0, 1, 2]), np.array([3, 8, 13])
    for kv in (one, other):
        kv.grow(ids, computed)
        assert kv.reserve_steps(ids, computed, 6) == 6  # 9, 14, 19 tokens: all 12 blocks
    one.trim(ids, computed + 2)
    one.grow(ids, computed + np.array([3, 1, 0]))
    other.fit(ids, computed + np.array([3, 1, 0]))
    assert other.num_free_blocks == one.num_free_blocks == 3
    assert np.array_equal(other.num_held(ids), one.num_held(ids))
    with pytest.raises(MemoryError):  # 11 + 1 + 1 blocks: 4 more than the 9 held, 3 free
        other.fit(ids, np.array([44, 1, 1]))
    assert other.num_free_blocks == 3 and other.num_held(ids).tolist() == [2, 3, 4]
    other.fit(ids, np.array([40, 1, 1]))  # 3 more: fits, the others give blocks back
    assert other.num_free_blocks == 0 and other.num_held(ids).tolist() == [10, 1, 1]
    other.check_valid()


@pytest.mark.parametrize("block_size", [1, 3, 16])
def test_hot_path_block_count_is_blocks_for(block_size):
    """grow, trim and reserve_steps round up with (n + b - 1) // b on int64 arrays; it must
    agree with blocks_for's -(-n // b) everywhere, negative and boundary counts included."""
    kv = KVBlockManager(10, block_size=block_size)
    n = np.arange(-3 * block_size - 2, 5 * block_size + 3, dtype=np.int64)
    assert np.array_equal(kv._blocks(n), kv.blocks_for(n))
    assert kv._blocks(7) == kv.blocks_for(7) and kv._blocks([5, 6]).tolist() == \
        kv.blocks_for([5, 6]).tolist()  # not an int64 array: blocks_for itself


def test_repeated_id_in_one_call_is_an_error():
    kv = KVBlockManager(10)
    with pytest.raises(ValueError, match="twice"):
        kv.grow(np.array([1, 1]), 16)


class KVMachine(RuleBasedStateMachine):
    """Random grows and frees against a dict model of what each id should hold."""

    def __init__(self):
        super().__init__()
        self.kv = KVBlockManager(40, block_size=8)
        self.model: dict[int, int] = {}

    @rule(rid=st.integers(0, 20), tokens=st.integers(0, 200))
    def grow(self, rid, tokens):
        need = -(-tokens // 8)
        extra = max(need - self.model.get(rid, 0), 0)
        free = 40 - sum(self.model.values())
        assert self.kv.can_grow(rid, tokens) == (extra <= free)
        if extra <= free:
            self.kv.grow(rid, tokens)
            self.model[rid] = max(need, self.model.get(rid, 0))
        else:
            with pytest.raises(MemoryError):
                self.kv.grow(rid, tokens)

    @rule(ids=st.lists(st.integers(0, 20), unique=True, max_size=5), tokens=st.integers(1, 40))
    def grow_many(self, ids, tokens):
        if self.kv.can_grow(np.array(ids, dtype=np.int64), tokens):
            self.kv.grow(np.array(ids, dtype=np.int64), tokens)
            for rid in ids:
                self.model[rid] = max(-(-tokens // 8), self.model.get(rid, 0))

    @rule(rid=st.integers(0, 20), tokens=st.integers(0, 200))
    def grow_if_fits(self, rid, tokens):
        # The one-call admission (can_grow, then grow) agrees with the model and changes
        # nothing when it does not fit.
        need = -(-tokens // 8)
        extra = max(need - self.model.get(rid, 0), 0)
        fits = extra <= 40 - sum(self.model.values())
        assert self.kv.grow_if_fits(rid, tokens) == fits
        if fits:
            self.model[rid] = max(need, self.model.get(rid, 0))

    @rule(ids=st.lists(st.integers(0, 150), unique=True, min_size=1, max_size=5),
          tokens=st.integers(1, 40))
    def grow_unique_new_ids(self, ids, tokens):
        # unique=True (a policy's running set), ids past the held array (64 at first): the
        # array grows when indexing it fails, never wraps around.
        fits = self.kv.can_grow(np.array(ids, dtype=np.int64), tokens)
        if fits:
            self.kv.grow(np.array(ids, dtype=np.int64), np.full(len(ids), tokens), unique=True)
            for rid in ids:
                self.model[rid] = max(-(-tokens // 8), self.model.get(rid, 0))
        else:
            with pytest.raises(MemoryError):
                self.kv.grow(np.array(ids, dtype=np.int64), np.full(len(ids), tokens),
                             unique=True)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def free(self, data):
        rid = data.draw(st.sampled_from(sorted(self.model)))
        self.kv.free(rid)
        del self.model[rid]

    @invariant()
    def matches_model(self):
        self.kv.check_valid()
        assert self.kv.num_free_blocks == 40 - sum(self.model.values())
        for rid, held in self.model.items():
            assert self.kv.num_held(rid) == held


TestKVMachine = KVMachine.TestCase
