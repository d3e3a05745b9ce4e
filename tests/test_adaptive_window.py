"""Adaptive window: it finds a window that meets a latency target, from either side."""

from __future__ import annotations

import numpy as np
import pytest

import batchlab
from batchlab import AffineDevice, Request, StepResult, affine_devices, load_policy, simulate
from batchlab.workloads import make_workload

LIGHT = make_workload("poisson", rate=2.0, num_requests=150, prompt="lognormal:256:0.5",
                      output="lognormal:32:0.5")


def _run(name, **params):
    policy = load_policy(name, **params)
    result = simulate(policy, LIGHT, affine_devices(1), seed=1)
    policy.check_valid()
    summary = result.summary()
    assert summary["num_finished"] == 150
    return policy, summary, float(result.devices["busy_time"].sum())


def test_a_window_too_long_for_the_target_is_shrunk():
    _, fixed, _ = _run("fixed-window", window=1.0)
    policy, adaptive, _ = _run("adaptive-window", window=1.0, target=0.3)
    # Measured: TTFT p50 0.82 s with the fixed 1 s window; the controller settles near
    # 0.18 s and gets 0.17 s (p90 0.40 s, the target steers each cohort's oldest member).
    assert policy.window < 0.3 and policy.num_adjustments > 0
    assert adaptive["ttft_p50_s"] < 0.3 < fixed["ttft_p50_s"]
    assert adaptive["ttft_p90_s"] < 0.5 * fixed["ttft_p90_s"]


def test_a_generous_target_buys_fuller_batches():
    _, fixed, fixed_busy = _run("fixed-window", window=0.005)
    policy, adaptive, adaptive_busy = _run("adaptive-window", window=0.005, target=2.0)
    # Measured: the window grows to max_window (1 s); the device is busy 31 s instead of
    # 47 s for the same requests, and TTFT p99 stays at 1.2 s, under the 2 s target.
    assert policy.window == policy.max_window
    assert adaptive_busy < 0.75 * fixed_busy
    assert fixed["ttft_p99_s"] < adaptive["ttft_p99_s"] < 2.0


def test_end_to_end_metric_is_steered_too():
    policy, summary, _ = _run("adaptive-window", window=1.0, metric="e2e", target=0.8)
    assert policy.window < 1.0
    assert summary["e2e_p50_s"] < 0.8


def _result(n, first, finished):
    return StepResult(0.01, emitted=np.ones(n, bool), finished=np.asarray(finished, bool),
                      num_generated=np.full(n, 1 if first else 2, np.int64))


def test_observes_first_tokens_and_forgets_finished_requests():
    policy = load_policy("adaptive-window", window=0.1, target=1.0, max_batch=2)
    dev = AffineDevice()
    policy.add(Request(0, 0.0, 16, 4), 0.0)
    policy.add(Request(1, 0.5, 16, 4), 0.5)
    batch = policy.schedule(0.5, [dev]).batches["dev0"]
    policy.update(batch, _result(2, True, [False, True]), 2.0)   # worst TTFT 2 s > 1 s
    assert policy.window == pytest.approx(0.05)
    decode = policy.schedule(2.0, [dev]).batches["dev0"]
    policy.update(decode, _result(1, False, [True]), 2.1)         # no first token: no change
    assert policy.window == pytest.approx(0.05) and policy.num_adjustments == 1
    policy.check_valid()
    assert not policy._arrival


def test_abort_forgets_the_request():
    policy = load_policy("adaptive-window")
    policy.add(Request(0, 0.0, 16, 4), 0.0)
    policy.abort(0)
    assert not policy._arrival
    assert policy.schedule(1.0, [AffineDevice()]).batches == {}


@pytest.mark.parametrize("params,message", [
    ({"target": 0}, "target must be > 0"),
    ({"increase": 1.0}, "increase must be > 1"),
    ({"decrease": 1.5}, "decrease must be between 0 and 1"),
    ({"metric": "tpot"}, "metric must be 'ttft' or 'e2e'"),
    ({"min_window": 0.5, "max_window": 0.1}, "min_window"),
    # asked for 5 s, it used to run at max_window's 1 s without a word
    ({"window": 5.0},
     r"window \(5.0\) must lie within \[min_window, max_window\] = \[0.001, 1.0\]"),
])
def test_bad_parameters_are_config_errors(params, message):
    with pytest.raises(batchlab.ConfigError, match=f"policy 'adaptive-window'.*{message}"):
        load_policy("adaptive-window", **params)


def test_the_default_window_moves_into_a_narrowed_range():
    assert load_policy("adaptive-window", max_window=0.01).window == 0.01
    assert load_policy("adaptive-window", min_window=0.2).window == 0.2
