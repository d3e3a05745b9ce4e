"""DeepSeek's production deployment: the preset's devices, and the model against the figures
DeepSeek published (DeepSeek-V3/R1 Inference System Overview, open-infra-index, 2025-03-01).

What the model reaches and misses is in docs/costmodel.md ("DeepSeek at scale"): without
overlap the decode unit lands on the published throughput; with the two-batch overlap DeepSeek
describes, the roofline is faster than the published day-average in both phases, lands on
DeepSeek's own prefill profile, and in decode gains more from overlap than SGLang's ablation
measures. The bands below hold those findings, so a change to them is seen.
"""

from __future__ import annotations

import pytest

from batchlab.core import Batch, ConfigError
from batchlab.costmodel import get_deployment, list_deployments, make_deployment, make_devices

KV_LEN, PUBLISHED_DECODE, PUBLISHED_PREFILL = 4989, 14_800, 73_700
PROMPT = round(KV_LEN / (1 + 168 / (2 * 608)))  # from 608B input / 168B output tokens a day
CACHED = round(PROMPT * 0.563)                   # 56.3% of input tokens hit the disk cache


@pytest.fixture(scope="module")
def units():
    on = make_deployment("deepseek-v3-production")
    off = make_deployment("deepseek-v3-production", overlap=False)
    return {"on": on, "off": off}


def _decode_per_node(dev):
    """Output tokens/s per node at the largest batch where a user still gets >= 20 tokens/s
    (within KV memory), and that user rate."""
    gpus = dev.num_gpus
    cap = dev.kv_capacity_tokens // gpus // (KV_LEN + 1)
    best = None
    for b in range(8, cap + 1, 2):
        d = dev.run(Batch.decode(range(b * gpus), [KV_LEN] * (b * gpus))).duration
        if 1 / d < 20.0:
            break
        best = (8 * b / d, 1 / d)
    return best


def _prefill_per_node(dev, rows_per_gpu=4):
    n = rows_per_gpu * dev.num_gpus
    r = dev.run(Batch(range(n), [PROMPT - CACHED] * n, [CACHED] * n))
    return 8 * rows_per_gpu * PROMPT / r.duration


def test_the_preset_is_deepseeks_layout(units):
    prefill, decode = units["on"]
    assert (prefill.name, decode.name) == ("prefill-0", "decode-0")
    assert (prefill.num_gpus, decode.num_gpus) == (32, 144)
    assert decode.step_model.layout.expert_slots == 288
    assert (prefill.step_model.layout.tp, decode.step_model.layout.ep) == (1, 144)
    assert decode.price_per_hour == pytest.approx(2.0 * 144)
    assert prefill.step_model.overlap and decode.step_model.overlap
    # the pd-disaggregated policy moves KV from prefill to decode over the NICs
    assert 0 < prefill.kv_transfer_time(PROMPT, decode) < 0.01
    assert "deepseek-v3-production" in dict(list_deployments())
    assert get_deployment("DeepSeek-V3-Production").decode.redundant_experts == 32


def test_more_units_are_more_devices_prefill_first():
    devs = make_deployment("deepseek-v3-production", prefill_units=2, decode_units=1)
    assert [d.name for d in devs] == ["prefill-0", "prefill-1", "decode-0"]


def test_decode_unit_without_overlap_is_within_25_percent_of_published(units):
    per_node, rate = _decode_per_node(units["off"][1])
    assert 20.0 <= rate <= 22.0
    assert per_node == pytest.approx(PUBLISHED_DECODE, rel=0.25)


def test_decode_unit_with_overlap_beats_the_published_day_average(units):
    per_node, rate = _decode_per_node(units["on"][1])
    assert rate >= 20.0
    assert 1.25 * PUBLISHED_DECODE < per_node < 2.2 * PUBLISHED_DECODE


def test_prefill_unit_is_above_the_published_day_average(units):
    off = _prefill_per_node(units["off"][0])
    on = _prefill_per_node(units["on"][0])
    assert 1.0 * PUBLISHED_PREFILL < off < 1.7 * PUBLISHED_PREFILL
    assert off < on < 2.2 * PUBLISHED_PREFILL


