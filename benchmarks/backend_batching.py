"""Real decode throughput of the torch backend against batch size, dense and MoE.

For each batch size B, B requests with a `--context`-token prompt are prefilled (not timed),
then `--repeats` decode steps of all B rows are timed after `--warmup` untimed ones; the
table shows the median step time and B / median as tokens/s. The curve is the reason
batching exists: a step reads all the weights once whatever B is, so until compute saturates
more rows cost little extra time. For MoE it also shows experts touched per layer.

    python benchmarks/backend_batching.py                     # CPU, small-dense and small-moe
    python benchmarks/backend_batching.py --device cuda --max-batch 256
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from batchlab.backends.torch.device import TorchDevice
from batchlab.core import Batch


def measure(config: str, batch_size: int, *, device: str, context: int, warmup: int,
            repeats: int) -> tuple[float, float]:
    """(median decode step seconds, mean experts touched per MoE layer) at this batch size."""
    dev = TorchDevice("bench", config, 1 << 30, device=device)
    ids = np.arange(batch_size)
    for rid in ids:
        dev.register(int(rid), context)
    dev.run(Batch(ids, np.full(batch_size, context), np.zeros(batch_size)))
    times, touched = [], []
    for step in range(warmup + repeats):
        result = dev.run(Batch.decode(ids, np.full(batch_size, context + step)))
        if step >= warmup:
            times.append(result.duration)
            touched.append(result.cost.experts_touched)
    return statistics.median(times), float(np.mean(touched))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--configs", default="small-dense,small-moe")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads on the CPU (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [1 << i for i in range(args.max_batch.bit_length()) if 1 << i <= args.max_batch]
    print(f"device={args.device} threads={torch.get_num_threads()} context={args.context} "
          f"median of {args.repeats} decode steps (after {args.warmup} warm-up)")
    print(f"{'config':<12} {'batch':>5} {'step ms':>9} {'tokens/s':>10} {'x batch 1':>9} "
          f"{'experts':>7}")
    for config in args.configs.split(","):
        base = None
        for b in sizes:
            start = time.perf_counter()
            step, touched = measure(config, b, device=args.device, context=args.context,
                                    warmup=args.warmup, repeats=args.repeats)
            rate = b / step
            base = base or rate
            experts = f"{touched:7.1f}" if touched else f"{'-':>7}"
            print(f"{config:<12} {b:>5} {step * 1e3:9.2f} {rate:10.0f} {rate / base:9.1f} "
                  f"{experts}   ({time.perf_counter() - start:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
