"""The batch validator: every rule, each rejected with a message that names the policy."""

from __future__ import annotations

import pytest

from batchlab import AffineDevice, Batch, Plan, PolicyError, simulate

from conftest import Scripted, open_workload

DEV = AffineDevice(fixed=1.0, per_token=0.0, per_context_token=0.0, kv_capacity_tokens=100)


def run(*steps, arrival=(0.0, 0.0), prompt=(10, 95), output=(3, 3)):
    return simulate(Scripted(list(steps)), open_workload(list(arrival), list(prompt),
                                                         list(output)), [DEV])


def plan(batch, device="dev0"):
    return lambda now, devices, added: Plan({device: batch})


def ok_prefill(now, devices, added):
    return Plan({"dev0": Batch([0, 1], [10, 10], [0, 0])})


CASES = [
    ("batch-type", "not a batchlab Batch", [plan("not a batch")]),
    ("empty", "no rows", [plan(Batch([], [], []))]),
    ("known", "request 7 was never added", [plan(Batch([7], [1], [0]))]),
    ("known", "request 1 has not arrived yet",
     [lambda now, d, a: Plan({"dev0": Batch([1], [10], [0])})]),
    ("unique", "request 0 appears more than once", [plan(Batch([0, 0], [5, 5], [0, 0]))]),
    # ids in increasing order are checked without a sort, others with one: both ways
    ("unique", "request 1 appears more than once",
     [plan(Batch([1, 0, 1], [5, 5, 5], [0, 0, 0]))]),
    ("known", "request 7 was never added", [plan(Batch([0, 7], [1, 1], [0, 0]))]),
    ("known", "request 7 was never added", [plan(Batch([7, 0], [1, 1], [0, 0]))]),
    ("known", "request -1 was never added", [plan(Batch([-1, 0], [1, 1], [0, 0]))]),
    ("known", "request -1 was never added", [plan(Batch([0, -1], [1, 1], [0, 0]))]),
    ("tokens", "feeds 0 new tokens", [plan(Batch([0], [0], [0]))]),
    ("tokens", "claims -1 cached tokens", [plan(Batch([0], [1], [-1]))]),
    ("tokens", "only 10 exist", [plan(Batch([0], [11], [0]))]),
    ("tokens", "only 11 exist", [ok_prefill, plan(Batch([0], [2], [10]))]),
    ("cache", "claims 5 cached tokens but 10 are cached", [ok_prefill, plan(Batch([0], [1], [5]))]),
    ("memory", "needs 106 KV tokens but the device holds 100",
     [ok_prefill, plan(Batch([0, 1], [1, 95], [10, 0]))]),
    ("padding", "shorter than a row", [plan(Batch([0, 1], [10, 10], [0, 0], padded_len=8))]),
    ("memory", "needs 120 KV tokens", [plan(Batch([0, 1], [10, 10], [0, 0], padded_len=60))]),
    ("micro-batches", "num_micro_batches=3", [plan(Batch([0, 1], [10, 10], [0, 0],
                                                         num_micro_batches=3))]),
    # Not whole numbers: a bare TypeError from the fast path before (a str, None), or a
    # float priced as a fraction of a micro-batch, a padded length of 20.5 tokens.
    ("micro-batches", "num_micro_batches='2' must be a whole number",
     [plan(Batch([0, 1], [10, 10], [0, 0], num_micro_batches="2"))]),
    ("micro-batches", "num_micro_batches=None", [plan(Batch([0], [10], [0],
                                                            num_micro_batches=None))]),
    ("micro-batches", "num_micro_batches=1.5", [plan(Batch([0, 1], [10, 10], [0, 0],
                                                           num_micro_batches=1.5))]),
    ("padding", "padded_len='64' is not a whole number",
     [plan(Batch([0], [10], [0], padded_len="64"))]),
    ("padding", "padded_len=20.5 is not a whole number",
     [plan(Batch([0], [10], [0], padded_len=20.5))]),
    ("device", "device 'gpu9', but no such device", [plan(Batch([0], [10], [0]), "gpu9")]),
    ("plan-type", "returned dict, not a Plan", [lambda now, d, a: {}]),
    ("wake", "not after now", [lambda now, d, a: Plan(wake_at=now)]),
    # Not a time: a bare TypeError from the comparison before; inf moved the clock to inf.
    ("wake", "at 'soon', which is not a time", [lambda now, d, a: Plan(wake_at="soon")]),
    ("wake", "at inf, which is not a finite time",
     [lambda now, d, a: Plan(wake_at=float("inf"))]),
    ("wake", "at nan, which is not a finite time",
     [lambda now, d, a: Plan(wake_at=float("nan"))]),
    ("reject", "rejected request 5", [lambda now, d, a: Plan(rejected=[5])]),
    # Not ids: 0.5 rejected request 0 without a word before, 'x' or None a bare error.
    ("reject", "named request 0.5 in its plan", [lambda now, d, a: Plan(rejected=[0.5])]),
    ("reject", "named request 'x' in its plan", [lambda now, d, a: Plan(rejected=["x"])]),
    ("migration", "named request None in its plan",
     [lambda now, d, a: Plan(migrations={None: "dev0"})]),
]


@pytest.mark.parametrize("rule,message,steps", CASES, ids=[f"{c[0]}:{c[1][:20]}" for c in CASES])
def test_each_rule_is_rejected_with_its_name(rule, message, steps):
    with pytest.raises(PolicyError) as info:
        run(*steps, arrival=(0.0, 0.0) if "not arrived" not in message else (0.0, 5.0))
    assert info.value.rule == rule
    assert info.value.policy == "scripted"
    assert message in str(info.value)
    assert str(info.value).startswith("policy 'scripted' broke rule")


def test_closed_request_cannot_run_again():
    steps = [plan(Batch([0], [10], [0])) for _ in range(2)]
    with pytest.raises(PolicyError, match="request 0 is already finished"):
        run(*steps, arrival=(0.0,), prompt=(10,), output=(1,))


def test_in_flight_request_cannot_run_on_a_second_device():
    devs = [AffineDevice(name="a", fixed=1.0), AffineDevice(name="b", fixed=1.0)]
    both = lambda now, d, a: Plan({"a": Batch([0], [10], [0]), "b": Batch([0], [10], [0])})
    with pytest.raises(PolicyError) as info:
        simulate(Scripted([both]), open_workload([0.0], [10], [2]), devs)
    assert info.value.rule == "in-flight"


def test_continuing_a_cache_that_lives_elsewhere_is_rejected():
    devs = [AffineDevice(name="a", fixed=1.0), AffineDevice(name="b", fixed=1.0)]
    first = lambda now, d, a: Plan({"a": Batch([0], [10], [0])})
    moved = lambda now, d, a: Plan({"b": Batch.decode([0], [10])})
    with pytest.raises(PolicyError, match="lives on another device"):
        simulate(Scripted([first, moved]), open_workload([0.0], [10], [2]), devs)


@pytest.mark.parametrize("ids", [[0.7], [float("nan")], [True]])
def test_a_batch_of_rows_that_are_not_whole_numbers_is_refused_not_truncated(ids):
    # Before: Batch([0.7], ...) ran request 0 without a word (numpy truncates the float).
    with pytest.raises(ValueError, match="whole numbers"):
        Batch(ids, [1], [0])
    with pytest.raises(PolicyError, match="schedule.. raised ValueError: Batch rows hold"):
        run(lambda now, d, a: Plan({"dev0": Batch(ids, [10], [0])}))
    assert Batch([0.0, 2.0], [1, 1], [3, 3]).request_ids.tolist() == [0, 2]
