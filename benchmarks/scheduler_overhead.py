"""What one `schedule()` call of continuous batching costs, at 10, 100 and 1,000 running
sequences: the time a policy would add to every step of a real server loop.

    python benchmarks/scheduler_overhead.py [--calls 2000] [--sizes 10,100,1000]

The policy is driven directly, with no simulator around it: N requests are added, then
schedule() and update() are called until all N are running (their prompts prefilled), then
`--calls` steady-state decode steps are timed: each schedule() call alone is timed, and each
is followed by the update() that reports its step (every row emits a token, none finishes),
timed separately. Memory is ample, so nothing is preempted: this is the common path. The
machine is shared: compare sizes within one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from batchlab import AffineDevice, Request, StepResult, load_policy

PROMPT = 128


def _result(n: int, generated: np.ndarray) -> StepResult:
    return StepResult(0.01, emitted=np.ones(n, bool), finished=np.zeros(n, bool),
                      num_generated=generated)


def measure(num_seqs: int, calls: int) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per schedule() call and per update() call at num_seqs running sequences."""
    max_new = calls + 64
    device = AffineDevice(kv_capacity_tokens=num_seqs * (PROMPT + max_new + 32))
    policy = load_policy("continuous", max_num_seqs=num_seqs,
                         max_num_batched_tokens=max(8192, num_seqs))
    for rid in range(num_seqs):
        policy.add(Request(rid, 0.0, PROMPT, max_new), 0.0)
    now, generated = 0.0, np.zeros(num_seqs, np.int64)
    while True:  # prefill everyone, until a step is a full batch of decodes
        batch = policy.schedule(now, [device]).batches["dev0"]
        if batch.num_seqs == num_seqs and (batch.num_new_tokens == 1).all():
            break
        now += 0.01
        generated[batch.request_ids] += 1
        policy.update(batch, _result(batch.num_seqs, generated[batch.request_ids]), now)
    sched, upd = np.empty(calls), np.empty(calls)
    clock = time.perf_counter
    for i in range(calls):
        if i:
            t0 = clock()
            batch = policy.schedule(now, [device]).batches["dev0"]
            sched[i] = clock() - t0
        generated += 1
        result = _result(num_seqs, generated.copy())
        now += 0.01
        t0 = clock()
        policy.update(batch, result, now)
        upd[i] = clock() - t0
    sched[0] = sched[1]  # the first batch came from the warm-up loop, untimed
    policy.check_valid()
    return sched, upd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000, help="timed calls per size (2000)")
    ap.add_argument("--sizes", default="10,100,1000", help="running sequences, comma-separated")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"continuous batching, {args.calls} timed decode steps per size (microseconds)")
    print(f"{'running seqs':>12} | {'schedule p50':>12} {'schedule p99':>12} | "
          f"{'update p50':>10} {'update p99':>10}")
    for n in sizes:
        sched, upd = (x * 1e6 for x in measure(n, args.calls))
        print(f"{n:>12,} | {np.median(sched):>12.1f} {np.percentile(sched, 99):>12.1f} | "
              f"{np.median(upd):>10.1f} {np.percentile(upd, 99):>10.1f}")


if __name__ == "__main__":
    main()
