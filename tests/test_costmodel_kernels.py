"""Published kernel measurements (costmodel/kernels.py): DeepGEMM's FP8 GEMMs on H800 at
DeepSeek-V3's shapes replace the roofline's compute efficiency for the ops they cover."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from batchlab.core import Batch
from batchlab.costmodel import make_devices
from batchlab.costmodel.kernels import CONTIGUOUS, MASKED, NORMAL, MeasuredKernels, op_curve

LAYERS, H, O_IN = 61, 7168, 16384


def _prefill_per_gpu(dev, tokens):
    n = dev.num_gpus
    return Batch(range(n), [tokens] * n, [0] * n)


@pytest.fixture(scope="module")
def h800():
    return make_devices("deepseek-v3", "h800", 32, tp=1, ep=32)[0]


def test_o_proj_runs_at_deepgemms_published_rate(h800):
    kov = h800.step_model.efficiency.kernel_overhead
    got = h800.explain(_prefill_per_gpu(h800, 4096))["o_proj"]
    want = LAYERS * (2 * 4096 * H * O_IN / (NORMAL[(H, O_IN)][4096] * 1e12) + kov)
    assert got == pytest.approx(want, rel=1e-9)


def test_rates_are_interpolated_in_log_tokens_and_held_flat_outside():
    curve = op_curve("h800", "fp8", [(H, O_IN)])
    mid = math.sqrt(128 * 4096)
    assert 1 / curve.seconds_per_flop(mid) == pytest.approx((645 + 1358) / 2 * 1e12)
    assert curve.seconds_per_flop(1e6) == pytest.approx(curve.seconds_per_flop(4096))
    assert curve.seconds_per_flop(8) == pytest.approx(curve.seconds_per_flop(64))


def test_an_op_of_two_gemms_weighs_them_by_flops():
    gemms = [(2112, 7168), (24576, 1536)]
    curve = op_curve("h800", "fp8", gemms)
    a, b = 2112 * 7168, 24576 * 1536
    want = (a / (a + b)) / 1058e12 + (b / (a + b)) / 990e12
    assert curve.seconds_per_flop(4096) == pytest.approx(want)


def test_measurements_apply_only_where_they_were_taken():
    assert op_curve("h200", "fp8", [(H, O_IN)]) is None      # other HBM: not measured
    assert op_curve("h800", "bf16", [(H, O_IN)]) is None     # FP8 kernels only
    assert op_curve("h800", "fp8", [(H, O_IN), (8192, 8192)]) is None  # every GEMM or none
    h200 = make_devices("deepseek-v3", "h200", 8, tp=1, ep=8)[0]
    eff = h200.step_model.efficiency
    got = h200.explain(_prefill_per_gpu(h200, 4096))["o_proj"]
    roofline = 2 * 4096 * H * O_IN / (h200.gpu.fp8_flops * eff.compute)
    assert got == pytest.approx(LAYERS * (roofline + eff.kernel_overhead), rel=1e-9)


def test_routed_experts_use_the_grouped_layout_of_their_phase():
    experts = SimpleNamespace(flops_per_assignment=1.0, gemms=((4096, H), (H, 2048)))
    model = SimpleNamespace(weight_dtype="fp8", attention="mla", kv_dtype="bf16")
    on = SimpleNamespace(measured_kernels=True)
    k = MeasuredKernels([], experts, SimpleNamespace(name="h800"), model, on, 123.0)
    routed = SimpleNamespace(rank_load=512.0 * 4, rank_touched=4.0)  # 512 tokens an expert
    a, b = 4096 * H, H * 2048
    decode = (a / (a + b)) / (MASKED[(4096, H)][512] * 1e12) + \
        (b / (a + b)) / (MASKED[(H, 2048)][512] * 1e12)
    prefill = (a / (a + b)) / (CONTIGUOUS[(4096, H)][4096] * 1e12) + \
        (b / (a + b)) / (CONTIGUOUS[(H, 2048)][4096] * 1e12)
    assert k.expert_seconds(routed, True) == pytest.approx(decode)
    assert k.expert_seconds(routed, False) == pytest.approx(prefill)  # held flat below 4096
    plain = MeasuredKernels([], experts, SimpleNamespace(name="a100-80gb"), model, on, 123.0)
    assert plain.expert_seconds(routed, True) == 123.0
    off = MeasuredKernels([], experts, SimpleNamespace(name="h800"), model,
                          SimpleNamespace(measured_kernels=False), 123.0)
    assert off.expert_seconds(routed, True) == 123.0


def test_measured_kernels_slow_deepseek_down_on_h800_and_can_be_switched_off(h800):
    """DeepGEMM reaches 990-1358 TFLOPS at these shapes, below the roofline's 0.7 x 1979."""
    batch = _prefill_per_gpu(h800, 4096)
    plain = make_devices("deepseek-v3", "h800", 32, tp=1, ep=32,
                         efficiency={"measured_kernels": False})[0]
    assert h800.run(batch).cost.compute > 1.05 * plain.run(batch).cost.compute
    dense = make_devices("llama-3-70b", "h800", 8)[0]  # no published shapes: unchanged
    plain_dense = make_devices("llama-3-70b", "h800", 8,
                               efficiency={"measured_kernels": False})[0]
    b = Batch(range(8), [2048] * 8, [0] * 8)
    assert dense.run(b).duration == plain_dense.run(b).duration


def test_a_bad_switch_is_named():
    from batchlab.core import ConfigError
    with pytest.raises(ConfigError, match="measured_kernels"):
        make_devices("deepseek-v3", "h800", 32, tp=1, ep=32,
                     efficiency={"measured_kernels": "yes"})


def test_mla_decode_attention_runs_at_flashmlas_published_rates(h800):
    from batchlab.costmodel.ops import CD, QD
    sm = h800.step_model
    i, n = sm.op_names.index("attention"), sm._n
    # FLOPs per decode query-key pair, bytes per decode key read, as counted
    flops, nbytes = sm._M[2 * n + i, QD], sm._M[3 * n + i, CD]
    assert flops > 0 and nbytes > 0
    assert sm._M[i, QD] == pytest.approx(flops / 580e12)
    assert sm._M[n + i, CD] == pytest.approx(nbytes / 3000e9)
    h200 = make_devices("deepseek-v3", "h200", 8, tp=1, ep=8)[0].step_model
    eff, gpu = h200.efficiency, h200.gpu
    assert h200._M[i, QD] == pytest.approx(h200._M[2 * n + i, QD] / (gpu.bf16_flops
                                                                     * eff.compute))
