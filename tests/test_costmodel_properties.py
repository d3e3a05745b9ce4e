"""Property tests of the cost model (hypothesis): monotonicity, MoE routing, pipelines."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab.core import Batch
from batchlab.costmodel import (
    Router, critical_path, expected_experts_touched, get_gpu, make_devices, pipeline_makespan,
    task_graph,
)

# One device per kind of model, built once: dense GQA, MoE with tensor-parallel experts,
# MoE with expert parallelism and MLA, and a two-stage pipeline.
DEVICES = {
    "dense": make_devices("llama-3-8b", "h100", 1)[0],
    "moe-tp": make_devices("mixtral-8x7b", "h100", 2, ep=1)[0],
    "moe-ep": make_devices("qwen3-30b-a3b", "a100-80gb", 4)[0],
    "mla": make_devices("deepseek-v3", "h200", 8)[0],
    "pipeline": make_devices("llama-3-70b", "h100", 4, pp=2, tp=2)[0],
}
MOE_PRESETS = ("mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3")

rows = st.lists(st.tuples(st.integers(1, 600), st.integers(0, 6000)), min_size=1, max_size=24)


def _batch(rows_, micro=1):
    new, cached = zip(*rows_)
    return Batch(np.arange(len(rows_)), new, cached, num_micro_batches=micro)


def _duration(dev, rows_, micro=1):
    return dev.run(_batch(rows_, micro)).duration


def _no_faster(after, before):
    assert after >= before * (1 - 1e-12), f"{after} < {before}"


@settings(max_examples=60)
@given(st.sampled_from(sorted(DEVICES)), rows, st.data())
def test_more_new_tokens_never_make_a_step_faster(kind, rows_, data):
    dev = DEVICES[kind]
    i = data.draw(st.integers(0, len(rows_) - 1))
    extra = data.draw(st.integers(1, 400))
    grown = list(rows_)
    grown[i] = (rows_[i][0] + extra, rows_[i][1])
    _no_faster(_duration(dev, grown), _duration(dev, rows_))


@settings(max_examples=60)
@given(st.sampled_from(sorted(DEVICES)), rows, st.data())
def test_longer_context_never_makes_a_step_faster(kind, rows_, data):
    dev = DEVICES[kind]
    i = data.draw(st.integers(0, len(rows_) - 1))
    extra = data.draw(st.integers(1, 5000))
    grown = list(rows_)
    grown[i] = (rows_[i][0], rows_[i][1] + extra)
    _no_faster(_duration(dev, grown), _duration(dev, rows_))


@settings(max_examples=40)
@given(st.sampled_from(sorted(DEVICES)), rows, st.tuples(st.integers(1, 600), st.integers(0, 6000)))
def test_another_row_never_makes_a_step_faster(kind, rows_, row):
    dev = DEVICES[kind]
    _no_faster(_duration(dev, rows_ + [row]), _duration(dev, rows_))


@settings(max_examples=30)
@given(rows, st.integers(2, 4), st.data())
def test_more_tokens_never_faster_with_micro_batches(rows_, micro, data):
    """Pipelines with micro-batches: the number of micro-batches stays put (rows fixed)."""
    dev = DEVICES["pipeline"]
    i = data.draw(st.integers(0, len(rows_) - 1))
    grown = list(rows_)
    grown[i] = (rows_[i][0] + data.draw(st.integers(1, 300)), rows_[i][1] + 7)
    _no_faster(_duration(dev, grown, micro), _duration(dev, rows_, micro))


@settings(max_examples=25)
@given(st.sampled_from(["llama-3-8b", "mixtral-8x7b", "deepseek-v3"]), rows,
       st.floats(1.0, 4.0), st.sampled_from(["flops", "memory", "links", "all"]))
def test_more_bandwidth_or_flops_never_make_a_step_slower(model, rows_, factor, what):
    gpu = get_gpu("h200")
    scaled = {
        "flops": dict(bf16_flops=gpu.bf16_flops * factor, fp8_flops=gpu.fp8_flops * factor),
        "memory": dict(memory_bandwidth=gpu.memory_bandwidth * factor),
        "links": dict(link_bandwidth=gpu.link_bandwidth * factor,
                      network_bandwidth=gpu.network_bandwidth * factor),
    }
    scaled["all"] = {**scaled["flops"], **scaled["memory"], **scaled["links"]}
    faster = attrs.evolve(gpu, **scaled[what])
    n = 8 if model != "llama-3-8b" else 2
    base = make_devices(model, gpu, n)[0]
    better = make_devices(model, faster, n)[0]
    batch = _batch(rows_)
    assert better.run(batch).duration <= base.run(batch).duration * (1 + 1e-12)


@pytest.mark.parametrize("model", MOE_PRESETS)
@pytest.mark.parametrize("routing,skew", [("expected", 0.0), ("expected", 1.2),
                                          ("sampled", 0.0), ("sampled", 1.2)])
def test_one_decode_touches_exactly_top_k_experts(model, routing, skew):
    dev = make_devices(model, "h200", 8, routing=routing, skew=skew, seed=3)[0]
    k = dev.model.num_experts_per_tok
    for context in (0, 100, 5000):
        cost = dev.run(Batch.decode([0], [context])).cost
        assert cost.experts_touched == pytest.approx(k, abs=1e-9)
        assert cost.tokens_per_expert == pytest.approx(1.0)


@given(st.integers(1, 512), st.integers(1, 8), st.integers(0, 10_000))
def test_expected_touched_is_between_k_and_e(e, k, tokens):
    k = min(k, e)
    touched = expected_experts_touched(e, k, tokens)
    if tokens == 0:
        assert touched == 0
    else:
        assert k - 1e-9 <= touched <= e + 1e-9
        assert touched <= tokens * k + 1e-9


@settings(max_examples=20)
@given(st.integers(1, 300), st.integers(0, 2**31 - 1))
def test_sampled_routing_agrees_with_the_closed_form_on_average(tokens, seed):
    sampled = Router(256, 8, 8, 58, mode="sampled", seed=seed).route(tokens)
    expected = expected_experts_touched(256, 8, tokens)
    # 58 layers of draws: the mean of distinct experts is close to the expectation
    assert float(np.mean(sampled.touched)) == pytest.approx(expected, rel=0.05, abs=0.6)
    assert sampled.rank_load.sum(axis=1) == pytest.approx(np.full(58, tokens * 8.0))


def test_sampled_routing_is_seeded():
    def durations(seed):
        dev = make_devices("qwen3-30b-a3b", "h100", 4, routing="sampled", seed=seed)[0]
        return [dev.run(Batch.decode(range(32), [500] * 32)).duration for _ in range(5)]
    assert durations(1) == durations(1)
    assert durations(1) != durations(2)


@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=6), st.integers(1, 8))
def test_closed_form_pipeline_equals_the_task_graph_critical_path(stage_times, m):
    assert pipeline_makespan(stage_times, m) == pytest.approx(
        critical_path(stage_times, m), rel=1e-9, abs=1e-12)
    assert task_graph(stage_times, m).number_of_nodes() == m * len(stage_times)


@settings(max_examples=20)
@given(rows, st.integers(1, 6))
def test_device_pipeline_time_is_the_task_graph_critical_path(rows_, micro):
    dev = DEVICES["pipeline"]
    batch = _batch(rows_, micro)
    chain, m = dev.step_model.pipeline_times(batch)
    assert m == min(micro, len(rows_))
    assert len(chain) == 3  # stage, link, stage
    overhead = dev.step_model.efficiency.step_overhead
    assert dev.run(batch).duration - overhead == pytest.approx(critical_path(chain, m), rel=1e-9)


@settings(max_examples=40)
@given(st.sampled_from(sorted(DEVICES)), rows, st.integers(1, 4))
def test_breakdown_adds_up_to_the_duration(kind, rows_, micro):
    result = DEVICES[kind].run(_batch(rows_, micro))
    c = result.cost
    assert min(c.compute, c.memory, c.communication, c.overhead) >= 0
    assert c.compute + c.memory + c.communication + c.overhead == pytest.approx(
        result.duration, rel=1e-9)
    assert 0.0 <= c.bubble_fraction < 1.0
    assert c.flops > 0 and c.bytes > 0


@settings(max_examples=40)
@given(st.sampled_from(["dense", "moe-tp", "moe-ep", "mla"]), rows, st.integers(1, 4),
       st.one_of(st.none(), st.integers(0, 64)))
def test_single_stage_fast_path_agrees_with_the_pipeline_path(kind, rows_, micro, pad):
    sm = DEVICES[kind].step_model
    batch = _batch(rows_, micro)
    if pad is not None:
        batch = Batch(batch.request_ids, batch.num_new_tokens, batch.num_cached_tokens,
                      padded_len=int((batch.num_new_tokens + batch.num_cached_tokens).max()) + pad,
                      num_micro_batches=micro)
    fast, general = sm._cost_one_stage(batch), sm._cost_pipeline(batch)
    assert fast[0] == pytest.approx(general[0], rel=1e-12)
    assert attrs.asdict(fast[1]) == pytest.approx(attrs.asdict(general[1]), rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(rows=rows, decodes=st.integers(0, 24), padded=st.booleans())
def test_features_from_batch_totals_match_the_array_sums(rows, decodes, padded):
    """A Batch's features use its precomputed totals (the simulator's fast path); anything
    else shaped like a batch sums its arrays: the same nine numbers, bit for bit."""
    from batchlab.costmodel import batch_features
    rows = rows + [(1, c) for _, c in rows[:decodes]]  # mixed batches too
    batch = _batch(rows)
    if padded:
        batch = attrs.evolve(batch, padded_len=int(max(n + c for n, c in rows)))

    class Plain:  # not a Batch: no totals to trust
        num_new_tokens, num_cached_tokens = batch.num_new_tokens, batch.num_cached_tokens
        padded_len = batch.padded_len

    assert batch_features(batch) == batch_features(Plain())


@settings(max_examples=200, deadline=None)
@given(rows=rows, decodes=st.integers(1, 24))
def test_features_of_a_few_prompts_in_python_match_the_array_sums(rows, decodes):
    """A mixed step with up to _FEW_PROMPTS prompts sums them as Python ints; more take
    numpy's int64 sums: the same nine numbers, bit for bit, either way."""
    from batchlab.costmodel import features
    batch = _batch(rows + [(1, c) for _, c in rows[:decodes]])
    few = features.batch_features(batch)
    saved, features._FEW_PROMPTS = features._FEW_PROMPTS, -1  # every batch by arrays
    try:
        assert features.batch_features(batch) == few
    finally:
        features._FEW_PROMPTS = saved
