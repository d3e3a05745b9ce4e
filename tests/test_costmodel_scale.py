"""Expert-parallel communication at scale, two-batch overlap, redundant experts, runtimes."""

from __future__ import annotations

import pytest

from batchlab.core import Batch, ConfigError
from batchlab.costmodel import Cluster, Efficiency, get_gpu, get_model, make_devices
from batchlab.costmodel.expert_comm import FP8_SCALE_GROUP, ExpertComm
from batchlab.costmodel.moe import Router

H800 = get_gpu("h800")
DSV3 = get_model("deepseek-v3")

# DeepEP (github.com/deepseek-ai/DeepEP, docs/legacy.md, "Low-latency kernels with pure
# RDMA"): H800 + CX7 400 Gb/s, 128 tokens per GPU, hidden 7168, top-8, FP8 dispatch, BF16
# combine: (EP, dispatch us, combine us).
DEEPEP_LOW_LATENCY = [(16, 118, 195), (32, 155, 273), (64, 173, 314), (128, 192, 369),
                      (256, 194, 360)]


@pytest.mark.parametrize("ep,dispatch_us,combine_us", DEEPEP_LOW_LATENCY)
def test_low_latency_dispatch_and_combine_match_deepep(ep, dispatch_us, combine_us):
    cluster = Cluster.build(H800, ep)
    a2a = cluster.all_to_all(range(ep))
    h = DSV3.hidden_size
    dispatch = a2a.time(128 * 8 * (h + h / FP8_SCALE_GROUP * 4), 0.75)
    combine = a2a.time(128 * 8 * h * 2, 0.75)
    assert dispatch * 1e6 == pytest.approx(dispatch_us, rel=0.15)
    assert combine * 1e6 == pytest.approx(combine_us, rel=0.15)
    # and ExpertComm adds the two up for a decode batch
    xc = ExpertComm.build(cluster, range(ep), DSV3, 0.75)
    assert xc.time(128, True) == pytest.approx(dispatch + combine, rel=1e-9)


def test_all_to_all_latency_does_not_grow_with_the_number_of_peers():
    small, big = Cluster.build(H800, 16), Cluster.build(H800, 128)
    assert big.all_to_all(range(128)).latency == small.all_to_all(range(16)).latency


def test_high_throughput_mode_crosses_the_network_once_per_server():
    cluster = Cluster.build(H800, 32)
    xc = ExpertComm.build(cluster, range(32), DSV3, 0.75)
    # prefill (once per remote server, then NVLink) moves fewer NIC bytes than decode's k copies
    assert xc.time(4096, False) < xc.time(4096, True)
    assert 0 < xc.sm_share(False) < 0.25 and xc.sm_share(True) == 0.0
    # overlapped, its transfers run slower than alone when the caller says so (the step
    # model passes Efficiency.overlapped_communication); the decode kernels' never do
    slowed = ExpertComm.build(cluster, range(32), DSV3, 0.75, overlapped=0.8)
    assert xc.overlap_slowdown(False) == 1.0
    assert slowed.overlap_slowdown(False) == pytest.approx(1.25)
    assert slowed.overlap_slowdown(True) == 1.0
    # inside one server both modes are the same NVLink all-to-all
    one = ExpertComm.build(Cluster.build(H800, 8), range(8), DSV3, 0.75)
    assert one.time(4096, False) == pytest.approx(one.time(4096, True), rel=0.01)


