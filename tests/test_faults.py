"""Fault injection: devices fail mid-step and come back; lost work is recomputed, nothing is lost
or finished twice; and a policy that misbehaves is stopped with its name and the rule.

The protocol a failure follows (batchlab.engines.faults): a policy with `lost(device, batch,
now)` is told so; one without it gets `update` with nothing emitted, then `abort` and `add`
again for each request whose cache was lost, its generated tokens appended to its prompt.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import Phase, settings

from batchlab import AffineDevice, Batch, Plan, PolicyError, affine_devices, simulate
from batchlab.engines.faults import Faults
from batchlab.core.table import FINISHED
from batchlab.policies.discovery import available_policies
from batchlab.testing import check_policy
from batchlab.workloads import make_workload

from conftest import Scripted, open_workload
from test_conformance import Greedy

SLOW = AffineDevice(fixed=1.0, per_token=0.0, per_context_token=0.0)
TRAFFIC = make_workload("poisson", rate=30.0, num_requests=150, prompt="lognormal:200:1.0:1500",
                        output="lognormal:40:1.0:200")


@pytest.mark.parametrize("factory", [pytest.param(i.factory, id=i.name)
                                     for i in available_policies(include_broken=False)])
def test_every_request_finishes_exactly_once_when_steps_fail(factory):
    """About 4% of steps fail; every request still finishes once, with all its tokens."""
    policy = factory()
    faults = Faults(failure_rate=0.04, repair_time=0.05, seed=3)
    result = simulate(policy, TRAFFIC, affine_devices(2, kv_capacity_tokens=16_384), seed=1,
                      faults=faults)
    truth = TRAFFIC.sample(np.random.default_rng(1)).output_tokens
    rec, summary = result.records, result.summary()
    assert (rec["status"] == FINISHED).all()
    assert (rec["output_tokens"] == truth).all()          # nothing lost, nothing twice
    assert (rec["arrival"] <= rec["first_token"]).all()
    assert (rec["first_token"] <= rec["finish"]).all()
    steps, failures = int(result.devices["steps"].sum()), summary["failures"]
    assert 0.01 < failures / (steps + failures) < 0.1     # "a few percent of steps"
    assert summary["recomputed_tokens"] > 0
    if hasattr(policy, "check_valid"):
        policy.check_valid()


def test_same_seed_same_failures_and_no_faults_is_no_change():
    def run(faults):
        return simulate(Greedy(), TRAFFIC, affine_devices(2, kv_capacity_tokens=8192), seed=2,
                        faults=faults)

    a, b = run(Faults(failure_rate=0.05, seed=1)), run(Faults(failure_rate=0.05, seed=1))
    assert a.records.tobytes() == b.records.tobytes() and a.devices.tobytes() == b.devices.tobytes()
    assert run(Faults(failure_rate=0.05, seed=2)).records.tobytes() != a.records.tobytes()
    # A Faults that never fails changes nothing, bit for bit.
    assert run(Faults()).records.tobytes() == run(None).records.tobytes()


def _one_request_script():
    """Prefill at t=0..1 (token 1), a decode at t=1 that the failure at 1.5 loses, then after
    the repair (t=2) a recompute of prompt + 1 token (token 2, t=3) and a decode (token 3)."""
    return [
        lambda now, d, a: Plan({"dev0": Batch([0], [4], [0])}),
        lambda now, d, a: Plan({"dev0": Batch.decode([0], [4])}),
        lambda now, d, a: Plan({"dev0": Batch([0], [5], [0])}),
        lambda now, d, a: Plan({"dev0": Batch.decode([0], [5])}),
    ]


def test_a_lost_step_is_handed_back_through_calls_every_policy_knows():
    policy = Scripted(_one_request_script())
    faults = Faults(schedule=[(1.5, "dev0")], repair_time=0.5)
    result = simulate(policy, open_workload([0.0], [4], [3], max_new_tokens=8), [SLOW],
                      faults=faults)
    assert policy.log[4:8] == [("update", 1.5, (0,)), ("abort", 0), ("add", 1.5, 0),
                               ("schedule", 2.0, ("dev0",))]   # nothing offered while down
    lost_batch, lost_result, _ = policy.updates[1]
    assert not lost_result.emitted.any() and not lost_result.finished.any()
    assert lost_result.num_generated.tolist() == [1] and lost_result.duration == 0.5
    again = policy.added[-1]
    assert (again.id, again.arrival, again.prompt_tokens, again.max_new_tokens) == (0, 0.0, 5, 7)
    rec = result.records[0]
    assert (rec["output_tokens"], rec["finish"], rec["first_token"]) == (3, 4.0, 1.0)
    assert rec["preemptions"] == 0                     # a failure is not a preemption
    assert result.summary()["failures"] == 1
    assert result.summary()["recomputed_tokens"] == 4  # the prompt's cache was destroyed
    assert result.devices["busy_time"][0] == 3.5       # 3 steps + the half step that failed


def test_a_policy_with_lost_is_told_directly():
    calls = []

    class Told(Scripted):
        def lost(self, device_name, batch, now):
            calls.append((device_name, batch.request_ids.tolist(), now))

    policy = Told(_one_request_script())
    result = simulate(policy, open_workload([0.0], [4], [3], max_new_tokens=8), [SLOW],
                      faults=Faults(schedule=[(1.5, "dev0")], repair_time=0.5))
    assert calls == [("dev0", [0], 1.5)]
    assert [entry[0] for entry in policy.log].count("abort") == 0
    assert result.records[0]["output_tokens"] == 3


def test_an_idle_device_that_fails_loses_the_caches_it_holds():
    policy = Scripted([
        lambda now, d, a: Plan({"dev0": Batch([0], [4], [0])}),   # t=0..1, then idle
        lambda now, d, a: Plan(),
        lambda now, d, a: Plan({"dev0": Batch([0], [5], [0])}),   # after the repair
    ])
    result = simulate(policy, open_workload([0.0], [4], [2]), [SLOW],
                      faults=Faults(schedule=[(1.2, "dev0")], repair_time=0.3))
    assert ("abort", 0) in policy.log and policy.added[-1].prompt_tokens == 5
    assert result.records[0]["finish"] == 2.5
    assert result.summary()["recomputed_tokens"] == 4


def test_a_failure_before_the_first_step_strikes_at_it():
    """Policies learn the cluster from the first schedule call, so no device is down then."""
    policy = Scripted(_one_request_script()[:1] + [
        lambda now, d, a: Plan({"dev0": Batch([0], [4], [0])}),
        lambda now, d, a: Plan({"dev0": Batch.decode([0], [4])})])
    simulate(policy, open_workload([1.0], [4], [2]), [SLOW],
             faults=Faults(schedule=[(0.5, "dev0")], repair_time=0.5))
    assert policy.log[1] == ("schedule", 1.0, ("dev0",))
    assert policy.log[2:5] == [("update", 1.0, (0,)), ("abort", 0), ("add", 1.0, 0)]


# -- a policy that misbehaves is stopped, named, with the rule -----------------------------

def _first(now, devices, added):
    return Plan({devices[0].name: Batch([added[0].id], [added[0].prompt_tokens], [0])})


MISBEHAVIOURS = [
    ("raised", [lambda now, d, a: {}["boom"]]),
    ("plan-type", [lambda now, d, a: {"dev0": Batch([0], [4], [0])}]),
    ("batch-type", [lambda now, d, a: Plan({"dev0": [0, 4, 0]})]),
    ("device", [lambda now, d, a: Plan({"gpu9": Batch([0], [4], [0])})]),
    ("empty", [lambda now, d, a: Plan({"dev0": Batch([], [], [])})]),
    ("unique", [lambda now, d, a: Plan({"dev0": Batch([0, 0], [2, 2], [0, 0])})]),
    ("known", [lambda now, d, a: Plan({"dev0": Batch([7], [4], [0])})]),
    ("tokens", [lambda now, d, a: Plan({"dev0": Batch([0], [9], [0])})]),
    ("memory", [lambda now, d, a: Plan({"dev0": Batch([0], [4], [0])})]),
    ("closed", [_first, _first]),
    ("wake", [lambda now, d, a: Plan(wake_at=now)]),
    ("reject", [lambda now, d, a: Plan(rejected=[5])]),
]


@pytest.mark.parametrize("rule,script", [pytest.param(r, s, id=r) for r, s in MISBEHAVIOURS])
def test_a_misbehaving_policy_is_stopped_with_its_name_and_the_rule(rule, script):
    device = AffineDevice(kv_capacity_tokens=3 if rule == "memory" else 1000)
    with pytest.raises(PolicyError) as info:
        simulate(Scripted(script), open_workload([0.0], [4], [1]), [device])
    assert (info.value.policy, info.value.rule) == ("scripted", rule)
    assert str(info.value).startswith(f"policy 'scripted' broke rule '{rule}': ")


def test_a_lost_hook_that_raises_is_named():
    class Fragile(Scripted):
        def lost(self, device_name, batch, now):
            raise RuntimeError("cannot recover")

    with pytest.raises(PolicyError, match=r"'scripted' broke rule 'raised': lost\(\) raised "
                                          "RuntimeError: cannot recover"):
        simulate(Fragile(_one_request_script()), open_workload([0.0], [4], [3]), [SLOW],
                 faults=Faults(schedule=[(1.5, "dev0")]))


# -- the kit checks the lost() hook too -----------------------------------------------------

class GreedyLost(Greedy):
    """Greedy with a lost() hook: everything resident on the failed device is recomputed."""

    forgets_caches: bool = False

    def lost(self, device_name, batch, now):
        if batch is not None:
            self._launched.pop(id(batch))
            self._aborted.difference_update(batch.request_ids.tolist())
        if self.forgets_caches:   # the bug: believes the caches survived the failure
            return
        resident = self._resident[device_name]
        for rid in reversed(list(resident)):
            self._kv[device_name].free(rid)
            self._waiting.appendleft(rid)
        resident.clear()
        self._parked[device_name].clear()


class GreedyLostForgets(GreedyLost):
    forgets_caches = True


def test_the_kit_passes_a_policy_whose_lost_hook_recomputes():
    check_policy(GreedyLost, max_examples=60, determinism=False)


def test_the_kit_catches_a_lost_hook_that_keeps_dead_caches():
    with pytest.raises(PolicyError) as info:
        check_policy(GreedyLostForgets, max_examples=200, determinism=False, step_count=20,
                     settings=settings(database=None, derandomize=True,
                                       phases=[Phase.generate]))
    assert info.value.rule == "cache"
    assert "continue from" in str(info.value) or "recompute it from 0" in str(info.value)
