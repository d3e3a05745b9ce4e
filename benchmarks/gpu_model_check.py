"""The cost model against a real GPU at a real model's layer shapes.

The torch backend runs a transformer with Llama-3-8B's layer shapes (hidden 4096, 32 query /
8 KV heads of 128, intermediate 14336, vocab 128256: meta-llama/Meta-Llama-3-8B config.json)
in bfloat16 with random weights, `--layers` of its 32 layers (8 by default: a quarter of the
model, so weights load in seconds; every op is the full model's, only fewer times). Decode
steps of B rows at `--context` tokens and single prefills are timed (median of `--repeats`
after warm-up; the backend synchronises the GPU around each step), and the cost model prices
the same batches (a decode at the median step's context) for the same shape on the GPU preset named by `--gpu` under each runtime
profile: `eager` (per-step host work and 10 us a kernel) is what this backend is, a Python
loop launching kernels one by one; `cuda-graph` is what a serving engine replays.

    python benchmarks/gpu_model_check.py --gpu h200            # needs CUDA
    python benchmarks/gpu_model_check.py --device cpu --layers 1 --batches 1,4 --prefills 64 \\
        --hidden 256 --intermediate 512 --vocab 1024 --heads 4 --kv-heads 2   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import numpy as np
import torch

from batchlab.backends.torch.config import TransformerConfig
from batchlab.backends.torch.device import TorchDevice
from batchlab.core import Batch
from batchlab.costmodel import make_devices


def timed(dev, make_batch, warmup: int, repeats: int) -> float:
    """Median seconds of the steps `make_batch(i)` gives for i = 0, 1, ... (a step may not
    feed positions already cached: decodes move one token on, prefills take a new row)."""
    times = []
    for i in range(warmup + repeats):
        result = dev.run(make_batch(i))
        if i >= warmup:
            times.append(result.duration)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--gpu", default="h200", help="cost-model GPU preset to compare with")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=14336)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--batches", default="1,8,32,64,128,256")
    ap.add_argument("--prefills", default="512,2048,8192")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_model_check.py: no CUDA device here (use --device cpu for a smoke run)",
              file=sys.stderr)
        return 1
    config = TransformerConfig("llama-3-8b-shaped", vocab_size=args.vocab,
                               hidden_size=args.hidden, num_layers=args.layers,
                               num_heads=args.heads, num_kv_heads=args.kv_heads,
                               intermediate_size=args.intermediate, rope_theta=500000.0,
                               dtype="bfloat16")
    batches = [int(b) for b in args.batches.split(",")]
    prefills = [int(p) for p in args.prefills.split(",")]
    steps = args.warmup + args.repeats
    capacity = (max(batches) * (args.context + len(batches) * steps + 1)
                + len(prefills) * steps * max(prefills) + 1)
    dev = TorchDevice("real", config, capacity, device=args.device)
    name = (torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu")
    print(f"{name}, torch {torch.__version__}: {config.name}, {args.layers} layers, "
          f"{dev.model.num_params / 1e9:.2f}B parameters in bfloat16")
    model = config.to_model_config()
    runtimes = ("eager", "cuda-graph")
    priced = {r: make_devices(model, args.gpu, 1, runtime=r)[0] for r in runtimes}
    rows = []
    # Rows 0..max(B)-1 prefilled to the context once, in chunks (not timed).
    n = max(batches)
    for rid in range(n):
        dev.register(rid, args.context)
    for start in range(0, n, 16):
        ids = np.arange(start, min(n, start + 16))
        dev.run(Batch(ids, np.full(ids.size, args.context), np.zeros(ids.size)))
    mid = args.warmup + args.repeats // 2  # the step whose context the model prices
    cached = np.full(n, args.context)  # each row's cache: decodes move it on

    def decode(ids):
        batch = Batch.decode(ids, cached[ids])
        cached[ids] += 1
        return batch

    for b in batches:
        ids = np.arange(b)
        start = cached[ids].copy()
        seconds = timed(dev, lambda i: decode(ids), args.warmup, args.repeats)
        rows.append((f"decode B={b} ctx~{args.context}", Batch.decode(ids, start + mid),
                     seconds))
    next_id = [n]

    def prefill(p):
        rid = next_id[0]
        next_id[0] += 1
        dev.register(rid, p)
        return Batch([rid], [p], [0])

    for p in prefills:
        seconds = timed(dev, lambda i: prefill(p), args.warmup, args.repeats)
        rows.append((f"prefill 1x{p}", Batch([0], [p], [0]), seconds))
    head = " ".join(f"{r + ' ms':>14} {'x':>5}" for r in runtimes)
    print(f"{'step':<24} {'measured ms':>11} {head}")
    out = []
    for label, batch, seconds in rows:
        model_s = {r: priced[r].run(batch).duration for r in runtimes}
        cells = " ".join(f"{model_s[r] * 1e3:14.2f} {model_s[r] / seconds:5.2f}"
                         for r in runtimes)
        print(f"{label:<24} {seconds * 1e3:11.2f} {cells}")
        out.append({"step": label, "measured_s": seconds, **{f"{r}_s": model_s[r]
                                                            for r in runtimes}})
    print("x: model time / measured time (below 1: the model is optimistic)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": name, "torch": torch.__version__, "gpu_preset": args.gpu,
                       "layers": args.layers, "rows": out}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
