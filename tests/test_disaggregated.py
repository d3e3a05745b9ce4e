"""Attention/FFN disaggregation: the device's ping-pong pipeline and memory, and the policy's
characteristic effect (expert utilisation up, paid for in memory and transfer time)."""

from __future__ import annotations

import numpy as np
import pytest

import batchlab
from batchlab import Batch, load_policy, simulate
from batchlab.costmodel import make_devices
from batchlab.costmodel.disaggregated import make_disaggregated_device
from batchlab.workloads import make_workload

MODEL = "qwen3-30b-a3b"  # 30B MoE, 128 experts top-8: fits one H200, so replicas are 1 GPU


@pytest.fixture(scope="module")
def split():
    return make_disaggregated_device(MODEL, "h200", 2, 2)


def test_raises_expert_utilisation_at_the_price_of_memory_and_transfers(split):
    """Four H200s: four colocated replicas (each one's experts see a quarter of the traffic)
    against two attention GPUs feeding one FFN pool of two GPUs."""
    spec = make_workload("poisson", rate=20.0, num_requests=120, prompt="lognormal:512:0.5",
                         output="lognormal:64:0.5")
    replicas = make_devices(MODEL, "h200", 4, dp=4)
    colo = simulate(load_policy("continuous"), spec, replicas)
    policy = load_policy("disaggregated")
    disagg = simulate(policy, spec, [split])
    policy.check_valid()
    c, d = colo.summary(), disagg.summary()
    assert c["num_finished"] == d["num_finished"] == 120 and c["num_gpus"] == d["num_gpus"] == 4
    # Measured: expert utilisation 0.35 against 0.11: a step of the FFN pool gives work to
    # three times the share of experts (tokens per touched expert stay about equal, 7.5
    # against 7.4: the pool reads more experts' weights per step, and fewer steps).
    assert d["expert_utilisation"] > 2.5 * c["expert_utilisation"]
    # The price. Transfers: every layer's hidden states cross between the pools (0.24 s of
    # the critical path over the run, none colocated) ...
    assert disagg.devices["communication_time"].sum() > 0.1
    assert colo.devices["communication_time"].sum() == 0
    # ... and memory: the FFN GPUs hold no KV cache, so the same four GPUs hold 10% fewer
    # KV tokens (2.69M against 4 x 0.75M), and each FFN GPU strands ~99 GiB.
    assert split.kv_capacity_tokens < 0.95 * sum(r.kv_capacity_tokens for r in replicas)
    assert split.memory.ffn_stranded_per_gpu > 50 * 2**30
    # ... and per-token latency: a decode step waits for both pools in turn (TPOT p50 6.7 ms
    # against 4.0 ms).
    assert d["tpot_p50_s"] > c["tpot_p50_s"]


def test_ping_pong_keeps_both_pools_busy_on_large_batches(split):
    prefill = Batch(np.arange(8), np.full(8, 1024), np.zeros(8))
    steps = {m: split.run(Batch(prefill.request_ids, prefill.num_new_tokens,
                                prefill.num_cached_tokens, num_micro_batches=m))
             for m in (1, 2, 3)}
    # Measured: 76 ms, bubble 0.75 with one micro-batch; 32 ms, bubble 0.25 with three.
    assert steps[3].duration < 0.5 * steps[1].duration
    assert steps[3].cost.bubble_fraction < steps[2].cost.bubble_fraction \
        < steps[1].cost.bubble_fraction
    assert split.suggest_micro_batches(prefill, 4) == 3
    # A small decode batch is bound by reading expert weights, once per micro-batch: one.
    decode = Batch.decode(np.arange(128), np.full(128, 1000))
    assert split.suggest_micro_batches(decode, 4) == 1


def test_step_time_is_the_ping_pong_pipeline(split):
    batch = Batch(np.arange(12), np.full(12, 300), np.zeros(12), num_micro_batches=3)
    st = split.stage_times(batch)
    m, L = 3, st.num_layers
    r, b = st.attention + 2 * st.transfer + st.ffn, max(st.attention, st.transfer, st.ffn)
    result = split.run(batch)
    overhead = result.cost.overhead
    assert result.duration == pytest.approx((L - 1) * max(r, m * b) + r + (m - 1) * b
                                            + st.head + overhead)
    cost = result.cost
    assert cost.compute + cost.memory + cost.communication + cost.overhead \
        == pytest.approx(result.duration)
    one = split.stage_times(batch, 1)
    assert split.run(Batch(batch.request_ids, batch.num_new_tokens, batch.num_cached_tokens)
                     ).duration == pytest.approx(L * one.round_trip + one.head + overhead)


def test_memory_by_pool():
    small, large = (make_disaggregated_device("deepseek-v3", "h200", 8, n) for n in (8, 16))
    # more FFN GPUs: fewer experts each, the attention pool (and its KV) unchanged
    assert large.memory.ffn_weights_per_gpu < small.memory.ffn_weights_per_gpu
    assert large.kv_capacity_tokens == small.kv_capacity_tokens
    more_attention = make_disaggregated_device("deepseek-v3", "h200", 16, 8)
    # twice the attention GPUs, a little more than twice the KV (each holds less of a step)
    assert more_attention.kv_capacity_tokens >= 2 * small.kv_capacity_tokens
    with pytest.raises(batchlab.ConfigError, match="FFN pool does not fit.*more ffn_gpus"):
        make_disaggregated_device("deepseek-v3", "h200", 8, 2)
    with pytest.raises(batchlab.ConfigError, match="needs a mixture-of-experts model"):
        make_disaggregated_device("llama-3-8b", "h200", 1, 1)
    with pytest.raises(batchlab.ConfigError, match="ffn_gpus=3 must divide"):
        make_disaggregated_device(MODEL, "h200", 1, 3)


def test_policy_sets_micro_batches_per_step(split):
    class Spy:
        def __init__(self, inner):
            self.inner, self.seen = inner, []
            self.name, self.kv_capacity_tokens = inner.name, inner.kv_capacity_tokens

        def suggest_micro_batches(self, batch, limit):
            return self.inner.suggest_micro_batches(batch, limit)

        def run(self, batch):
            self.seen.append(batch.num_micro_batches)
            return self.inner.run(batch)

    spec = make_workload("poisson", rate=50.0, num_requests=40, prompt="lognormal:1024:0.3",
                         output="8")
    spy = Spy(split)
    assert simulate(load_policy("disaggregated"), spec, [spy]).summary()["num_finished"] == 40
    assert max(spy.seen) > 1 and min(spy.seen) == 1  # ping-pong for prefills, not decodes
    fixed = Spy(split)
    simulate(load_policy("disaggregated", num_micro_batches=2), spec, [fixed])
    assert set(fixed.seen) <= {1, 2} and 2 in fixed.seen
    # On an ordinary device it is continuous batching with two micro-batches.
    plain = simulate(load_policy("disaggregated"), spec, batchlab.affine_devices(1))
    assert plain.summary()["num_finished"] == 40


def test_bad_parameter_is_a_config_error():
    with pytest.raises(batchlab.ConfigError, match="policy 'disaggregated'.*num_micro_batches"):
        load_policy("disaggregated", num_micro_batches=-1)
