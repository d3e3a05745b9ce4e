"""Data-parallel attention: a step waits for the busiest attention group, which holds whole rows.

DeepSeek's production layout runs attention data-parallel (one group per GPU, tp=1) and the
groups meet at every MoE layer, so one row cannot be spread over 144 groups, and a long prompt
lands on one group whole.
"""

from __future__ import annotations

import pytest

from batchlab.core import Batch
from batchlab.costmodel import make_devices

CTX = 4989


@pytest.fixture(scope="module")
def dp16():
    # 16 GPUs, attention data-parallel over 16 groups of one GPU, experts EP16
    return make_devices("deepseek-v3", "h800", 16, tp=1, ep=16)[0]


def _attention(dev, batch):
    return dev.explain(batch)["attention"]


def test_one_row_is_not_spread_over_the_groups(dp16):
    one = _attention(dp16, Batch.decode([0], [CTX]))
    per_group = _attention(dp16, Batch.decode(range(16), [CTX] * 16))
    assert one == pytest.approx(per_group, rel=1e-12)


def test_a_row_past_a_multiple_of_the_groups_costs_a_whole_row_more(dp16):
    long = 100_000  # so that the cache, not the absorbed weights, sets the time
    full = _attention(dp16, Batch.decode(range(32), [long] * 32))   # 2 rows a group
    spill = _attention(dp16, Batch.decode(range(17), [long] * 17))  # one group holds 2
    one_each = _attention(dp16, Batch.decode(range(16), [long] * 16))
    assert spill == pytest.approx(full, rel=1e-12)
    assert spill > one_each * 1.5  # the spilled group reads two rows' latent cache


def test_a_long_prompt_lands_on_one_group_whole(dp16):
    alone = dp16.explain(Batch([0], [16384], [0]))
    mixed = dp16.explain(Batch(range(16), [16384] + [256] * 15, [0] * 16))
    assert mixed["attention"] >= alone["attention"]
    # without whole rows, the long prompt's attention would be split 16 ways
    assert alone["attention"] > 8 * dp16.explain(
        Batch(range(16), [1024] * 16, [0] * 16))["attention"]


def test_a_long_row_among_rows_of_the_other_kind_is_its_groups_whole_work():
    # every group holds one row: the prompt's group does the prompt, not the prompt and a
    # share of the decode rows besides (the larger of each feature once charged 0.746 ms of
    # attention here against 0.489 ms for the prompt alone)
    dev = make_devices("qwen3-30b-a3b", "h100", 8, tp=1, ep=8)[0]
    mixed = dev.explain(Batch(range(8), [9] + [1] * 7, [8000] + [7990] * 7))
    alone = dev.explain(Batch([0], [9], [8000]))
    for op, seconds in alone.items():  # every op of its group, its collectives included
        if op != "routed_experts":  # (the experts serve every group's tokens)
            assert mixed[op] == pytest.approx(seconds, rel=1e-12), op
    # and a group of average rows waits when it holds more than the long row does
    many = Batch(range(40), [9] + [1] * 39, [8000] + [7990] * 39)  # 5 rows a group
    assert dev.explain(many)["attention"] > 3 * alone["attention"]


def test_the_heaviest_row_waits_even_when_another_row_is_longer(dp16):
    # a fresh 4,096-token prompt among decode rows with more context: its group does the
    # prompt whole (the longest row by context alone once stood for the busiest group)
    mixed = dp16.run(Batch(range(16), [4096] + [1] * 15, [0] + [8000] * 15)).duration
    assert mixed >= dp16.run(Batch([0], [4096], [0])).duration
    # and the dispatch after attention waits for the group that sends the most tokens,
    # even where another group's attention takes longer
    both = Batch([0, 1], [2000, 500], [0, 30_000])
    sends, waits = Batch([0], [2000], [0]), Batch([0], [500], [30_000])
    step = dp16.run(both)
    assert step.duration >= max(dp16.run(sends).duration, dp16.run(waits).duration)
    assert step.cost.communication == pytest.approx(dp16.run(sends).cost.communication,
                                                    rel=1e-12)
    assert _attention(dp16, both) == pytest.approx(_attention(dp16, waits), rel=1e-12)


def test_flops_count_the_work_done_not_the_waiting(dp16):
    one = dp16.run(Batch.decode([0], [CTX])).cost.flops
    sixteen = dp16.run(Batch.decode(range(16), [CTX] * 16)).cost.flops
    dense_part = one * 16
    # the routed experts' work does not grow 16x (their weights are shared), the rest does:
    # 16 rows do at most 16x the FLOPs of one, and more than 8x
    assert 8 * one < sixteen <= dense_part * (1 + 1e-9)


def test_without_data_parallel_attention_nothing_changes():
    dev = make_devices("deepseek-v3", "h800", 16, tp=16, ep=16)[0]
    long = 100_000  # so that the cache, not the absorbed weights, sets the time
    a = _attention(dev, Batch.decode([0], [long]))
    b = _attention(dev, Batch.decode(range(16), [long] * 16))
    assert b > 10 * a  # one group: every row adds its own attention
