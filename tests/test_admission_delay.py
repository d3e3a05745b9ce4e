"""Continuous batching's two windows: `admission_delay` holds new prompts while sequences
run (vLLM's scheduler delay) and never holds decodes; `window` delays every step."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import batchlab
from batchlab.backends.affine import affine_devices
from batchlab.testing import check_policy
from batchlab.workloads import make_workload


def _run(**knobs):
    spec = make_workload("constant", rate=20.0, num_requests=12, prompt="64", output="100")
    return batchlab.simulate(batchlab.load_policy("continuous", **knobs), spec,
                             affine_devices(1), seed=0)


@pytest.mark.parametrize("delay", [0.12, 0.2])  # longer than the 50 ms between arrivals
def test_prompts_arriving_during_decodes_wait_for_the_oldest_to_wait_the_delay(delay):
    rec = _run(admission_delay=delay).records
    assert rec["first_scheduled"][0] == pytest.approx(rec["arrival"][0])  # idle: at once
    groups = {}
    for start, arrival in zip(rec["first_scheduled"][1:], rec["arrival"][1:]):
        groups.setdefault(round(float(start), 9), []).append(float(arrival))
    # Each admission waits until the oldest prompt in it has waited the delay, and takes
    # every prompt waiting then: fewer, fuller prefill steps than without the delay.
    for start, arrivals in groups.items():
        assert start >= min(arrivals) + delay - 1e-9
    plain = _run().records
    assert len(groups) < len(set(np.round(plain["first_scheduled"][1:], 9)))


def test_admission_delay_leaves_decodes_alone_and_window_does_not():
    plain = _run().summary()
    held = _run(admission_delay=0.2).summary()
    ticked = _run(window=0.2).summary()
    assert held["ttft_p50_s"] > plain["ttft_p50_s"] + 0.1
    # Decodes keep their pace under an admission delay (fewer prefills interleave)...
    assert held["tpot_p50_s"] <= plain["tpot_p50_s"] * 1.05
    # ...but a step window makes every token wait.
    assert ticked["tpot_p50_s"] > 2 * plain["tpot_p50_s"]


def test_admission_delay_passes_the_conformance_kit():
    check_policy(functools.partial(batchlab.load_policy, "continuous", admission_delay=0.05),
                 max_examples=15)
