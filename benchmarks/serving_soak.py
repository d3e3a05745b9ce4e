"""A soak of the serving front: per-request time and memory as requests served pile up.

    python benchmarks/serving_soak.py [--requests 1000000] [--wave 1000] [--policy continuous]

Requests go through `Server.submit` and come back as token streams, as a client of the serving
front sees them, on one AffineDevice that costs no time (so the figures are batchlab's own
overhead: submission checks, the engine thread, the policy, the request table, the streams).
They are sent in waves of `--wave` concurrent requests (prompt 8 tokens, 2 output tokens,
priorities 0-3); every wave is collected before the next starts.

Printed: for each checkpoint (10k, 100k, 1M requests served, or whichever the run reaches), the
median time per request over the waves just before it, and the ratio of each checkpoint to the
first (flat means within 2x); then the server's per-request state that must not grow (open
streams, the engine's request and history maps) and the process's peak RSS. Medians and the
ratio come from one run; the machine is shared, so compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time

import batchlab
from batchlab.engines.serving import Server

CHECKPOINTS = (10_000, 100_000, 1_000_000)


async def soak(num_requests: int, wave: int, policy: str) -> tuple[list, Server]:
    devices = batchlab.affine_devices(1, fixed=0.0, per_token=0.0, per_context_token=0.0,
                                      kv_capacity_tokens=1 << 20)
    per_request = []   # (requests served at the end of the wave, seconds per request)
    async with Server(policy, devices) as server:
        served = 0
        while served < num_requests:
            n = min(wave, num_requests - served)
            start = time.perf_counter()
            streams = [server.submit(8, 2, priority=i % 4) for i in range(n)]
            for stream in streams:
                await stream.collect()
            served += n
            per_request.append((served, (time.perf_counter() - start) / n))
            if served % 100_000 == 0:
                print(f"  {served:,} served", file=sys.stderr, flush=True)
    return per_request, server


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--wave", type=int, default=1000)
    ap.add_argument("--policy", default="continuous")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    per_request, server = asyncio.run(soak(args.requests, args.wave, args.policy))
    wall = time.perf_counter() - start
    window = 10   # waves before a checkpoint whose median is reported
    marks = [c for c in CHECKPOINTS if c <= args.requests] or [args.requests]
    figures = []
    for mark in marks:
        before = [t for served, t in per_request if served <= mark][-window:]
        figures.append((mark, statistics.median(before)))
    print(f"serving front soak: {args.requests:,} requests of policy {args.policy!r} in waves "
          f"of {args.wave}, {wall:.1f} s wall")
    base = figures[0][1]
    for mark, t in figures:
        print(f"  at {mark:>9,} served: {t * 1e6:8.1f} us per request (median of the last "
              f"{window} waves), {t / base:.2f}x the first checkpoint")
    engine = server._engine
    print(f"  left open: {len(server._streams)} streams, {len(engine.requests)} engine requests,"
          f" {sum(len(h.tokens) for h in engine.histories)} history entries")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS {rss:.0f} MiB (the request table keeps one record per request served)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