def test_overlapped_prefill_transfers_run_slower_than_alone_and_decode_ones_do_not():
    def steps(**efficiency):
        dev = make_devices("deepseek-v3", "h800", 32, tp=1, ep=32, overlap=True,
                           efficiency=efficiency)[0]
        prefill = dev.run(Batch(range(64), [4096] * 64, [0] * 64))
        decode = dev.run(Batch.decode(range(32 * 64), [2000] * (32 * 64)))
        return prefill, decode

    prefill, decode = steps()
    prefill_alone, decode_alone = steps(overlapped_communication=1.0)   # slowdown off
    # tp=1: every transfer is an expert dispatch or combine, all of them slowed in prefill
    slowdown = 1.0 / Efficiency().overlapped_communication
    as_run = prefill.cost.communication + prefill.cost.communication_hidden
    alone = prefill_alone.cost.communication + prefill_alone.cost.communication_hidden
    assert slowdown > 1.0 and as_run == pytest.approx(slowdown * alone, rel=1e-9)
    assert prefill.duration > prefill_alone.duration
    assert decode.duration == decode_alone.duration


def test_fp8_dispatch_is_cheaper_than_bf16():
    bf16 = get_model("deepseek-v3")
    import attrs
    bf16 = attrs.evolve(bf16, weight_dtype="bf16")
    c = Cluster.build(H800, 32)
    assert (ExpertComm.build(c, range(32), DSV3, 0.75).time(128, True)
            < ExpertComm.build(c, range(32), bf16, 0.75).time(128, True))


def _decode(rows_per_gpu, gpus, ctx=4989):
    n = rows_per_gpu * gpus
    return Batch.decode(range(n), [ctx] * n)


def test_overlap_hides_communication_and_reports_it():
    plain = make_devices("deepseek-v3", "h800", 32, tp=1, ep=32)[0]
    over = make_devices("deepseek-v3", "h800", 32, tp=1, ep=32, overlap=True)[0]
    for batch in (_decode(64, 32), Batch(range(64), [2000] * 64, [1000] * 64)):
        a, b = plain.run(batch), over.run(batch)
        assert a.cost.communication_hidden == 0.0
        assert b.cost.communication_hidden > 0 and b.cost.communication < a.cost.communication
        parts = (b.cost.compute + b.cost.memory + b.cost.communication + b.cost.overhead)
        assert parts == pytest.approx(b.duration, rel=1e-9)
        # what was hidden plus what stayed exposed is all of the two micro-batches' traffic
        assert b.cost.communication + b.cost.communication_hidden > 0.9 * a.cost.communication
    # prefill: the hidden dispatch/combine outweigh SMs lent to communication
    prefill = Batch(range(64), [2000] * 64, [1000] * 64)
    assert over.run(prefill).duration < plain.run(prefill).duration


def test_overlap_is_not_free_where_weights_dominate():
    """Each micro-batch reads the weights again: at EP32 (8 experts a GPU) a decode batch
    of 64 rows a GPU gains less from hiding its communication than it pays in weight reads."""
    plain = make_devices("deepseek-v3", "h800", 32, tp=1, ep=32)[0]
    over = make_devices("deepseek-v3", "h800", 32, tp=1, ep=32, overlap=True)[0]
    a, b = plain.run(_decode(64, 32)).cost, over.run(_decode(64, 32)).cost
    assert b.memory > a.memory + 0.01
    assert over.run(_decode(64, 32)).duration > plain.run(_decode(64, 32)).duration


def test_overlap_cannot_beat_the_busier_stream():
    over = make_devices("deepseek-v3", "h800", 32, tp=1, ep=32, overlap=True)[0]
    r = over.run(_decode(64, 32))
    total_comm = r.cost.communication + r.cost.communication_hidden
    assert r.duration >= total_comm
    assert r.duration >= r.cost.compute + r.cost.memory + r.cost.overhead


def test_redundant_experts_resolve_ep144_and_cost_memory():
    with pytest.raises(ConfigError, match="redundant_experts=32"):
        make_devices("deepseek-v3", "h800", 144, tp=1, ep=144)
    dev = make_devices("deepseek-v3", "h800", 144, tp=1, ep=144, redundant_experts=32)[0]
    assert dev.step_model.layout.expert_slots == 288
    ep128 = make_devices("deepseek-v3", "h800", 128, tp=1, ep=128)[0]
    # 2 slots a GPU either way; EP72 holds 4 a GPU and so less KV room per GPU
    assert dev.memory.weights_per_gpu[0] == pytest.approx(ep128.memory.weights_per_gpu[0])
    ep72 = make_devices("deepseek-v3", "h800", 72, tp=1, ep=72, redundant_experts=32)[0]
    assert ep72.memory.weights_per_gpu[0] > dev.memory.weights_per_gpu[0]
    assert dev.run(_decode(8, 144)).duration > 0


