"""The cost model's decode fast path: k steps priced at once, exactly as k single steps."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab import Batch
from batchlab.core.step import cost_row
from batchlab.costmodel import make_devices

DEVICES = {
    "llama-3-8b on 1 x H100": make_devices("llama-3-8b", "h100", 1)[0],
    "llama-3-70b on 4 x A100 (tp4)": make_devices("llama-3-70b", "a100-80gb", 4)[0],
}
MOE = make_devices("mixtral-8x7b", "h100", 2)[0]
PIPELINE = make_devices("llama-3-8b", "h100", 2, pp=2)[0]


def test_fast_path_is_on_for_dense_one_stage_models_only():
    assert all(d._decode is not None for d in DEVICES.values())
    assert MOE._decode is None and PIPELINE._decode is None
    batch = Batch.decode([0, 1], [10, 20], num_steps=3)
    assert MOE.run_steps(batch, 3) is None and PIPELINE.run_steps(batch, 3) is None


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(DEVICES)),
       cached=st.lists(st.integers(0, 30_000), min_size=1, max_size=300),
       micro=st.integers(1, 4), steps=st.integers(1, 70))
def test_k_steps_equal_k_single_steps_and_the_step_model(name, cached, micro, steps):
    device = DEVICES[name]
    n = len(cached)
    batch = Batch.decode(np.arange(n), cached, num_micro_batches=min(micro, n))
    durations, costs = device.run_steps(batch, steps)
    for j in (0, steps // 2, steps - 1):
        step = Batch.decode(np.arange(n), np.array(cached) + j,
                            num_micro_batches=min(micro, n))
        single = device.run(step)
        assert durations[j] == single.duration  # exactly: the records depend on it
        assert tuple(costs[j]) == cost_row(single.cost)
        want, cost = device.step_model.cost(step)  # the general path, to rounding
        assert single.duration == pytest.approx(want, rel=1e-9)
        for field in ("compute", "memory", "communication", "overhead", "flops", "bytes"):
            assert getattr(single.cost, field) == pytest.approx(getattr(cost, field),
                                                                rel=1e-9, abs=1e-15)


def test_a_changed_step_model_turns_the_fast_path_off():
    """If the step model stops agreeing with the pricer, the device declines the fast path
    rather than price decodes differently from the step model."""
    device = DEVICES["llama-3-8b on 1 x H100"]
    sm = device.step_model
    changed = attrs.evolve(sm, efficiency=attrs.evolve(sm.efficiency,
                                                       step_overhead=sm.efficiency.step_overhead))
    from batchlab.costmodel.decode import DecodePricer
    assert DecodePricer.for_model(changed) is not None

    class Skewed:  # a step model whose decode costs are not what the op table says
        def __getattr__(self, name):
            return getattr(sm, name)

        def cost(self, batch):
            duration, cost = sm.cost(batch)
            return duration * 1.01, cost
    assert DecodePricer.for_model(Skewed()) is None


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(DEVICES)),
       rows=st.lists(st.integers(1, 300), min_size=1, max_size=40),
       context=st.integers(0, 10**6), micro=st.integers(1, 4))
def test_steps_priced_by_totals_equal_each_step_alone(name, rows, context, micro):
    """A stretch whose rows leave prices its steps with per-step rows (arrays): each step
    exactly as priced alone with int rows (the cached path), micro-batches capped at the
    rows as the stretch caps them."""
    pricer = DEVICES[name]._decode
    rows = np.sort(np.array(rows, dtype=np.int64))[::-1].copy()
    ctx = context + np.cumsum(rows)
    m = micro if micro == 1 else np.minimum(rows, micro)
    durations, costs = pricer.price_totals(rows, ctx, m)
    for i in range(rows.size):
        mi = 1 if micro == 1 else int(m[i])
        d, c = pricer.price_totals(int(rows[i]), ctx[i:i + 1], mi)
        assert durations[i] == d[0] and (costs[i] == c[0]).all()


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(DEVICES)),
       rows=st.lists(st.integers(1, 300), min_size=1, max_size=40),
       context=st.integers(0, 10**6), same_rows=st.booleans())
def test_one_micro_batch_costs_by_product_equal_the_element_wise_form(name, rows, context,
                                                                     same_rows):
    """One micro-batch builds its cost columns in one matrix product; a micro-batch count
    that is not a Python int takes the element-wise form (x 1 and / 1 change no bit): the
    same bytes, whatever the number of steps."""
    pricer = DEVICES[name]._decode
    rows = np.sort(np.array(rows, dtype=np.int64))[::-1].copy()
    ctx = context + np.cumsum(rows)
    if same_rows:  # every step the same rows: an int (the cached path)
        rows = int(rows[0])
    fast = pricer.price_totals(rows, ctx, 1)
    general = pricer.price_totals(rows, ctx, np.int64(1))
    assert fast[0].tobytes() == general[0].tobytes()
    assert fast[1].tobytes() == general[1].tobytes()


def test_a_step_model_with_a_non_finite_constant_keeps_its_own_path():
    """The pricer's one-product cost columns equal the element-wise form for finite values
    only (inf x 0 is NaN): a step model with an infinite op constant is not given one."""
    from batchlab.costmodel.decode import DecodePricer
    sm = DEVICES["llama-3-8b on 1 x H100"].step_model
    M = sm._M.copy()
    M[-1, 0] = np.inf  # the last op's bytes: infinite, while its durations stay finite

    class Infinite:
        _M = M

        def __getattr__(self, name):
            return getattr(sm, name)

    assert DecodePricer.for_model(sm) is not None
    assert DecodePricer.for_model(Infinite()) is None


@pytest.mark.parametrize("rows", [np.int64(10), np.array(10), np.full(4, 10),
                                  np.full(4, 10.0), np.full(4, 10, np.int32)])
def test_price_decodes_takes_rows_of_any_numeric_kind(rows):
    """Rows per step as a numpy scalar, a 0-d array or a float or int32 array price what a
    Python int does: the row tables (ints, int64 arrays) and the direct product agree."""
    dev = make_devices("llama-3-8b", "h100", 1)[0]
    context = np.array([1000, 1010, 1020, 1030])
    want = dev.price_decodes(10, context, 1)
    got = dev.price_decodes(rows, context, 1)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert dev.price_decodes(rows if np.ndim(rows) == 0 else rows[:3], context[:3], 1)[0].shape \
        == (3,)
