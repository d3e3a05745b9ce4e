"""The hooks of ContinuousBatching (rank_key, may_admit, max_num_seqs_on, token_budget_on):
each changes what it says and nothing else, and a bad hook is named."""

from __future__ import annotations

import attrs
import numpy as np
import pytest

from batchlab import AffineDevice, PolicyError, Request, StepResult, affine_devices, simulate
from batchlab.policies.continuous import ContinuousBatching
from batchlab.workloads import Workload


@attrs.define
class Longest(ContinuousBatching):
    name: str = attrs.field(default="longest-first", init=False)

    def rank_key(self, request):
        return -request.prompt_tokens


@attrs.define
class OnlyShortOnSmall(ContinuousBatching):
    """Prompts over 100 tokens may start only on device 'big'; 'small' holds 2 sequences and
    feeds 64 tokens a step."""

    name: str = attrs.field(default="only-short-on-small", init=False)

    def may_admit(self, request, device):
        return request.prompt_tokens <= 100 or device.name == "big"

    def max_num_seqs_on(self, device):
        return 2 if device.name == "small" else self.max_num_seqs

    def token_budget_on(self, device):
        return 64 if device.name == "small" else self.max_num_batched_tokens


def _step(policy, now, devices):
    plan = policy.schedule(now, devices)
    for name, batch in plan.batches.items():
        n = batch.num_seqs
        policy.update(batch, StepResult(0.01, emitted=np.ones(n, bool),
                                        finished=np.zeros(n, bool),
                                        num_generated=np.ones(n, np.int64)), now + 0.01)
    policy.check_valid()
    return plan


def test_rank_key_orders_admission():
    burst = Workload(np.zeros(12), np.arange(1, 13) * 100, np.full(12, 4))
    result = simulate(Longest(max_num_seqs=2, max_num_batched_tokens=4096,
                              chunked_prefill=False), burst, affine_devices(1))
    first = result.records["first_token"]
    # A longer prompt never starts later than a shorter one, and the longest start well first.
    assert (np.diff(first) <= 0).all() and first[0] > first[-1]


def test_default_rank_is_fcfs_and_priority_as_before():
    arrivals = np.arange(6) * 0.001
    burst = Workload(arrivals, np.full(6, 50), np.full(6, 4), priority=np.array([0, 0, 0, 5, 0, 9]))
    fcfs = simulate(ContinuousBatching(max_num_seqs=1), burst, affine_devices(1)).records
    prio = simulate(ContinuousBatching(max_num_seqs=1, order="priority"), burst,
                    affine_devices(1)).records
    assert np.argsort(fcfs["first_token"]).tolist() == [0, 1, 2, 3, 4, 5]
    # Request 0 is running when the others arrive; then higher priority first, ties by arrival.
    assert np.argsort(prio["first_token"]).tolist() == [0, 5, 3, 1, 2, 4]


def test_may_admit_and_per_device_limits():
    policy = OnlyShortOnSmall(max_num_seqs=8)
    small = AffineDevice(name="small", kv_capacity_tokens=8192)
    for rid, prompt in enumerate([500, 50, 60, 70, 80]):
        policy.add(Request(rid, 0.0, prompt, 8), 0.0)
    plan = _step(policy, 0.0, [small])
    batch = plan.batches["small"]
    # The 500-token prompt is refused on 'small'; two short ones fit its cap of 2 sequences,
    # within its 64-token budget (chunked prefill: 50 + 14).
    assert batch.request_ids.tolist() == [1, 2]
    assert batch.num_new_tokens.sum() <= 64
    assert policy.num_running_on(small) == 2 and policy.num_waiting() == 3
    big = AffineDevice(name="big", kv_capacity_tokens=8192)
    plan = _step(policy, 0.02, [big])
    assert plan.batches["big"].request_ids.tolist()[0] == 0  # its place kept: first in line


def test_rank_key_must_be_a_number():
    @attrs.define
    class Bad(ContinuousBatching):
        name: str = attrs.field(default="bad-rank", init=False)

        def rank_key(self, request):
            return (request.priority, request.prompt_tokens)

    with pytest.raises(PolicyError, match="'bad-rank'.*rank_key must return a number"):
        Bad().add(Request(0, 0.0, 10, 4), 0.0)
