"""The pieces multi-step plans rest on: the validator's rules for a multi-step batch, the KV
manager's steps that fit, the request table's booking of steps, a stretch's pricing, the cost
model's decode prices and the plan-ahead gauge. End-to-end runs are in test_multistep_runs.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchlab import AffineDevice, Batch
from batchlab.core import KVBlockManager, PolicyError, RequestTable
from batchlab.core.validate import check_batch
from test_multistep_runs import _COST_MODEL  # the cost-model devices the runs use too


def _table(prompt, generated):
    t = RequestTable.for_requests(prompt, np.full(len(prompt), 1000))
    t.status[:] = 1
    t.generated[:] = generated
    t.cached[:] = np.asarray(prompt) + np.asarray(generated) - 1
    t.home[:] = 0
    return t


def test_validator_names_a_bad_multi_step_batch():
    table, dev = _table([10, 20], [3, 1]), AffineDevice()
    good = Batch.decode([0, 1], [12, 20], num_steps=8)
    check_batch(good, dev, 0, table, "p")
    behind = Batch.decode([0, 1], [11, 20], num_steps=8)  # row 0 would not emit
    table.cached[0] = 11
    with pytest.raises(PolicyError, match="multi-step"):
        check_batch(behind, dev, 0, table, "p")
    table.cached[0] = 12
    prefill = Batch([0, 1], [1, 2], [12, 0], num_steps=2)  # row 1 recomputes
    with pytest.raises(PolicyError, match="multi-step"):
        check_batch(prefill, dev, 0, table, "p")
    small = AffineDevice(kv_capacity_tokens=40)
    with pytest.raises(PolicyError, match="memory"):  # 34 tokens now, 42 at step 5
        check_batch(Batch.decode([0, 1], [12, 20], num_steps=5), small, 0, table, "p")
    check_batch(Batch.decode([0, 1], [12, 20], num_steps=4), small, 0, table, "p")


@given(tokens=st.lists(st.integers(0, 100), min_size=1, max_size=8),
       blocks=st.integers(0, 80), block_size=st.integers(1, 16), steps=st.integers(1, 40))
def test_kv_steps_fit_is_the_most_that_can_grow(tokens, blocks, block_size, steps):
    kv = KVBlockManager(blocks, block_size)
    ids = np.arange(len(tokens))
    tokens = np.array(tokens)
    if not kv.can_grow(ids, tokens):
        return
    kv.grow(ids, tokens)
    k = kv.num_steps_fit(ids, tokens, steps)
    assert 0 <= k <= steps
    assert kv.can_grow(ids, tokens + k)
    assert k == steps or not kv.can_grow(ids, tokens + k + 1)
    free = kv.num_free_blocks
    kv.grow(ids, tokens + k)
    kv.trim(ids, tokens)
    assert kv.num_free_blocks == free
    kv.check_valid()


def test_probes_back_off_while_requests_wait():
    """Below PAYS_OFF the policy plans ahead one time in PROBE_EVERY; while requests wait
    (a stretch then ends at the first finish), each multi-step batch that ran one step
    doubles the wait, up to PROBE_MOST; one that ran on brings it back to PROBE_EVERY."""
    from batchlab.policies.plan_ahead import PROBE_EVERY, PROBE_MOST, PlanAheadGauge
    gauge = PlanAheadGauge()
    for _ in range(20):
        gauge.book(False)  # the average falls well below PAYS_OFF

    def probes(plans, waiting):
        return sum(gauge.worth(waiting) for _ in range(plans))

    assert probes(32 * PROBE_EVERY, False) == 32  # nobody waits: the back-off does not apply
    assert probes(2 * PROBE_MOST, True) == 2  # somebody waits
    gauge.book(True)
    assert probes(8 * PROBE_EVERY, True) == 8


def test_table_registers_one_at_a_time_in_amortised_constant_time():
    table = RequestTable()
    for i in range(1000):
        assert table.register([i + 1], [2]).tolist() == [i]
    assert table.size == 1000 and len(table.prompt) < 2100
    assert table.prompt[:1000].tolist() == list(range(1, 1001))
    assert np.isnan(table.arrival[:1000]).all() and (table.home[:1000] == -1).all()
    assert table.records().size == 1000


def test_validator_takes_a_multi_step_batch_led_by_a_completing_prefill():
    table, dev = _table([10, 20], [3, 0]), AffineDevice()
    table.cached[1] = 0  # request 1 has its whole prompt to feed
    check_batch(Batch([0, 1], [1, 20], [12, 0], num_steps=4, drop_finished=True),
                dev, 0, table, "p")
    with pytest.raises(PolicyError, match="multi-step"):  # a chunk short of the prompt
        check_batch(Batch([0, 1], [1, 19], [12, 0], num_steps=4), dev, 0, table, "p")
    small = AffineDevice(kv_capacity_tokens=40)  # 33 tokens after step 1, 39 after step 4
    check_batch(Batch([0, 1], [1, 20], [12, 0], num_steps=4), small, 0, table, "p")
    with pytest.raises(PolicyError, match="memory"):
        check_batch(Batch([0, 1], [1, 20], [12, 0], num_steps=5), small, 0, table, "p")


def test_cost_model_prices_a_step_alike_alone_or_among_others():
    """The decode fast path is element-wise over steps: a step's price does not depend on
    the steps priced with it (the simulator's records rely on it)."""
    device = _COST_MODEL[0]
    rows = np.array([7, 7, 5, 5, 2, 1])
    context = np.array([900, 907, 600, 605, 300, 151])
    together = device.price_decodes(rows, context, 1)
    for i in range(rows.size):
        alone = device.price_decodes(rows[i:i + 1], context[i:i + 1], 1)
        assert np.array_equal(alone[0], together[0][i:i + 1])
        assert np.array_equal(alone[1], together[1][i:i + 1])
        batch = Batch.decode(np.arange(rows[i]), np.r_[np.zeros(rows[i] - 1, int),
                                                        context[i] - rows[i]])
        assert device.run(batch).duration == together[0][i]


@given(tokens=st.lists(st.integers(0, 100), min_size=1, max_size=8),
       blocks=st.integers(0, 80), block_size=st.integers(1, 16), steps=st.integers(0, 40))
def test_kv_reserve_steps_is_steps_fit_then_grow(tokens, blocks, block_size, steps):
    ids, tokens = np.arange(len(tokens)), np.array(tokens)
    one, other = KVBlockManager(blocks, block_size), KVBlockManager(blocks, block_size)
    if not one.can_grow(ids, tokens):
        return
    for kv in (one, other):
        kv.grow(ids, tokens)
    k = one.num_steps_fit(ids, tokens, steps)
    one.grow(ids, tokens + k)
    assert other.reserve_steps(ids, tokens, steps) == k
    assert other.num_free_blocks == one.num_free_blocks
    assert np.array_equal(other.num_held(ids), one.num_held(ids))
    other.check_valid()


def test_validator_names_the_row_and_the_step_it_means():
    table, dev = _table([10, 20], [3, 1]), AffineDevice()
    table.cached[0] = 11
    with pytest.raises(PolicyError, match="request 0 feeds up to token 12 of the 13"):
        check_batch(Batch([0, 1], [1, 1], [11, 20], num_steps=8), dev, 0, table, "p")
    table.cached[0] = 12
    with pytest.raises(PolicyError, match="drop_finished=.* is not true or false"):
        check_batch(Batch.decode([0, 1], [12, 20], num_steps=8, drop_finished=np.ones(2)),
                    dev, 0, table, "p")
    small = AffineDevice(kv_capacity_tokens=40)
    with pytest.raises(PolicyError, match=r"at its last step \(num_steps=5\)"):
        check_batch(Batch.decode([0, 1], [12, 20], num_steps=5), small, 0, table, "p")


@given(rows=st.lists(st.tuples(st.integers(1, 50), st.integers(0, 5), st.integers(0, 3),
                               st.integers(0, 60), st.integers(1, 8)),
                     min_size=1, max_size=10))
def test_table_complete_books_each_row_as_a_reference_loop_does(rows):
    """RequestTable.complete takes a shortcut when every row emits (most steps); with a row
    that does not (a prompt chunk short of the end, a recompute catching up) it masks. Both
    against a plain loop over the rows: tokens, first/last token, max TBT, gaps, finishes."""
    prompt = [p for p, _, _, _, _ in rows]
    table = RequestTable.for_requests(prompt, [g + o for _, g, _, _, o in rows])
    new, cached = [], []
    for i, (p, g, behind, extra, _) in enumerate(rows):
        table.status[i], table.generated[i], table.home[i] = 1, g, 0
        known = p + g  # prompt + generated: a row may feed up to here, or stop short
        table.cached[i] = c = max(0, known - 1 - extra) if g else max(0, p - 1 - extra)
        table.last_token[i] = 0.5 + i if g else np.nan
        n = max(1, known - c - behind)
        new.append(n)
        cached.append(c)
    before = {f: getattr(table, f).copy() for f in ("generated", "last_token", "max_tbt")}
    emitted, finished, generated = table.complete(Batch(np.arange(len(rows)), new, cached), 9.0)
    gaps = []
    for i, (p, g, _, _, o) in enumerate(rows):
        emits = cached[i] + new[i] - p + 1 > g
        assert emitted[i] == emits and generated[i] == g + emits
        assert table.generated[i] == g + emits and finished[i] == (g + emits >= g + o)
        if emits and g:
            gaps.append(9.0 - before["last_token"][i])
            assert table.max_tbt[i] == gaps[-1] and table.last_token[i] == 9.0
        elif emits:
            assert table.first_token[i] == 9.0 and np.isnan(table.max_tbt[i])
        else:
            assert table.last_token[i] == before["last_token"][i] or g == 0
    assert table.itl.num_gaps == len(gaps) and table.itl.total == sum(gaps)


@given(left=st.lists(st.integers(1, 12), min_size=1, max_size=10), j=st.integers(2, 12))
def test_table_complete_steps_counts_step_rows_as_the_stretch_does(left, j):
    """complete_steps takes the rows in each step from the simulator's stretch where it has
    counted them (a drop_finished batch whose rows leave), else counts them itself: the same
    gaps and records either way."""
    from batchlab.engines.stretch import Stretch
    n = len(left)
    left = np.array(left, dtype=np.int64)
    batch = Batch.decode(np.arange(n), np.full(n, 10), num_steps=64, drop_finished=True)
    stretch = Stretch(batch, AffineDevice(fixed=1.0), 0.0, left)
    stretch.settle(np.inf)
    j = min(j, stretch.num_run)
    row_steps, ends = np.minimum(left, j), np.cumsum(np.linspace(1.0, 2.0, j))
    if not (row_steps < j).any():
        return  # every row ran every step: no counts taken
    stretch.num_run = j
    counted = stretch.step_totals()[0]
    tables = [_table([10] * n, [1] * n) for _ in range(2)]
    for t in tables:
        t.output[:n] = 1 + left
        t.last_token[:n] = 0.5
    a = tables[0].complete_steps(batch, ends, row_steps)
    b = tables[1].complete_steps(batch, ends, row_steps, counted)
    assert all((x == y).all() for x, y in zip(a, b))
    assert tables[0].itl.num_gaps == tables[1].itl.num_gaps
    assert tables[0].itl.total == tables[1].itl.total
    assert (tables[0].itl.counts == tables[1].itl.counts).all()
    ra, rb = tables[0].records(), tables[1].records()
    assert all(np.array_equal(ra[f], rb[f], equal_nan=ra[f].dtype.kind == "f")
               for f in ra.dtype.names)


@pytest.mark.parametrize("hint", [None, 1e-9, 1e-3, 1.0, 1e300])
def test_a_stretch_prices_the_same_steps_whatever_its_step_hint(hint):
    """The hint only says how many steps to price from totals at first (too few: the rest
    are priced next); the steps run, their ends and costs are the same bits either way."""
    from batchlab.engines.stretch import Stretch
    device = _COST_MODEL[0]
    left = np.array([3, 40, 9, 64, 25], dtype=np.int64)
    batch = Batch(np.arange(5), [1, 1, 1, 1, 300], [100, 2000, 50, 700, 0], num_steps=64,
                  drop_finished=True)
    plain = Stretch(batch, device, 1.0, left)
    plain.settle(np.inf)
    for horizon in (1.05, 1.3, np.inf):
        hinted = Stretch(batch, device, 1.0, left, step_hint=hint)
        want = Stretch(batch, device, 1.0, left)
        assert hinted.settle(horizon) == want.settle(horizon)
        for a, b in ((hinted.ends, want.ends), (hinted.durations, want.durations),
                     (hinted.costs, want.costs)):
            assert np.array_equal(np.asarray(a), np.asarray(b))
        assert np.array_equal(np.asarray(want.ends), plain.ends[:want.num_run])
