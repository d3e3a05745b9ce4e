"""DeepSeek-V3 at production scale: the cost model against DeepSeek's published figures.

    python benchmarks/deepseek_scale.py

DeepSeek-V3/R1 Inference System Overview (github.com/deepseek-ai/open-infra-index,
2025-03-01), one day of production on H800s:
- decode: 14.8k output tokens/s per node, at 20-22 tokens/s per user, average KV length 4,989;
- prefill: 73.7k input tokens/s per node (cache hits included), 56.3% of input tokens hitting
  the on-disk KV cache; 608B input and 168B output tokens that day.
The prefill rows are built from the same day's figures: a prompt P and an output O with
P/O = 608/168 and an average decode context P + O/2 = 4,989 give P = 4,383 tokens, 56.3% of
it (2,468) already cached. For each layout, the step is broken down (compute, memory,
communication exposed and hidden, overhead).
"""

from __future__ import annotations

from batchlab.core import Batch
from batchlab.costmodel import make_deployment

PUBLISHED_DECODE = 14_800    # output tokens/s per node
PUBLISHED_PREFILL = 73_700   # input tokens/s per node
KV_LEN = 4989
USER_RATE = (20.0, 22.0)     # tokens/s per user
PROMPT = round(KV_LEN / (1 + 168 / (2 * 608)))   # 4,383
CACHED = round(PROMPT * 0.563)
GPUS_PER_NODE = 8


def decode_point(dev):
    """Rows per GPU where a user gets 20-22 tokens/s (the largest such batch that fits in
    KV memory, else the largest that fits), and that step."""
    gpus = dev.num_gpus
    cap = dev.kv_capacity_tokens // gpus // (KV_LEN + 1)
    best = None
    for b in range(8, cap + 1, 2):
        r = dev.run(Batch.decode(range(b * gpus), [KV_LEN] * (b * gpus)))
        rate = 1.0 / r.duration
        if rate < USER_RATE[0]:
            break
        best = (b, r)
    return best


def prefill_point(dev, rows_per_gpu=4):
    n = rows_per_gpu * dev.num_gpus
    r = dev.run(Batch(range(n), [PROMPT - CACHED] * n, [CACHED] * n))
    return rows_per_gpu, r


def _row(label, r, per_node, published):
    c = r.cost
    print(f"  {label:<12} step {r.duration * 1e3:7.1f} ms | compute {c.compute * 1e3:6.1f} "
          f"memory {c.memory * 1e3:6.1f} comm exposed {c.communication * 1e3:6.1f} hidden "
          f"{c.communication_hidden * 1e3:6.1f} overhead {c.overhead * 1e3:5.1f} ms | "
          f"{per_node / 1e3:6.1f}k tok/s/node vs {published / 1e3:.1f}k published "
          f"({per_node / published - 1:+.0%})")


def main() -> None:
    for overlap in (True, False):
        prefill, decode = make_deployment("deepseek-v3-production", overlap=overlap)
        print(f"deepseek-v3-production, two-batch overlap {'on (as published)' if overlap else 'off'}")
        b, r = decode_point(decode)
        print(f"  decode: EP144 + 32 redundant, {b} rows/GPU of {KV_LEN} tokens -> "
              f"{1 / r.duration:.1f} tokens/s per user")
        _row("decode", r, GPUS_PER_NODE * b / r.duration, PUBLISHED_DECODE)
        rows, r = prefill_point(prefill)
        print(f"  prefill: EP32, {rows} rows/GPU of {PROMPT} tokens ({CACHED} cached)")
        _row("prefill", r, GPUS_PER_NODE * rows * PROMPT / r.duration, PUBLISHED_PREFILL)


if __name__ == "__main__":
    main()