def test_redundant_copies_lighten_the_busiest_rank_under_skew():
    plain = Router(256, 8, 32, 58, skew=1.0, seed=1)
    eplb = Router(256, 8, 36, 58, skew=1.0, seed=1, redundant=32)
    # busiest rank's share of the assignments, against a perfectly even share
    p = plain.route(4096).rank_load.max() / (4096 * 8 / 32)
    e = eplb.route(4096).rank_load.max() / (4096 * 8 / 36)
    assert e < p
    # every assignment lands on some rank: the ranks' shares add up to one
    assert eplb._rank_share.sum() == pytest.approx(1.0, rel=1e-9)


def test_sampled_routing_with_redundant_experts_keeps_k_assignments_per_token():
    r = Router(256, 8, 36, 4, mode="sampled", seed=2, redundant=32)
    one = r.route(1)
    assert one.rank_load.sum(axis=1) == pytest.approx([8.0] * 4)
    many = r.route(300)
    assert many.rank_load.sum(axis=1) == pytest.approx([2400.0] * 4)


def test_runtime_profiles_change_only_fixed_costs():
    base = make_devices("llama-3-8b", "h100")[0]
    eager = make_devices("llama-3-8b", "h100", runtime="eager")[0]
    graph = make_devices("llama-3-8b", "h100", runtime="cuda-graph")[0]
    batch = Batch.decode(range(10), [1000] * 10)
    assert graph.run(batch).duration == base.run(batch).duration
    a, b = base.run(batch).cost, eager.run(batch).cost
    assert b.overhead > a.overhead + 3e-3
    assert (b.compute, b.memory) == (a.compute, a.memory)


@pytest.mark.parametrize("kwargs,match", [
    (dict(model="deepseek-v3", gpu="h800", num_gpus=144, tp=1, ep=144, redundant_experts=30),
     "cannot place the 256 routed experts"),
    (dict(model="llama-3-8b", gpu="h100", num_gpus=8, redundant_experts=8), "dense"),
    (dict(model="deepseek-v3", gpu="h200", num_gpus=8, ep=1, tp=8, redundant_experts=8),
     "needs expert parallelism"),
    (dict(model="llama-3-8b", gpu="h100", num_gpus=1, overlap=True),
     "no communication to hide"),
    (dict(model="llama-3-70b", gpu="h100", num_gpus=8, pp=2, tp=4, overlap=True),
     "one pipeline stage"),
    (dict(model="llama-3-8b", gpu="h100", num_gpus=1, runtime="turbo"),
     "unknown runtime profile 'turbo'"),
    # tp was never named: the error says it defaulted, and how DeepSeek's layout is asked for
    (dict(model="deepseek-v3", gpu="h800", num_gpus=144, ep=144),
     r"tp=144 must divide .* \(tp defaults to the 144 GPUs of a stage; .* set tp=1 and ep=144\)"),
    # the copies are what does not fit: the advice is fewer of them, not the GPUs given
    (dict(model="deepseek-v3", gpu="h200", num_gpus=8, ep=8, redundant_experts=1000),
     r"with 1000 redundant experts does not fit .* use fewer redundant experts"),
    (dict(model="llama-3-8b", gpu="h100", num_gpus=24),
     r"tp defaults to the 24 GPUs of a stage; set tp, or use dp"),
])
def test_bad_scale_settings_say_what_is_wrong(kwargs, match):
    with pytest.raises(ConfigError, match=match) as info:
        make_devices(**kwargs)
    assert "\n" not in str(info.value)
