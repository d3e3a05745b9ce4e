"""Multi-step plans end to end: a stretch of decode steps advanced in one go gives the same
records as the same steps planned one at a time, for every built-in policy that opts in; with
faults each batch runs one step; and a run that cannot progress, or a device that prices the
wrong number of steps, is named. The pieces (validator, KV manager, request table, stretch,
cost model) are checked in test_multistep_components.py."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchlab
from batchlab import AffineDevice, simulate
from batchlab.core import ConfigError
from batchlab.costmodel import make_devices
from batchlab.engines.faults import Faults
from batchlab.policies.continuous import ContinuousBatching
from batchlab.policies.discovery import available_policies, load_policy
from batchlab.workloads import Workload

# Built-in policies that plan multi-step batches: those with a max_num_steps parameter.
OPTED_IN = sorted(info.name for info in available_policies(include_broken=False)
                  if any(f.name == "max_num_steps" for f in attrs.fields(type(load_policy(
                      info.name)))) if attrs.has(type(load_policy(info.name))))
_COST_MODEL = make_devices("llama-3-8b", "h100", 2, dp=2)


class RunOnly:
    """A device with `run` only: the engine must price a stretch step by step."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.kv_capacity_tokens = inner.kv_capacity_tokens

    def run(self, batch):
        return self.inner.run(batch)


def test_continuous_opts_in():
    assert "continuous" in OPTED_IN


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 40))
    closed = draw(st.booleans()) and n > 1
    prompt = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    output = draw(st.lists(st.integers(1, 120), min_size=n, max_size=n))
    if closed:
        users = draw(st.integers(1, 4))
        arrival = np.full(n, np.nan)
        user = np.arange(n) % users
        arrival[:users] = 0.0
        think = np.array(draw(st.lists(st.floats(0, 0.5), min_size=n, max_size=n)))
        wl = Workload(arrival, prompt, output, user=user, think=think)
    else:
        gaps = draw(st.lists(st.floats(0, 0.4), min_size=n, max_size=n))
        prio = np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
        wl = Workload(np.cumsum(gaps), prompt, output, priority=prio)
    kind = draw(st.sampled_from(["affine", "affine", "cost-model", "run-only"]))
    num = draw(st.integers(1, 3))
    if kind == "cost-model":
        devices = _COST_MODEL[:min(num, 2)]
    else:
        # Small memories force preemptions; a zero fixed cost makes ties in time likely.
        cap = draw(st.sampled_from([600, 1500, 5000, 100_000]))
        devices = [AffineDevice(name=f"dev{i}", fixed=draw(st.sampled_from([0.0, 0.01, 0.003])),
                                per_token=draw(st.sampled_from([0.0, 1e-4])),
                                per_context_token=draw(st.sampled_from([0.0, 3e-7, 1e-5])),
                                kv_capacity_tokens=cap) for i in range(num)]
        if kind == "run-only":
            devices = [RunOnly(d) for d in devices]
    params = dict(max_num_seqs=draw(st.integers(1, 24)),
                  max_num_batched_tokens=draw(st.sampled_from([16, 64, 512, 4096])),
                  chunked_prefill=draw(st.booleans()),
                  order=draw(st.sampled_from(["fcfs", "priority"])),
                  block_size=draw(st.sampled_from([1, 4, 16])))
    return wl, devices, params


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.names is None:
        return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return all(_same(a[f], b[f]) for f in a.dtype.names)


@attrs.define
class AheadEverywhere(ContinuousBatching):
    """Continuous batching planning ahead on several devices too (it does on one only, for
    speed), so that concurrent stretches, cut by each other's steps, are checked as well."""

    def may_plan_ahead(self) -> bool:
        return True


def _policy(name, **params):
    if name == "continuous-everywhere":
        return AheadEverywhere(**params)
    return load_policy(name, **params)


