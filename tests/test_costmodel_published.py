"""The cost model against published measurements, with default efficiencies (nothing fitted).

Each figure's source sits next to its test. The tolerance is 25%, as issue 3 asks: a roofline
with honest defaults should land within that of real kernels on the configurations it was
not fitted to.
"""

from __future__ import annotations

import pytest

from batchlab.core import Batch
from batchlab.costmodel import make_devices

TOLERANCE = 0.25


def _within(predicted: float, published: float) -> None:
    assert predicted == pytest.approx(published, rel=TOLERANCE), (
        f"predicted {predicted * 1e3:.2f} ms vs published {published * 1e3:.2f} ms")


@pytest.fixture(scope="module")
def opt13b_a100():
    return make_devices("opt-13b", "a100-40gb", 1)[0]


# kipply, "Transformer Inference Arithmetic" (2022), section "Comparing against real
# benchmarks": a 13B model (40 layers, d_model 5120, 40 heads; the OPT-13B shape) on one
# A100 40GB with FasterTransformer, batch 1, 512-token context: prefill 63.17 ms, decode
# 22.0 ms per token. The table is reproduced in the cli99/llm-analysis repository's
# FasterTransformer example ("empirical" column).
def test_13b_prefill_512_tokens_on_a100_40gb(opt13b_a100):
    duration = opt13b_a100.run(Batch([0], [512], [0])).duration
    _within(duration, 63.17e-3)


def test_13b_decode_per_token_on_a100_40gb(opt13b_a100):
    duration = opt13b_a100.run(Batch.decode([0], [512])).duration
    _within(duration, 22.0e-3)


# Issue 3's figure: Llama-3-8B in bf16 on one H100 decoding 10 sequences takes about 7 ms
# per step (vLLM-class engine). The context length is not given; 1,000 cached tokens per
# sequence is a typical chat turn and the result moves by under 0.5 ms between 100 and 2,000.
def test_llama3_8b_decode_10_sequences_on_h100():
    dev = make_devices("llama-3-8b", "h100", 1)[0]
    duration = dev.run(Batch.decode(range(10), [1000] * 10)).duration
    _within(duration, 7.0e-3)


def test_the_published_cases_are_bound_where_they_should_be(opt13b_a100):
    """Prefill of 512 tokens is compute-bound, decode at batch 1 is memory-bound: the roofline
    agrees with the published figures for the right reason, not by luck of the constants."""
    prefill = opt13b_a100.run(Batch([0], [512], [0])).cost
    decode = opt13b_a100.run(Batch.decode([0], [512])).cost
    assert prefill.compute > 0.8 * (prefill.compute + prefill.memory)
    assert decode.memory > 0.95 * (decode.compute + decode.memory)
