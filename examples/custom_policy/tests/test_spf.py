"""The plugin's own tests, as its author would write them (run: pytest examples/custom_policy)."""

import numpy as np

from batchlab import affine_devices, load_policy, simulate
from batchlab.testing import check_policy
from batchlab.workloads import Workload

from batchlab_spf import ShortestPromptFirst


def test_conforms():
    """The conformance kit (pip install 'batchlab[kit]'): random arrivals, steps, aborts and
    device failures against the contract; a failure prints a shrunk counterexample."""
    check_policy(ShortestPromptFirst)


def test_found_by_name_and_runs_everything():
    policy = load_policy("shortest-prompt-first", max_num_seqs=8)
    burst = Workload(np.zeros(40), np.arange(40, 0, -1) * 50, np.full(40, 16))
    result = simulate(policy, burst, affine_devices(1))
    policy.check_valid()
    assert result.summary()["num_finished"] == 40
    first = result.records["first_token"]
    # the shortest prompts (the last ids) get their first token first
    assert first[-1] < first[0]
