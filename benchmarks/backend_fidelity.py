"""Simulator against reality, in the simplest form: does a cost model fitted to a real run
predict that run's latencies?

1. Run a policy on a workload on a TorchDevice with `run_wallclock`, logging every step's
   batch and measured duration.
2. Fit an AffineDevice (fixed + per fed token + per attended context token) to those steps by
   least squares (padding counted as the AffineDevice counts it).
3. Simulate the same policy and workload on the fitted device, and print both summaries
   side by side.

This is a fidelity check of the simulator's engine and of an affine step-time model, not a
calibration of the roofline cost model (`batchlab.costmodel` efficiencies are not fitted).

    python benchmarks/backend_fidelity.py --config small-dense --policy continuous
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import batchlab
from batchlab.backends.affine import AffineDevice
from batchlab.engines.simulator import simulate
from batchlab.backends.torch.device import TorchDevice
from batchlab.engines.wallclock import run_wallclock
from batchlab.workloads import make_workload


class Logged(TorchDevice):
    """A TorchDevice that remembers each step's batch and measured duration."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.steps = []

    def run(self, batch):
        result = super().run(batch)
        self.steps.append((batch, result.duration))
        return result


def fit_affine(steps, kv_capacity_tokens: int) -> AffineDevice:
    probe = AffineDevice(fixed=1.0, per_token=0.0, per_context_token=0.0)
    rows = []
    for batch, _ in steps:
        # The AffineDevice's own accounting of fed and context tokens, one coefficient at a time.
        fed = AffineDevice(fixed=0.0, per_token=1.0, per_context_token=0.0).step_time(batch)
        ctx = AffineDevice(fixed=0.0, per_token=0.0, per_context_token=1.0).step_time(batch)
        rows.append((probe.step_time(batch), fed, ctx))
    a = np.array(rows)
    y = np.array([d for _, d in steps])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    fixed, per_token, per_ctx = (max(0.0, float(c)) for c in coef)
    return AffineDevice(name="dev0", fixed=fixed, per_token=per_token,
                        per_context_token=per_ctx, kv_capacity_tokens=kv_capacity_tokens)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="small-dense")
    ap.add_argument("--policy", default="continuous")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rate", type=float, default=8.0)
    ap.add_argument("--num-requests", type=int, default=60)
    ap.add_argument("--prompt", default="uniform:16:256")
    ap.add_argument("--output", default="uniform:8:64")
    ap.add_argument("--kv-capacity", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = make_workload("poisson", rate=args.rate, num_requests=args.num_requests,
                         prompt=args.prompt, output=args.output)
    real_dev = Logged("dev0", args.config, args.kv_capacity, device=args.device)
    real = run_wallclock(batchlab.load_policy(args.policy), spec, [real_dev], seed=args.seed)
    fitted = fit_affine(real_dev.steps, args.kv_capacity)
    predicted = np.array([fitted.step_time(b) for b, _ in real_dev.steps])
    measured = np.array([d for _, d in real_dev.steps])
    err = np.abs(predicted - measured) / measured
    print(f"{args.policy} on {args.config} ({args.device}), {len(measured)} steps; fitted "
          f"fixed={fitted.fixed * 1e3:.3f} ms, per_token={fitted.per_token * 1e6:.2f} us, "
          f"per_context_token={fitted.per_context_token * 1e9:.1f} ns; step-time error "
          f"median {np.median(err):.1%}, p90 {np.percentile(err, 90):.1%}")
    sim = simulate(batchlab.load_policy(args.policy), spec, [fitted], seed=args.seed)
    a, b = real.summary(), sim.summary()
    print(f"{'metric':<24} {'real':>10} {'simulated':>10} {'ratio':>7}")
    for key in ("makespan_s", "ttft_p50_s", "ttft_p90_s", "tpot_p50_s", "tpot_p90_s",
                "e2e_p50_s", "output_tokens_per_s", "busy_fraction"):
        ratio = b[key] / a[key] if a[key] else float("nan")
        print(f"{key:<24} {a[key]:10.4f} {b[key]:10.4f} {ratio:7.2f}")


if __name__ == "__main__":
    main()