@pytest.mark.parametrize("name", OPTED_IN + ["continuous-everywhere"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=scenarios(), max_steps=st.sampled_from([2, 5, 64]))
def test_multi_step_records_equal_single_step(name, case, max_steps):
    wl, devices, params = case
    if not name.startswith("continuous"):
        params = {}
    one = simulate(_policy(name, max_num_steps=1, **params), wl, devices, seed=1)
    policy = _policy(name, max_num_steps=max_steps, **params)
    many = simulate(policy, wl, devices, seed=1)
    policy.check_valid()
    assert _same(one.records, many.records)
    assert _same(one.devices, many.devices)  # the same sums, added in the same order
    for key in ("itl_p50_s", "itl_p90_s", "itl_p99_s"):
        assert _same(np.array(one.summary()[key]), np.array(many.summary()[key]))
    assert one.itl.num_gaps == many.itl.num_gaps
    assert many.num_events <= one.num_events


def test_stretches_cut_events_on_a_decode_heavy_run():
    wl = Workload(np.arange(20) * 2.0, np.full(20, 100), np.full(20, 400))
    one = simulate(load_policy("continuous", max_num_steps=1), wl, [AffineDevice()])
    many = simulate(load_policy("continuous"), wl, [AffineDevice()])
    assert _same(one.records, many.records)
    steps = int(one.devices["steps"][0])
    assert steps == int(many.devices["steps"][0]) >= 400
    assert many.num_events < steps / 10 < one.num_events


class _Counting(AffineDevice):
    """Logs what the engine asks of it: ("run", batch.num_steps) or ("run_steps", n)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        object.__setattr__(self, "calls", [])

    def run(self, batch):
        self.calls.append(("run", batch.num_steps))
        return super().run(batch)

    def run_steps(self, batch, num_steps):
        self.calls.append(("run_steps", num_steps))
        return super().run_steps(batch, num_steps)


def test_faults_run_every_batch_one_step():
    """With faults a multi-step plan still runs one step per launch (a failure may strike
    any step): the device is only ever asked for single steps, one per step or failure,
    and the run is the one that plans single steps, bit for bit."""
    wl = Workload(np.arange(10) * 0.1, np.full(10, 50), np.full(10, 60))
    faults = Faults(failure_rate=0.01, repair_time=0.1)
    dev = _Counting()
    r = simulate(load_policy("continuous"), wl, [dev], faults=faults, seed=2)
    s = r.summary()
    assert s["num_finished"] == 10 and s["failures"] > 0
    assert ("run", 64) in dev.calls                    # the policy did plan stretches
    assert {kind for kind, _ in dev.calls} == {"run"}  # never priced as a stretch
    assert len(dev.calls) == int(r.devices["steps"].sum()) + s["failures"]
    one = simulate(load_policy("continuous", max_num_steps=1), wl, [AffineDevice()],
                   faults=faults, seed=2)
    assert _same(one.records, r.records) and _same(one.devices, r.devices)


def test_failing_run_stops_with_a_clear_message():
    wl = Workload([0.0], [10], [5])
    with pytest.raises(batchlab.ConfigError, match="no progress.*failure_rate"):
        simulate(load_policy("continuous"), wl, [AffineDevice()], seed=0,
                 faults=Faults(failure_rate=0.999999, repair_time=1e-3))


def test_continuous_forgets_what_it_no_longer_needs():
    """Finished and aborted requests leave no sort key behind (memory would grow forever)."""
    wl = Workload(np.arange(50) * 0.01, np.full(50, 30), np.full(50, 5))
    policy = load_policy("continuous")
    simulate(policy, wl, [AffineDevice()])
    assert not policy._requests and not policy._where


def test_stretches_run_past_finishes_and_start_with_the_prefill():
    """Ten prompts at once, outputs 10..100 tokens: the admitting step leads a stretch, and
    rows leave it as they finish (nobody waits), so a handful of events do the 100 steps."""
    n = 10
    wl = Workload(np.zeros(n), np.full(n, 50), (np.arange(n) + 1) * 10)
    one = simulate(load_policy("continuous", max_num_steps=1), wl, [AffineDevice()])
    policy = load_policy("continuous")
    many = simulate(policy, wl, [AffineDevice()])
    policy.check_valid()
    assert _same(one.records, many.records) and _same(one.devices, many.devices)
    assert int(one.devices["steps"][0]) == int(many.devices["steps"][0]) == 100
    assert one.num_events == n + 100
    assert many.num_events <= n + 3  # the arrivals, then ceil(100 / 64) stretches
    assert (many.records["finish"][:-1] < many.records["finish"][1:]).all()


def test_a_finish_that_sends_a_follow_up_still_ends_the_stretch():
    """Closed loop: a user's next request arrives when the last one ends, so a stretch may
    not run past that finish."""
    wl = Workload(np.array([0.0, 0.0, np.nan]), [20, 20, 20], [5, 200, 5],
                  user=np.array([0, 1, 0]), think=np.zeros(3))
    one = simulate(load_policy("continuous", max_num_steps=1), wl, [AffineDevice()])
    many = simulate(load_policy("continuous"), wl, [AffineDevice()])
    assert _same(one.records, many.records)
    assert many.records["first_token"][2] < many.records["finish"][1]  # it joined the run


def test_continuous_plans_one_step_when_a_prompt_gets_a_one_token_chunk():
    """A running prompt can get a single leftover budget token, which does not finish it, so
    that step emits nothing for it: the policy must not plan a stretch around it."""
    n = 16
    wl = Workload(np.zeros(n), [1] * 15 + [100], [50] * n)
    runs = [batchlab.simulate(load_policy("continuous", max_num_batched_tokens=16,
                                          max_num_seqs=16, max_num_steps=k),
                              wl, [AffineDevice()]) for k in (1, 64)]
    assert np.array_equal(runs[0].records, runs[1].records)


class _Sloppy(AffineDevice):
    """Prices three steps more than it is asked for."""

    def price_decodes(self, rows, context, micro_batches):
        return None  # so the engine asks run_steps

    def run_steps(self, batch, num_steps):
        return super().run_steps(batch, num_steps + 3)


def test_a_device_that_prices_the_wrong_number_of_steps_is_named():
    wl = Workload(np.zeros(1), [10], [40])
    with pytest.raises(ConfigError, match="run_steps was asked for .* steps and returned"):
        batchlab.simulate(load_policy("continuous"), wl, [_Sloppy(name="sloppy")])
