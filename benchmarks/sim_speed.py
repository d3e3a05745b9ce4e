"""How fast the simulator runs: requests, events and steps per wall-second, and how many
step-time evaluations per second the roofline cost model makes.

    python benchmarks/sim_speed.py [--requests 20000] [--repeats 3] [--policy continuous]
                                   [--device affine|costmodel]

A fixed workload (Poisson arrivals at 40 req/s, lognormal prompts of mean 512 and outputs of
mean 128 tokens, seed 0) on four affine devices (or four Llama-3-8B H100 cost-model devices).
The figure that matters is the median over repeats; the machine is shared, so compare ratios
measured in one run, not absolute numbers across runs. Target (issue 2): 100,000 requests of
continuous batching in under a minute on one core.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import batchlab
from batchlab import Batch
from batchlab.costmodel import make_devices
from batchlab.workloads import make_workload


def cost_model_speed(repeats: int) -> None:
    """Step-time evaluations per second for a 256-row decode batch at 1k context."""
    batch = Batch.decode(np.arange(256), np.full(256, 1000))
    for label, (model, gpu, gpus) in {"Llama-3-8B on 1 x H100": ("llama-3-8b", "h100", 1),
                                      "DeepSeek-V3 on 8 x H200": ("deepseek-v3", "h200", 8)
                                      }.items():
        device = make_devices(model, gpu, gpus)[0]
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(2000):
                device.run(batch)
            rates.append(2000 / (time.perf_counter() - start))
        print(f"cost model, {label}: {statistics.median(rates):,.0f} step evaluations/s "
              f"(256-row decode, median of {repeats})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--policy", default="continuous")
    ap.add_argument("--rate", type=float, default=40.0)
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--device", choices=("affine", "costmodel"), default="affine")
    args = ap.parse_args()

    spec = make_workload("poisson", rate=args.rate, num_requests=args.requests,
                         prompt="lognormal:512:1.0", output="lognormal:128:1.0")
    devices = (batchlab.affine_devices(args.devices) if args.device == "affine" else
               make_devices("llama-3-8b", "h100", args.devices, dp=args.devices))
    rows = []
    for rep in range(args.repeats):
        policy = batchlab.load_policy(args.policy)
        start = time.perf_counter()
        result = batchlab.simulate(policy, spec, devices, seed=0)
        wall = time.perf_counter() - start
        steps = int(result.devices["steps"].sum())
        rows.append((wall, args.requests / wall, result.num_events / wall, steps / wall))
        print(f"repeat {rep + 1}: {wall:7.2f} s  {args.requests / wall:9.0f} req/s  "
              f"{result.num_events / wall:9.0f} events/s  {steps / wall:9.0f} steps/s  "
              f"({steps} steps, {result.num_events} events)", flush=True)
    med = [statistics.median(col) for col in zip(*rows)]
    print(f"median over {args.repeats}: {med[0]:.2f} s, {med[1]:.0f} requests/s, "
          f"{med[2]:.0f} events/s, {med[3]:.0f} steps/s "
          f"(policy {args.policy}, {args.requests} requests, {args.devices} {args.device} "
          "devices)")
    cost_model_speed(max(args.repeats, 3))


if __name__ == "__main__":
    main()
