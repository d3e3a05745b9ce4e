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

Those two figures are day averages over every deployed node, not throughput at full batch:
the day's tokens over the per-node rates give 608e9/86400/73.7k = 95.5 prefill and
168e9/86400/14.8k = 131.4 decode nodes, 226.9 in all, which is the published average of
226.75 nodes in service (peak 278). So the script also checks two points measured at full
batch (`at capacity` below):
- prefill as in DeepSeek's profile (github.com/deepseek-ai/profile-data: EP32, TP1, 4K
  prompts, 16K tokens per GPU, perfectly balanced routing): SGLang on 4 nodes of 8 H100
  reached 50,302 input tokens/s per node for 4K prompts, "within 5.6% of DeepSeek's official
  profile (assuming perfect balance)" (LMSYS blog, "Deploying DeepSeek with PD
  Disaggregation and Large-scale Expert Parallelism on 96 H100 GPUs", 2025-05-05);
- decode on 9 nodes of 8 H100 (EP72, 32 redundant experts) saturated through SGLang's
  slow-down switch: 22.3k output tokens/s per node for 2,000-token inputs (same blog). The
  blog gives no batch per GPU; the model is read at 256 rows/GPU, where its throughput rises
  slowly with the batch (28.5k per node at 192 rows/GPU, 30.2k at 320).
"""

from __future__ import annotations

from batchlab.core import Batch
from batchlab.costmodel import make_deployment, make_devices

PUBLISHED_DECODE = 14_800    # output tokens/s per node
PUBLISHED_PREFILL = 73_700   # input tokens/s per node
KV_LEN = 4989
USER_RATE = (20.0, 22.0)     # tokens/s per user
PROMPT = round(KV_LEN / (1 + 168 / (2 * 608)))   # 4,383
CACHED = round(PROMPT * 0.563)
GPUS_PER_NODE = 8
DAY_SECONDS = 86_400
INPUT_TOKENS_DAY, OUTPUT_TOKENS_DAY = 608e9, 168e9
AVERAGE_NODES = 226.75          # nodes in service, averaged over the day (peak 278)
SGLANG_PREFILL_4K = 50_302      # input tokens/s per H100 node, EP32, 4K prompts
SGLANG_DECODE_2K = 22_300       # output tokens/s per H100 node, EP72, 2K inputs, saturated


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


def day_average_nodes() -> None:
    prefill = INPUT_TOKENS_DAY / DAY_SECONDS / PUBLISHED_PREFILL
    decode = OUTPUT_TOKENS_DAY / DAY_SECONDS / PUBLISHED_DECODE
    print(f"published per-node figures are day averages: {prefill:.1f} prefill + {decode:.1f} "
          f"decode nodes = {prefill + decode:.1f}, published average in service "
          f"{AVERAGE_NODES}")


def at_capacity() -> None:
    print("at capacity (SGLang, H100, full batches; see the docstring)")
    for overlap in (True, False):
        label = "on " if overlap else "off"
        pre = make_devices("deepseek-v3", "h100", 32, tp=1, ep=32, overlap=overlap,
                           max_batch_tokens=16384)[0]
        n = 4 * pre.num_gpus
        r = pre.run(Batch(range(n), [4096] * n, [0] * n))
        _row(f"prefill {label}", r, GPUS_PER_NODE * 4 * 4096 / r.duration, SGLANG_PREFILL_4K)
        dec = make_devices("deepseek-v3", "h100", 72, tp=1, ep=72, redundant_experts=32,
                           overlap=overlap, max_batch_rows=256)[0]
        n = 256 * dec.num_gpus
        r = dec.run(Batch.decode(range(n), [2000] * n))
        _row(f"decode {label}", r, GPUS_PER_NODE * 256 / r.duration, SGLANG_DECODE_2K)


if __name__ == "__main__":
    main()
    day_average_nodes()
    at_capacity()
