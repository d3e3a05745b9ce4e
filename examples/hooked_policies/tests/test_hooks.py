"""The plugins' own tests, as their author would write them (pytest examples/hooked_policies).

Each runs the conformance kit, then checks the effect the policy exists for, in numbers.
"""

import functools

import numpy as np
from batchlab import affine_devices, load_policy, simulate
from batchlab.testing import check_policy
from batchlab.workloads import Workload

from batchlab_hooks import PriorityClasses, ShortestJobFirst


def test_shortest_job_first_conforms():
    check_policy(ShortestJobFirst)


def test_priority_classes_conforms():
    check_policy(functools.partial(PriorityClasses, background_share=0.5, tokens_per_seq=64))


def burst(n=40):
    """n requests at once, prompts from 50 * n tokens down to 50, 16 output tokens each."""
    return Workload(np.zeros(n), np.arange(n, 0, -1) * 50, np.full(n, 16))


def test_shortest_job_first_lowers_mean_ttft_of_a_burst():
    knobs = dict(max_num_seqs=8, max_num_batched_tokens=2048, chunked_prefill=False)
    sjf = simulate(load_policy("shortest-job-first", **knobs), burst(), affine_devices(1))
    fcfs = simulate(load_policy("continuous", **knobs), burst(), affine_devices(1))
    first = sjf.records["first_token"]
    assert first[-1] < first[0]  # the shortest prompt (the last id) starts before the longest
    assert sjf.summary()["ttft_mean_s"] < 0.8 * fcfs.summary()["ttft_mean_s"]


def test_priority_classes_serve_interactive_requests_first():
    # 60 background requests at t=0, then 10 interactive ones (priority 1) at t=0.5.
    n_bg, n_int = 60, 10
    wl = Workload(np.r_[np.zeros(n_bg), np.full(n_int, 0.5)], np.full(n_bg + n_int, 200),
                  np.full(n_bg + n_int, 64), priority=np.r_[np.zeros(n_bg), np.ones(n_int)])
    runs = {name: simulate(load_policy(name, max_num_seqs=16, **knobs), wl, affine_devices(1))
            for name, knobs in (("priority-classes", {}), ("continuous", {"order": "priority"}))}
    ttft = {name: (r.records["first_token"] - r.records["arrival"])[n_bg:].mean()
            for name, r in runs.items()}
    assert all(r.summary()["num_finished"] == n_bg + n_int for r in runs.values())
    # Measured: interactive mean TTFT 0.27 s with the reserve, 0.96 s with priority order
    # alone (it waits for a background sequence to finish), 3.79 s first come first served.
    # The price: background work takes longer (makespan 7.6 s against 5.4 s).
    assert ttft["priority-classes"] < 0.5 * ttft["continuous"]
