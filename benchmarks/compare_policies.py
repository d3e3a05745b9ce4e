"""The compare scenario as a script: how to compare policies with the Python API.

    python benchmarks/compare_policies.py [--requests-per-rate 30] [--policies continuous,...]

For a MoE model (DeepSeek-V3 on 8 x H200) and a dense one (Llama-3-70B on 2 x H200), from one
local user to heavy Poisson traffic, every chosen policy: prints TTFT/TPOT, throughput per
GPU, tokens per touched expert and $ per million output tokens. `batchlab compare` does the
same from a TOML file, in parallel, with plots and a report; this script shows the calls.
"""

from __future__ import annotations

import argparse
import math
import time

import batchlab
from batchlab.costmodel import make_devices
from batchlab.workloads import make_workload

MODELS = {"DeepSeek-V3 / 8 x H200": ("deepseek-v3", "h200", 8),
          "Llama-3-70B / 2 x H200": ("llama-3-70b", "h200", 2)}
RATES = (1.0, 4.0, 16.0, 64.0)


def workloads(per_second: float):
    yield "1 user", make_workload("local", num_requests=12)
    for rate in RATES:
        n = int(min(max(rate * per_second, 30), 1500))
        yield f"{rate:g} req/s", make_workload("poisson", rate=rate, num_requests=n)


def fmt(x, scale=1.0):
    return "-" if x is None or not math.isfinite(x) else f"{x * scale:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests-per-rate", type=float, default=30.0,
                    help="simulated seconds of traffic per rate (requests = rate x this)")
    ap.add_argument("--policies", default="continuous,fixed-window")
    args = ap.parse_args()

    header = (f"{'model':24} {'policy':14} {'traffic':9} {'TTFT p50':>9} {'TPOT p50':>9} "
              f"{'tok/s/GPU':>9} {'tok/expert':>10} {'$/M tok':>8}")
    print(header)
    print("-" * len(header))
    start = time.perf_counter()
    for label, (model, gpu, gpus) in MODELS.items():
        devices = make_devices(model, gpu, gpus)          # one 8-GPU (or 2-GPU) server
        for traffic, spec in workloads(args.requests_per_rate):
            for name in args.policies.split(","):
                policy = batchlab.load_policy(name)        # a fresh policy for every run
                s = batchlab.simulate(policy, spec, devices, seed=0).summary()
                print(f"{label:24} {name:14} {traffic:9} {fmt(s['ttft_p50_s'], 1e3):>7}ms "
                      f"{fmt(s['tpot_p50_s'], 1e3):>7}ms {fmt(s['output_tokens_per_s_per_gpu']):>9} "
                      f"{fmt(s['tokens_per_touched_expert']):>10} "
                      f"{fmt(s['usd_per_million_output_tokens']):>8}")
    print(f"\n{time.perf_counter() - start:.1f} s wall")


if __name__ == "__main__":
    main()
