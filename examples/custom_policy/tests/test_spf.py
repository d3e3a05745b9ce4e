"""The plugin's own tests, as its author would write them (run: pytest examples/custom_policy)."""

import numpy as np

from batchlab import AffineDevice, affine_devices, load_policy, simulate
from batchlab.core import Request, StepResult
from batchlab.testing import check_policy
from batchlab.workloads import Workload

from batchlab_spf import ShortestPromptFirst


def test_conforms():
    """The conformance kit (pip install 'batchlab[kit]'): random arrivals, steps, aborts and
    device failures against the contract; a failure prints a shrunk counterexample."""
    check_policy(ShortestPromptFirst)


def _request(rid, prompt, max_new=4):
    return Request(id=rid, arrival=0.0, prompt_tokens=prompt, max_new_tokens=max_new)


def _done(batch, finished=()):
    """A StepResult for `batch`: every row emits; the rows in `finished` end."""
    done = np.isin(batch.request_ids, list(finished))
    return StepResult(0.01, emitted=np.ones(batch.num_seqs, bool), finished=done,
                      num_generated=np.ones(batch.num_seqs, np.int64))


def test_by_hand_shortest_first_budget_and_aborts():
    """Driven by hand, as the engine would: the edge cases, one step at a time."""
    policy, device = ShortestPromptFirst(max_prefill_tokens=300), AffineDevice()
    for rid, prompt in ((0, 250), (1, 40), (2, 100), (3, 60)):
        policy.add(_request(rid, prompt), now=0.0)
    # Shortest first, within the prefill budget: 40 + 60 + 100 fit in 300, 250 does not.
    batch = policy.schedule(0.0, [device]).batches[device.name]
    assert batch.request_ids.tolist() == [1, 3, 2]
    assert batch.num_new_tokens.tolist() == [40, 60, 100]
    policy.abort(3)  # in flight: its row stays until the step comes back
    policy.update(batch, _done(batch, finished=[1]), now=0.01)
    policy.check_valid()
    # Request 1 finished and 3 was aborted: only 2 decodes, and the long prompt is admitted.
    batch = policy.schedule(0.01, [device]).batches[device.name]
    assert batch.request_ids.tolist() == [2, 0]
    assert batch.num_new_tokens.tolist() == [1, 250]
    assert batch.num_cached_tokens.tolist() == [100, 0]
    policy.add(_request(4, 10), now=0.015)
    policy.abort(4)  # still waiting: it never runs
    policy.update(batch, _done(batch), now=0.02)
    batch = policy.schedule(0.02, [device]).batches[device.name]
    assert batch.request_ids.tolist() == [2, 0]
    assert batch.num_new_tokens.tolist() == [1, 1]
    policy.check_valid()


def test_found_by_name_and_runs_everything():
    policy = load_policy("shortest-prompt-first", max_num_seqs=8)
    burst = Workload(np.zeros(40), np.arange(40, 0, -1) * 50, np.full(40, 16))
    result = simulate(policy, burst, affine_devices(1))
    policy.check_valid()
    assert result.summary()["num_finished"] == 40
    first = result.records["first_token"]
    # the shortest prompts (the last ids) get their first token first
    assert first[-1] < first[0]
