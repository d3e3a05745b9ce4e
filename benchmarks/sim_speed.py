"""How fast the simulator runs: requests, events and steps per wall-second.

    python benchmarks/sim_speed.py [--requests 20000] [--repeats 3] [--policy fixed-window]

A fixed workload (Poisson arrivals at 40 req/s, lognormal prompts of mean 512 and outputs of
mean 128 tokens, seed 0) on four affine devices. The figure that matters is the median over
repeats; the machine is shared, so compare ratios measured in one run, not absolute numbers
across runs. Target (issue 2): 100,000 requests of continuous batching in under a minute on one
core.
"""

from __future__ import annotations

import argparse
import statistics
import time

import batchlab
from batchlab.workloads import make_workload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--policy", default="continuous")
    ap.add_argument("--rate", type=float, default=40.0)
    ap.add_argument("--devices", type=int, default=4)
    args = ap.parse_args()

    spec = make_workload("poisson", rate=args.rate, num_requests=args.requests,
                         prompt="lognormal:512:1.0", output="lognormal:128:1.0")
    devices = batchlab.affine_devices(args.devices)
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
          f"(policy {args.policy}, {args.requests} requests, {args.devices} affine devices)")


if __name__ == "__main__":
    main()
