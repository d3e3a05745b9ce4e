"""Properties every Result has, for every installed policy, over random workloads and clusters:

- Little's law: the time-average number of requests in the system equals throughput times
  mean time in system; measured by sampling the system at random instants, it agrees within
  sampling error (and exactly, when integrated);
- throughput never exceeds what the device's step-time model allows at the largest batch it
  could ever run (one token for each of kv_capacity_tokens rows);
- metrics do not depend on how requests are numbered.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from batchlab import AffineDevice, Batch, Workload, simulate
from batchlab.policies.discovery import available_policies
from batchlab.workloads import LogNormalLength, Poisson, WorkloadSpec

POLICIES = {i.name: i.factory for i in available_policies(include_broken=False)}
# A fifth of the profile's examples: 20 in CI, 400 under HYPOTHESIS_PROFILE=long.
EXAMPLES = max(10, settings.default.max_examples // 5)


@functools.cache
def _cost_model_devices(preset: str) -> tuple:
    costmodel = pytest.importorskip("batchlab.costmodel")
    model, gpu, gpus = preset.split(":")
    return tuple(costmodel.make_devices(model, gpu, int(gpus)))


@st.composite
def runs(draw):
    """(policy name, workload spec, devices, seed)."""
    name = draw(st.sampled_from(sorted(POLICIES)))
    kind = draw(st.sampled_from(["affine"] * 4 + ["llama-3-8b:h100:1", "mixtral-8x7b:h100:2"]))
    if kind == "affine":
        capacity = draw(st.sampled_from([4096, 16_384, 131_072]))
        devices = [AffineDevice(name=f"dev{i}", fixed=draw(st.floats(1e-3, 0.05)),
                                per_token=draw(st.floats(0.0, 1e-3)),
                                per_context_token=draw(st.floats(0.0, 1e-6)),
                                kv_capacity_tokens=capacity)
                   for i in range(draw(st.integers(1, 3)))]
    else:
        devices = list(_cost_model_devices(kind))
        capacity = devices[0].kv_capacity_tokens
    longest = min(capacity // 4, 4000)
    spec = WorkloadSpec(
        Poisson(draw(st.floats(0.5, 200.0))),
        LogNormalLength(draw(st.floats(1.0, 600.0)), draw(st.floats(0.0, 2.0)), longest),
        LogNormalLength(draw(st.floats(1.0, 100.0)), draw(st.floats(0.0, 2.0)), longest),
        draw(st.integers(5, 80)))
    return name, spec, devices, draw(st.integers(0, 2**16))


@settings(max_examples=EXAMPLES)
@given(runs())
def test_littles_law(run):
    name, spec, devices, seed = run
    result = simulate(POLICIES[name](), spec, devices, seed=seed)
    summary, fin = result.summary(), result.finished
    if fin.size == 0:
        return
    start, end = float(np.nanmin(result.records["arrival"])), float(fin["finish"].max())
    span = end - start
    assert span == pytest.approx(summary["makespan_s"])
    lam_w = summary["throughput_rps"] * summary["e2e_mean_s"]
    # Integrated: the area under N(t) is the sum of the times in system.
    times = np.concatenate([fin["arrival"], fin["finish"]])
    steps = np.concatenate([np.ones(fin.size), -np.ones(fin.size)])
    order = np.lexsort((steps, times))   # at equal times departures first: no overlap counted
    in_system = np.cumsum(steps[order])
    area = float(np.sum(in_system[:-1] * np.diff(times[order])))
    assert area / span == pytest.approx(lam_w, rel=1e-9, abs=1e-12)
    # Sampled: N at random instants, whose mean is within a few standard errors of lambda W.
    instants = np.random.default_rng(seed).uniform(start, end, 4000)
    counts = ((fin["arrival"][None, :] <= instants[:, None])
              & (instants[:, None] < fin["finish"][None, :])).sum(axis=1)
    error = counts.std() / math.sqrt(counts.size)
    assert abs(counts.mean() - lam_w) <= 5 * error + 1e-9


def _largest_batch_rate(device) -> float:
    """Tokens per second of the largest batch the device could run: kv_capacity_tokens rows
    of one token each. Every step emits at most one token per row and takes at least as long
    as such a batch of its size, and tokens per second grows with the batch."""
    rows = int(device.kv_capacity_tokens)
    batch = Batch(np.arange(rows), np.ones(rows, np.int64), np.zeros(rows, np.int64))
    return rows / device.run(batch).duration


@settings(max_examples=EXAMPLES)
@given(runs())
def test_throughput_never_exceeds_the_largest_batch(run):
    name, spec, devices, seed = run
    result = simulate(POLICIES[name](), spec, devices, seed=seed)
    bounds = np.array([_largest_batch_rate(d) for d in devices])
    dev = result.devices
    busy = dev["busy_time"] > 0
    assert (dev["output_tokens"][busy] <= bounds[busy] * dev["busy_time"][busy] * (1 + 1e-9)).all()
    rate = result.summary()["output_tokens_per_s"]
    if math.isfinite(rate):
        assert rate <= bounds.sum() * (1 + 1e-9)


@settings(max_examples=EXAMPLES)
@given(runs(), st.randoms(use_true_random=False))
def test_metrics_do_not_depend_on_request_ids(run, rnd):
    name, spec, devices, seed = run
    wl = spec.sample(np.random.default_rng(seed))
    # Distinct arrival times: at equal times the engine orders arrivals by id.
    arrival = np.maximum.accumulate(wl.arrival) + np.arange(wl.num_requests) * 1e-9
    wl = Workload(arrival, wl.prompt_tokens, wl.output_tokens, max_new_tokens=wl.max_new_tokens)
    perm = np.array(rnd.sample(range(wl.num_requests), wl.num_requests))
    relabelled = Workload(arrival[perm], wl.prompt_tokens[perm], wl.output_tokens[perm],
                          max_new_tokens=wl.max_new_tokens)
    a = simulate(POLICIES[name](), wl, devices, seed=seed)
    b = simulate(POLICIES[name](), relabelled, devices, seed=seed)
    fields = [f for f in a.records.dtype.names if f != "id"]
    for field in fields:   # new request i is old request perm[i]
        np.testing.assert_array_equal(b.records[field], a.records[field][perm], err_msg=field)
    sa, sb = a.summary(), b.summary()
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        if isinstance(value, float) and not math.isnan(value):
            assert sb[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        elif key != "workload":
            assert sb[key] == value or (value != value and sb[key] != sb[key]), key
