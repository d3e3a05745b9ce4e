"""How many step-time evaluations per second the cost model does (the simulator calls
`device.run(batch)` once per step, often 100k+ times per run).

    python benchmarks/costmodel_speed.py [--repeats 7] [--seconds 0.3]

Prints, for a few models and batch shapes, the median over repeats of evaluations per second
of `CostModelDevice.run`, batch construction excluded. Target: >= 20,000/s for a 256-row
decode batch.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from batchlab.core import Batch
from batchlab.costmodel import make_devices

SETUPS = [
    ("llama-3-8b", "h100", dict(num_gpus=1)),
    ("llama-3-70b", "h100", dict(num_gpus=8, pp=2, tp=4)),
    ("mixtral-8x7b", "a100-80gb", dict(num_gpus=2)),
    ("deepseek-v3", "h200", dict(num_gpus=8)),
    ("deepseek-v3", "h200", dict(num_gpus=8, routing="sampled")),
]


def batches() -> dict[str, Batch]:
    rng = np.random.default_rng(0)
    ctx = rng.integers(100, 4000, 256)
    mixed_new = np.ones(64, dtype=np.int64)
    mixed_new[:2] = 512  # two prefill chunks riding along with 62 decodes
    return {
        "decode x256": Batch.decode(np.arange(256), ctx),
        "decode x1": Batch.decode([0], [1000]),
        "mixed 2x512 + 62 decodes": Batch(np.arange(64), mixed_new, ctx[:64]),
        "prefill 4096": Batch([0], [4096], [0]),
        "decode x256, 4 micro-batches": Batch.decode(np.arange(256), ctx, num_micro_batches=4),
    }


def rate(device, batch, seconds: float, repeats: int) -> float:
    """Median evaluations per second over `repeats` timed windows of about `seconds`."""
    run = device.run
    for _ in range(50):
        run(batch)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 0.05:
        run(batch)
        n += 1
    per_window = max(50, int(n / 0.05 * seconds))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(per_window):
            run(batch)
        rates.append(per_window / (time.perf_counter() - t0))
    return statistics.median(rates)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.3, help="length of one timed window")
    args = ap.parse_args(argv)
    shapes = batches()
    print(f"{'model':<14} {'cluster':<22} {'batch':<30} {'evals/s':>10} {'step ms':>9}")
    for model, gpu, kw in SETUPS:
        dev = make_devices(model, gpu, **kw)[0]
        layout = dev.step_model.layout
        cluster = (f"{dev.num_gpus}x{gpu} tp{layout.tp} pp{layout.pp}"
                   + (" sampled" if kw.get("routing") == "sampled" else ""))
        for label, batch in shapes.items():
            if batch.num_micro_batches > 1 and layout.pp == 1:
                continue
            r = rate(dev, batch, args.seconds, args.repeats)
            ms = dev.run(batch).duration * 1e3
            print(f"{model:<14} {cluster:<22} {label:<30} {r:>10,.0f} {ms:>9.2f}")


if __name__ == "__main__":
    main()
