"""Request-level batching on a MoE model: a longer window feeds each touched expert more tokens.

With top-k routing over E experts, B tokens touch about E(1 - (1 - k/E)^B) distinct experts:
a small cohort reads many experts' weights to give each one or two tokens. Waiting longer to
gather a bigger cohort amortises those weight reads over more tokens, at the price of time to
first token. This is the trade at the heart of "MoE is cheap at scale, dear locally".
"""

from __future__ import annotations

from batchlab import load_policy, simulate
from batchlab.costmodel import make_devices
from batchlab.workloads import make_workload


def test_longer_window_raises_tokens_per_touched_expert():
    devices = make_devices("qwen3-30b-a3b", "h200", 8)
    spec = make_workload("poisson", rate=8.0, num_requests=80, prompt="lognormal:128:0.5",
                         output="8")
    short, long = (simulate(load_policy("fixed-window", window=w, max_batch=64), spec, devices)
                   .summary() for w in (0.005, 0.2))
    assert short["num_finished"] == long["num_finished"] == 80
    # Measured: 6.1 vs 9.9 tokens per touched expert, expert utilisation 0.18 vs 0.25, and
    # TTFT p50 0.010 s vs 0.165 s: the window is paid for in latency.
    assert long["tokens_per_touched_expert"] > 1.4 * short["tokens_per_touched_expert"]
    assert long["expert_utilisation"] > short["expert_utilisation"]
    assert long["ttft_p50_s"] > 5 * short["ttft_p50_s"]