# Full-batch measurements (LMSYS blog, "Deploying DeepSeek with PD Disaggregation and
# Large-scale Expert Parallelism on 96 H100 GPUs", 2025-05-05): prefill on DeepSeek's profile
# configuration (EP32, 4K prompts, 16K tokens/GPU), decode saturated (EP72, 2K inputs).
SGLANG_PREFILL_4K, SGLANG_DECODE_2K = 50_302, 22_300


def _sglang_prefill(overlap):
    return make_devices("deepseek-v3", "h100", 32, tp=1, ep=32, overlap=overlap,
                        max_batch_tokens=16384)[0]


def _sglang_decode(overlap, **kw):
    return make_devices("deepseek-v3", "h100", 72, tp=1, ep=72, redundant_experts=32,
                        overlap=overlap, **kw)[0]


def _sglang_points(overlap):
    pre = _sglang_prefill(overlap)
    prefill = 8 * 4 * 4096 / pre.run(Batch(range(128), [4096] * 128, [0] * 128)).duration
    dec = _sglang_decode(overlap, max_batch_rows=256)
    decode = 8 * 256 / dec.run(Batch.decode(range(256 * 72), [2000] * (256 * 72))).duration
    return prefill, decode


def test_full_batch_points_without_overlap_are_within_25_percent_of_sglang():
    prefill, decode = _sglang_points(False)
    assert prefill == pytest.approx(SGLANG_PREFILL_4K, rel=0.25)
    assert decode == pytest.approx(SGLANG_DECODE_2K, rel=0.25)


def test_full_batch_points_with_overlap_overshoot_as_documented():
    # documented misses (docs/costmodel.md): the bands make a change to them visible. The
    # prefill, with uniform routing, against SGLang's default (imbalanced) expert placement
    prefill, decode = _sglang_points(True)
    assert 1.1 * SGLANG_PREFILL_4K < prefill < 1.45 * SGLANG_PREFILL_4K
    assert 1.2 * SGLANG_DECODE_2K < decode < 1.8 * SGLANG_DECODE_2K


def test_overlapped_prefill_is_within_10_percent_of_deepseeks_own_profile():
    # The LMSYS blog's "Profile Results" read 62,713 input tokens/s per node off DeepSeek's
    # prefill profile (EP32, 16K tokens/GPU of 4K prompts, perfectly balanced routing, two
    # micro-batches); the model routes uniformly too (skew 0). Not used to fit the overlapped
    # transfers' slowdown (Efficiency.overlapped_communication, fitted to the blog's ablation):
    # this is its check, and the model lands within a few percent (docs/costmodel.md)
    prefill, _ = _sglang_points(True)
    assert prefill == pytest.approx(62_713, rel=0.1)


# The same blog's two-batch-overlap ablation on H100: throughput with overlap over without,
# prefill +27% to +35% at the same tokens/GPU; decode -27% at 32 tokens/GPU, positive only
# from 64-128, +25.5% at 256; decode with simulated MTP (128 requests/GPU x 2 tokens, 4K KV)
# 17,552 against 12,929 tokens/s per node.
def _overlap_gain(make, batch):
    return make(False).run(batch).duration / make(True).run(batch).duration - 1.0


def test_overlap_loses_on_small_decode_batches_and_pays_on_large_ones_as_measured():
    gains = [_overlap_gain(_sglang_decode, Batch.decode(range(72 * b), [2000] * (72 * b)))
             for b in (32, 64, 128, 256)]
    assert gains[0] < 0 < gains[-1]   # measured: -27% at 32, +25.5% at 256
    assert gains == sorted(gains)     # the gain grows with the batch


def test_overlap_gain_against_sglangs_ablation():
    # prefill: the overlapped transfers' slowdown is fitted to this range; decode: a
    # documented miss (docs/costmodel.md, "DeepSeek at scale", the ablation's table), the
    # model gaining 1.5-2x what overlap measurably buys; the bands make a change visible
    pre = _overlap_gain(_sglang_prefill, Batch(range(64), [4096] * 64, [0] * 64))   # 8K tokens/GPU
    dec = _overlap_gain(_sglang_decode, Batch.decode(range(72 * 256), [2000] * (72 * 256)))
    mtp = _overlap_gain(lambda o: _sglang_decode(o, decode_threshold=2),
                        Batch(range(72 * 128), [2] * (72 * 128), [3999] * (72 * 128)))
    assert 0.27 <= pre <= 0.35
    assert 1.2 * 0.255 < dec < 2.2 * 0.255
    assert 1.2 * (17_552 / 12_929 - 1) < mtp < 2.2 * (17_552 / 12_929 - 1)


