"""make_devices and CostModelDevice: layouts, memory limits, breakdowns, utilisation."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.core import Batch, ConfigError, Device
from batchlab.costmodel import expected_experts_touched, get_gpu, get_model, make_devices


def test_dp_replicas_are_separate_devices():
    devs = make_devices("deepseek-v3", "h200", 16, dp=2)
    assert [d.name for d in devs] == ["h200x8-0", "h200x8-1"]
    h200 = get_gpu("h200")
    for d in devs:
        assert isinstance(d, Device)
        assert d.num_gpus == 8
        assert d.price_per_hour == pytest.approx(8 * h200.price_per_hour)
        assert d.peak_flops == pytest.approx(8 * h200.fp8_flops)  # FP8 weights
        assert d.peak_bandwidth == pytest.approx(8 * h200.memory_bandwidth)
    assert devs[0].kv_capacity_tokens == devs[1].kv_capacity_tokens
    assert devs[1].step_model.layout.stage_gpus[0] == tuple(range(8, 16))
    cheap = make_devices("llama-3-8b", "h100", 2, dp=2, price_per_hour=1.0)
    assert [d.price_per_hour for d in cheap] == [1.0, 1.0]


def test_deepseek_does_not_fit_on_one_gpu_and_says_what_to_do():
    with pytest.raises(ConfigError) as err:
        make_devices("deepseek-v3", "h200", 1)
    msg = str(err.value)
    for part in ("deepseek-v3 does not fit on 1 x h200", "671.0 GB", "GiB of weights",
                 "Use more GPUs", "--gpus 8"):
        assert part in msg
    assert make_devices("deepseek-v3", "h200", 8)[0].kv_capacity_tokens > 100_000


@pytest.mark.parametrize("kwargs,match", [
    (dict(model="llama-3-8b", num_gpus=8, tp=3), "tp=3"),
    (dict(model="llama-3-8b", num_gpus=8, ep=2), "ep=2 needs a mixture-of-experts"),
    (dict(model="llama-3-8b", num_gpus=8, dp=3), "dp=3"),
    (dict(model="llama-3-8b", num_gpus=8, tp=4), "use dp instead"),
    (dict(model="mixtral-8x7b", num_gpus=16, ep=16), "ep=16"),
    (dict(model="llama-3-8b", num_gpus=0), "num_gpus"),
    (dict(model="llama-3-8b", num_gpus=2, pp=64), "pp=64"),
    (dict(model="mixtral-8x7b", num_gpus=2, routing="random"), "routing 'random'"),
    (dict(model="mixtral-8x7b", num_gpus=2, skew=float("nan")), "skew"),
    (dict(model="llama-3-8b", num_gpus=1, memory_utilization=0), "memory_utilization"),
    (dict(model="llama-3-8b", num_gpus=2, tp=2.0), "tp must be a whole number"),
    (dict(model="llama-3-8b", num_gpus=2, gpus_per_node=0), "gpus_per_node"),
])
def test_bad_layouts_name_the_parameter(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_devices(gpu="h100", **kwargs)


def test_kv_capacity_is_the_memory_left_after_weights_and_activations():
    dev = make_devices("llama-3-8b", "h100", 1)[0]
    m, plan = get_model("llama-3-8b"), dev.memory
    assert plan.weights_per_gpu[0] == pytest.approx(m.num_params * 2, rel=1e-3)
    free = 0.9 * get_gpu("h100").memory_bytes - plan.weights_per_gpu[0] - plan.activations_per_gpu
    assert dev.kv_capacity_tokens == int(free / m.kv_bytes_per_token)
    assert 400_000 < dev.kv_capacity_tokens < 500_000  # ~ what vLLM reports for this setup
    # more GPUs hold more KV; an MLA cache is replicated across tensor-parallel ranks, so
    # data-parallel attention (tp=2 in 8 groups) holds far more tokens than tp=16
    tp16 = make_devices("deepseek-v3", "h200", 16)[0].kv_capacity_tokens
    dp_attn = make_devices("deepseek-v3", "h200", 16, tp=2)[0].kv_capacity_tokens
    assert dp_attn > 4 * tp16
    assert make_devices("llama-3-70b", "h100", 8)[0].kv_capacity_tokens > \
        make_devices("llama-3-70b", "h100", 4)[0].kv_capacity_tokens


def test_empty_batch_costs_the_step_overhead():
    dev = make_devices("llama-3-8b", "h100")[0]
    result = dev.run(Batch([], [], []))
    assert result.duration == dev.step_model.efficiency.step_overhead


def test_padding_costs_time_and_is_reported():
    dev = make_devices("llama-3-8b", "h100")[0]
    plain = Batch([0, 1, 2], [300, 1000, 1], [0, 0, 400])
    padded = Batch([0, 1, 2], [300, 1000, 1], [0, 0, 400], padded_len=1024)
    a, b = dev.run(plain), dev.run(padded)
    assert b.duration > a.duration
    assert b.cost.padded_tokens == padded.num_padded_tokens == 3 * 1024 - 1701
    assert a.cost.padded_tokens == 0
    # a padded decode row attends over the padded length
    d1 = dev.run(Batch.decode([0, 1], [10, 500], padded_len=1000)).duration
    d2 = dev.run(Batch.decode([0, 1], [999, 999])).duration
    assert d1 == pytest.approx(d2)


def test_utilisation_figures_are_plausible():
    dev = make_devices("llama-3-8b", "h100")[0]
    prefill = dev.run(Batch([0], [4096], [0]))
    mfu = prefill.cost.flops / (prefill.duration * dev.peak_flops)
    assert 0.4 < mfu <= 0.7  # compute-bound: close to the compute efficiency
    decode = dev.run(Batch.decode(range(8), [1000] * 8))
    bw = decode.cost.bytes / (decode.duration * dev.peak_bandwidth)
    mfu_decode = decode.cost.flops / (decode.duration * dev.peak_flops)
    assert 0.5 < bw <= 0.8 and mfu_decode < 0.02
    # flops of a dense prefill are ~2 x params x tokens (plus attention)
    params = get_model("llama-3-8b").num_params
    assert prefill.cost.flops == pytest.approx(2 * params * 4096, rel=0.15)


def test_moe_breakdown_reports_experts():
    dev = make_devices("deepseek-v3", "h200", 8)[0]
    for n in (1, 16, 64, 1024):
        cost = dev.run(Batch.decode(range(n), [100] * n)).cost
        assert cost.experts_touched == pytest.approx(expected_experts_touched(256, 8, n))
        assert cost.tokens_per_expert == pytest.approx(n * 8 / cost.experts_touched)
    assert dev.num_experts == 256
    dense = make_devices("llama-3-8b", "h100")[0].run(Batch.decode([0], [5])).cost
    assert dense.experts_touched == 0 and dense.tokens_per_expert == 0


def test_pipeline_bubble_shows_when_micro_batches_are_fewer_than_stages():
    dev = make_devices("llama-3-70b", "h100", 8, pp=4, tp=2)[0]
    rows = dict(request_ids=range(64), num_cached_tokens=[500] * 64)
    one = dev.run(Batch.decode(num_micro_batches=1, **rows)).cost.bubble_fraction
    four = dev.run(Batch.decode(num_micro_batches=4, **rows)).cost.bubble_fraction
    sixteen = dev.run(Batch.decode(num_micro_batches=16, **rows)).cost.bubble_fraction
    assert one == pytest.approx(0.75, abs=0.02)  # (p-1)/(m+p-1) with p=4, m=1
    assert sixteen < four < one
    assert four == pytest.approx(3 / 7, abs=0.03)
    no_pp = make_devices("llama-3-70b", "h100", 2)[0]
    assert no_pp.run(Batch.decode(num_micro_batches=4, **rows)).cost.bubble_fraction == 0.0


def test_part_times_split_attention_from_ffn():
    mixed = Batch([0, 1, 2], [200, 1, 1], [0, 3000, 10])
    decode = Batch.decode(range(64), [4000] * 64)
    # the last: expert parallelism, whose decode batches use DeepEP's low-latency kernels
    # (the breakdowns once priced them with the high-throughput ones)
    for model, gpu, n, kw, batch in (
            ("llama-3-8b", "h200", 1, {}, mixed), ("deepseek-v3", "h200", 8, {}, mixed),
            ("mixtral-8x7b", "h200", 2, {}, mixed),
            ("deepseek-v3", "h800", 32, dict(tp=1, ep=32, overlap=False), mixed),
            ("deepseek-v3", "h800", 32, dict(tp=1, ep=32, overlap=False), decode)):
        dev = make_devices(model, gpu, n, **kw)[0]
        parts = dev.part_times(batch)
        total = (parts.attention + parts.ffn + parts.head + parts.attention_comm
                 + parts.ffn_comm)
        assert total == pytest.approx(dev.run(batch).duration
                                      - dev.step_model.efficiency.step_overhead, rel=1e-9)
        assert parts.attention > 0 and parts.ffn > 0
        explained = dev.explain(batch)
        assert sum(explained.values()) == pytest.approx(total, rel=1e-9)
        assert "attention" in explained
        assert ("routed_experts" in explained) == (model != "llama-3-8b")
    # long contexts load the attention side, big batches the expert side
    dev = make_devices("deepseek-v3", "h200", 8)[0]
    long_ctx = dev.part_times(Batch.decode(range(8), [100_000] * 8))
    short = dev.part_times(Batch.decode(range(8), [100] * 8))
    assert long_ctx.attention > 3 * short.attention
    assert long_ctx.ffn == pytest.approx(short.ffn)


def test_bigger_batches_amortise_weight_reads():
    dev = make_devices("deepseek-v3", "h200", 8)[0]
    per_token = [dev.run(Batch.decode(range(n), [1000] * n)).duration / n for n in (1, 8, 64, 256)]
    assert per_token == sorted(per_token, reverse=True)
    assert per_token[0] > 20 * per_token[-1]


def test_expert_parallel_ranks_wait_for_the_busiest():
    skewed = make_devices("deepseek-v3", "h200", 8, skew=1.5)[0]
    uniform = make_devices("deepseek-v3", "h200", 8)[0]
    # a big prefill is compute-bound on the experts: the most popular rank holds everyone up
    prefill = Batch([0], [8192], [0])
    assert skewed.run(prefill).duration > 1.05 * uniform.run(prefill).duration
    # a decode batch touches fewer distinct experts when routing is skewed
    decode = Batch.decode(range(64), np.full(64, 1000))
    assert skewed.run(decode).cost.experts_touched < uniform.run(decode).cost.experts_touched


@pytest.mark.parametrize("model,gpu,gpus,kw", [
    ("llama-3-8b", "h100", 1, {}), ("llama-3-70b", "h100", 8, dict(pp=2)),
    ("deepseek-v3", "h800", 32, dict(tp=1, ep=32)),
    ("deepseek-v3", "h800", 32, dict(tp=1, ep=32, overlap=True))])
def test_price_step_is_run_as_a_cost_row(model, gpu, gpus, kw):
    from batchlab.core.step import cost_row
    dev = make_devices(model, gpu, gpus, **kw)[0]
    batches = [Batch([1, 2, 3], [1, 1, 1], [100, 2000, 7]),                   # decode
               Batch([1, 2, 3], [1, 1, 500], [100, 2000, 0]),                 # mixed
               Batch([1, 2], [300, 40], [0, 8], num_micro_batches=2),         # prefill
               Batch([1, 2], [1, 1], [100, 200], padded_len=256),             # padded
               Batch([], [], [])]                                             # empty
    for batch in batches:
        result = dev.run(batch)
        if kw.get("overlap"):  # a row cannot hold the communication hidden under overlap,
            assert dev.price_step(batch) is None  # so the engine calls run
            continue
        duration, row = dev.price_step(batch)
        assert duration == result.duration
        assert tuple(row) == cost_row(result.cost)
        assert [type(x) for x in row][-1] is int  # padded tokens


def test_stretches_under_overlap_report_the_hidden_communication():
    """A multi-step batch stopped after its first step (an arrival during it) reports that
    step's StepResult: under two-batch overlap, with the communication hidden, which a
    cost row (price_step) cannot hold; a longer one, its steps' hidden communication."""
    from batchlab import simulate
    from batchlab.policies.continuous import ContinuousBatching
    from batchlab.workloads import Workload

    dev = make_devices("deepseek-v3", "h800", 32, tp=1, ep=32, overlap=True)
    heard = []

    class Heard(ContinuousBatching):
        def update(self, batch, result, now):
            heard.append((batch, result))
            super().update(batch, result, now)

    arrivals = np.cumsum(np.random.default_rng(1).exponential(0.05, 40))
    workload = Workload(arrivals, [300] * 40, [60] * 40)
    simulate(Heard(), workload, dev, seed=0)
    alone = [(b, r) for b, r in heard if b.num_steps > 1 and r.num_steps == 1]
    assert alone and any(r.cost.communication_hidden > 0 for _, r in alone)
    for batch, result in alone:
        assert result.cost == dev[0].run(batch).cost
    # A stretch of several steps reports the hidden communication of its steps, summed: in
    # all, the policy hears what it hears when every step is planned alone.
    assert any(r.num_steps > 1 and r.cost.communication_hidden > 0 for _, r in heard)
    multi = sum(r.cost.communication_hidden for _, r in heard)
    heard.clear()
    simulate(Heard(max_num_steps=1), workload, dev, seed=0)
    assert all(r.num_steps == 1 for _, r in heard)
    assert multi == pytest.approx(sum(r.cost.communication_hidden for _, r in heard), rel=1e-12)