def test_overlapped_decode_is_within_25_percent_of_deepseeks_own_profile():
    # DeepSeek's H800 decode profile (github.com/deepseek-ai/profile-data: EP128, 128
    # requests/GPU, 4K prompts, two micro-batches), per-kernel times as a third party
    # tabulated them (zdszero.github.io, deepseek_profile): 96 ms a step. It decodes with MTP,
    # two tokens a row, which the decode path runs with decode_threshold=2.
    dev = make_devices("deepseek-v3", "h800", 128, tp=1, ep=128, overlap=True,
                       decode_threshold=2)[0]
    n = 128 * dev.num_gpus
    step = dev.run(Batch(range(n), [2] * n, [4095] * n)).duration
    assert step == pytest.approx(0.096, rel=0.25)
    # what the model's step is made of, against the profile's phases per micro-batch and
    # MoE layer: dispatch + combine 187 + 394 us (DeepEP's low-latency kernels)
    one = dev.explain(Batch(range(n // 2), [2] * (n // 2), [4095] * (n // 2)))
    assert one["ffn_comm"] / dev.model.num_moe_layers == pytest.approx(581e-6, rel=0.1)


# RTP-LLM (Alibaba) on DeepSeek's production layout, H800 over RoCE, 4K input / 2K output,
# under 1.6 s TTFT and 50 ms ITL (github.com/alibaba/rtp-llm, docs/RTP-LLM-DeepSeek-Replay-
# Tech-Report.md): prefill EP32, two 4K prompts per GPU in 1.5 s (42.6k per node); decode
# EP144 at the 20 tokens/s per user limit with 13,200 concurrent requests and MTP, 14.7k
# output tokens/s per node. Measured at load, not day averages.
RTP_PREFILL_STEP, RTP_CONCURRENT, RTP_CONTEXT = 1.5, 13_200, 4096 + 1024


def _rtp_points(overlap):
    pre, dec = make_deployment("deepseek-v3-production", overlap=overlap, decode_threshold=2)
    n = 2 * pre.num_gpus
    prefill_step = pre.run(Batch(range(n), [4096] * n, [0] * n)).duration
    # MTP rows (the last token and a draft); 1.875 tokens a step: 87.5%, the middle of the
    # 85-90% of drafts DeepSeek-V3's report says are accepted (RTP-LLM gives none)
    step = dec.run(Batch(range(RTP_CONCURRENT), [2] * RTP_CONCURRENT,
                         [RTP_CONTEXT - 2] * RTP_CONCURRENT)).duration
    per_node = 8 * RTP_CONCURRENT / dec.num_gpus * 1.875 / step
    return prefill_step, 1.875 / step, per_node


def test_rtp_llm_points_without_overlap_are_within_25_percent():
    prefill_step, user_rate, per_node = _rtp_points(False)
    assert prefill_step == pytest.approx(RTP_PREFILL_STEP, rel=0.25)
    assert user_rate == pytest.approx(20.0, rel=0.25)
    assert per_node == pytest.approx(14_700, rel=0.25)


def test_rtp_llm_points_with_overlap_overshoot_as_documented():
    # a documented miss (docs/costmodel.md, "DeepSeek at scale", RTP-LLM's table)
    prefill_step, user_rate, per_node = _rtp_points(True)
    assert 0.6 * RTP_PREFILL_STEP < prefill_step < 0.8 * RTP_PREFILL_STEP
    assert 1.25 * 14_700 < per_node < 1.7 * 14_700
    assert user_rate > 20.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="deepseek-v4"), "unknown deployment 'deepseek-v4'"),
    (dict(name="deepseek-v3-production", ep=64), "fixed by the deployment"),
    (dict(name="deepseek-v3-production", decode_units=-1), "decode_units"),
    (dict(name="deepseek-v3-production", runtime="warp"), "unknown runtime profile"),
])
def test_bad_deployments_say_what_is_wrong(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_deployment(**kwargs)
