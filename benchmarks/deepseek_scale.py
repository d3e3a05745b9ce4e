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
  prompts, 16K tokens per GPU, perfectly balanced routing). The LMSYS blog ("Deploying
  DeepSeek with PD Disaggregation and Large-scale Expert Parallelism on 96 H100 GPUs",
  2025-05-05, "Profile Results") reads 62,713 input tokens/s per node off DeepSeek's profile
  and measured SGLang on 4 nodes of 8 H100 at 50,302 with its default expert placement and
  59,337 with simulated perfect EPLB. The model routes uniformly (skew 0), as the profile
  and the perfect-EPLB run do, so those two are its like-for-like references;
- decode on 9 nodes of 8 H100 (EP72, 32 redundant experts) saturated through SGLang's
  slow-down switch: 22.3k output tokens/s per node for 2,000-token inputs (same blog). The
  blog gives no batch per GPU; the model is read at 256 rows/GPU, where its throughput rises
  slowly with the batch (28.5k per node at 192 rows/GPU, 30.2k at 320).

And DeepSeek's own decode profile at full batch (`decode_profile` below): EP128, 128 requests
per GPU, 4K prompts, two micro-batches, on H800 (github.com/deepseek-ai/profile-data README;
its decode.json is not stored here). Its per-kernel times come from a third party's table
(zdszero.github.io/Computer/Artificial_Intelligence/deepseek_profile.html, column "h800 ds
prof"; the kernel names beside them are from that author's B200 run): 96 ms a step end to
end, 87.32 ms for the 61 layers; per micro-batch and layer, the attention block 388 us (its
MLA kernel 255 us), the gate 19 us, dispatch 187 us, expert GEMMs 81 + 8 + 39 us, combine
394 us. The profile decodes with MTP: its attention kernel is FlashMLA's published 580
TFLOP/s on 64 rows x 2 query tokens x 4,096 keys x 128 heads x 2 x (576 + 512) = 146 GFLOP
(252 us), and DeepEP's low-latency table gives 192 and 369 us for the 128 tokens a
micro-batch then dispatches. The model runs the same rows, two tokens each on the decode
path (`decode_threshold=2`: without it an MLA row of two tokens is priced the prefill way,
its whole cache decompressed), and prints the same tokens as 256 single-token rows per GPU
beside it (the same attention FLOPs, the keys read twice).

And the same blog's ablation of two-batch overlap (`overlap_ablation` below), which measures
what overlap itself buys on H100: prefill +27% to +35% over no overlap at the same tokens per
GPU, +40.5% at 16K tokens/GPU over the best no-overlap run (8K: 16K ran out of memory
without it); decode -27% at 32 tokens per GPU, paying off only above 64 to 128, +25.5% at 256
(22,310 tokens/s per node: the blog's decode setup, EP72 with 2K inputs, going by its 22,282
above; the ablation does not restate it); decode with simulated MTP (128 requests per
GPU, two tokens each, 4K KV, attention slowed to DeepSeek's profile, 60% of drafts
accepted) 17,552 against 12,929 tokens/s per node, +35.8%. The model's slowdown of the
high-throughput transfers under overlap (1.32x: Efficiency.overlapped_communication) is fitted to
the prefill row at 8K tokens/GPU; the other rows, and DeepSeek's prefill profile above, are
checks of it.

And RTP-LLM's measurements on the production layout itself (`rtp_llm_points`): H800 over
RoCE, 4K input / 2K output under 1.6 s TTFT and 50 ms ITL, prefill EP32 at two 4K prompts per
GPU in 1.5 s, decode EP144 at 13,200 concurrent requests (20 tokens/s per user, 14.7k per
node) with MTP, whose acceptance the report does not give (DeepSeek's 85-90% is used).
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
# LMSYS blog, "Profile Results": prefill at 16,384 tokens/GPU of 4,096-token prompts, input
# tokens/s per node: read off DeepSeek's profile (H800, balanced routing), and SGLang on H100
# with simulated perfect EPLB (the 50,302 above is its default expert placement)
DEEPSEEK_PROFILE_PREFILL = 62_713
SGLANG_PREFILL_BALANCED = 59_337
# The blog's two-batch-overlap (TBO) ablation on H100: throughput with TBO over without
TBO_PREFILL_SAME_TOKENS = (0.27, 0.35)   # at the same tokens per GPU (not said which)
TBO_PREFILL_BEST = 0.405                 # TBO at 16K tokens/GPU over no TBO at 8K (16K OOMs)
TBO_DECODE = {32: -0.27, 256: 0.255}     # decode tokens (rows) per GPU -> gain; EP72, 2K
TBO_DECODE_PAYS_FROM = (64, 128)         # the gain turns positive between these batches
TBO_MTP_ON_OFF = (17_552, 12_929)        # tokens/s per node, 128 requests/GPU x 2 tokens, 4K KV
SGLANG_MTP_ACCEPTANCE = 0.6              # "we conservatively assume a 60% acceptance rate"
SGLANG_DECODE_2K = 22_300       # output tokens/s per H100 node, EP72, 2K inputs, saturated
# DeepSeek's decode profile (see the docstring): EP128, 128 requests/GPU, 4K prompts, MTP
PROFILE_STEP_MS, PROFILE_LAYERS_MS = 96.0, 87.32
PROFILE_ROWS, PROFILE_CONTEXT = 128, 4096
# Per micro-batch (64 requests x 2 tokens) and layer, us: attention block + gate (the phase
# before dispatch), dispatch, routed expert GEMMs (gate-up, SiLU, down), combine
PROFILE_PHASES_US = {"attention + gate": 388 + 19, "dispatch + combine": 187 + 394,
                     "routed experts": 81 + 8 + 39}
MTP_ACCEPTANCE = (0.85, 0.90)   # second token: DeepSeek-V3 technical report, sec. 5.4.3
# RTP-LLM (Alibaba) on DeepSeek's production layout, H800 over RoCE, 4K input / 2K output,
# under 1.6 s TTFT and 50 ms ITL (RTP-LLM DeepSeek Replay Tech Report, github.com/alibaba/
# rtp-llm docs/RTP-LLM-DeepSeek-Replay-Tech-Report.md): a prefill unit of 4 nodes (EP32)
# runs two 4K requests per GPU in 1.5 s at the highest load (5,333 tokens/s per GPU, no
# prefix cache); a decode unit of 18 nodes (EP144) reaches the 20 tokens/s per user limit
# at 13,200 concurrent requests, 1,850 tokens/s per GPU, with micro-batch overlap and MTP.
RTP_PREFILL_STEP_S, RTP_PREFILL_ROWS = 1.5, 2
RTP_PREFILL_NODE, RTP_DECODE_NODE = 42_600, 14_700
RTP_CONCURRENT, RTP_USER_RATE = 13_200, 20.0
RTP_LOW_LOAD_RATE = 42.0        # tokens/s per user "at lower concurrency" (not given)
RTP_CONTEXT = 4096 + 2048 // 2  # 4K prompts, halfway through 2K outputs on average


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


def fresh_4k(rows: int) -> Batch:
    """`rows` uncached 4K prompts (the profile's and SGLang's prefill rows)."""
    return Batch(range(rows), [4096] * rows, [0] * rows)


def sglang_prefill(overlap: bool):
    """SGLang's prefill layout (H100, EP32) at up to 16K tokens/GPU."""
    return make_devices("deepseek-v3", "h100", 32, tp=1, ep=32, overlap=overlap,
                        max_batch_tokens=16384)[0]


def sglang_decode(overlap: bool, **kw):
    """SGLang's decode layout (H100, EP72 + 32 redundant experts)."""
    return make_devices("deepseek-v3", "h100", 72, tp=1, ep=72, redundant_experts=32,
                        overlap=overlap, **kw)[0]


def mtp_batch(rows: int, cached: int) -> Batch:
    """MTP decode rows: each feeds its last token and one draft on top of `cached` tokens."""
    return Batch(range(rows), [2] * rows, [cached] * rows)


def _breakdown(r) -> str:
    c = r.cost
    return (f"step {r.duration * 1e3:7.1f} ms | compute {c.compute * 1e3:6.1f} "
            f"memory {c.memory * 1e3:6.1f} comm exposed {c.communication * 1e3:6.1f} hidden "
            f"{c.communication_hidden * 1e3:6.1f} overhead {c.overhead * 1e3:5.1f} ms")


def _row(label, r, per_node, published):
    print(f"  {label:<12} {_breakdown(r)} | {per_node / 1e3:6.1f}k tok/s/node vs "
          f"{published / 1e3:.1f}k published ({per_node / published - 1:+.0%})")


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
        pre = sglang_prefill(overlap)
        r = pre.run(fresh_4k(4 * pre.num_gpus))
        per_node = GPUS_PER_NODE * 4 * 4096 / r.duration
        _row(f"prefill {label}", r, per_node, SGLANG_PREFILL_4K)
        if overlap:  # the like-for-like references: balanced routing, as the model's
            print(f"    balanced routing, as the model's: "
                  f"{per_node / DEEPSEEK_PROFILE_PREFILL - 1:+.0%} vs DeepSeek's profile "
                  f"({DEEPSEEK_PROFILE_PREFILL / 1e3:.1f}k), "
                  f"{per_node / SGLANG_PREFILL_BALANCED - 1:+.0%} vs SGLang with perfect EPLB "
                  f"({SGLANG_PREFILL_BALANCED / 1e3:.1f}k)")
        else:  # derived, not measured: the balanced run over the ablation's gain from overlap
            lo, hi = (SGLANG_PREFILL_BALANCED / (1 + g) for g in TBO_PREFILL_SAME_TOKENS[::-1])
            print(f"    balanced routing without overlap, derived (SGLang's perfect-EPLB "
                  f"{SGLANG_PREFILL_BALANCED / 1e3:.1f}k over its measured "
                  f"{TBO_PREFILL_SAME_TOKENS[0]:+.0%} to {TBO_PREFILL_SAME_TOKENS[1]:+.0%} from "
                  f"overlap): {lo / 1e3:.1f}k-{hi / 1e3:.1f}k, model {per_node / hi - 1:+.0%} "
                  f"to {per_node / lo - 1:+.0%}")
        dec = sglang_decode(overlap, max_batch_rows=256)
        n = 256 * dec.num_gpus
        r = dec.run(Batch.decode(range(n), [2000] * n))
        _row(f"decode {label}", r, GPUS_PER_NODE * 256 / r.duration, SGLANG_DECODE_2K)


def _gain(make, batch) -> tuple[float, float, float]:
    """(step with overlap, step without, off/on - 1) of one batch on devices `make(overlap)`."""
    on, off = (make(overlap).run(batch).duration for overlap in (True, False))
    return on, off, off / on - 1.0


def overlap_ablation() -> None:
    """What two-batch overlap buys in the model against SGLang's ablation (docstring)."""
    print("two-batch overlap's gain (throughput with over without), model vs SGLang's ablation "
          "(H100)")
    steps_off = {}
    for tokens in (4096, 8192):
        on, steps_off[tokens], gain = _gain(sglang_prefill, fresh_4k(tokens // 4096 * 32))
        off = steps_off[tokens]
        fit = " (the overlapped transfers' slowdown is fitted here)" if tokens == 8192 else ""
        print(f"  prefill EP32, {tokens // 1024}K tokens/GPU: {on:.2f} s with, {off:.2f} s "
              f"without: {gain:+.0%} vs {TBO_PREFILL_SAME_TOKENS[0]:+.0%} to "
              f"{TBO_PREFILL_SAME_TOKENS[1]:+.0%} measured at the same tokens per GPU{fit}")
    on16 = sglang_prefill(True).run(fresh_4k(128)).duration
    print(f"  prefill EP32, 16K tokens/GPU with over 8K without (per token): "
          f"{2 * steps_off[8192] / on16 - 1:+.0%} vs {TBO_PREFILL_BEST:+.1%} measured")
    for rows in (32, 64, 128, 256):
        on, off, gain = _gain(sglang_decode, Batch.decode(range(rows * 72), [2000] * (rows * 72)))
        measured = (f"{TBO_DECODE[rows]:+.1%} measured" if rows in TBO_DECODE else
                    f"measured: turns positive between {TBO_DECODE_PAYS_FROM[0]} and "
                    f"{TBO_DECODE_PAYS_FROM[1]}")
        print(f"  decode EP72 + 32 redundant, {rows} rows/GPU of 2K: {on * 1e3:.1f} ms with, "
              f"{off * 1e3:.1f} ms without: {gain:+.0%} vs {measured}")
    n = 128 * 72
    on, off, gain = _gain(lambda o: sglang_decode(o, decode_threshold=2),
                          mtp_batch(n, 4000 - 1))
    tokens = GPUS_PER_NODE * 128 * (1 + SGLANG_MTP_ACCEPTANCE)
    with_, without = TBO_MTP_ON_OFF
    print(f"  decode EP72 MTP, 128 requests/GPU x 2 tokens, 4K KV ({SGLANG_MTP_ACCEPTANCE:.0%} "
          f"accepted): {tokens / on / 1e3:.1f}k with ({tokens / on / with_ - 1:+.0%}), "
          f"{tokens / off / 1e3:.1f}k without ({tokens / off / without - 1:+.0%}) vs "
          f"{with_ / 1e3:.1f}k and {without / 1e3:.1f}k measured: gain {gain:+.0%} vs "
          f"{with_ / without - 1:+.1%}")


def decode_profile() -> None:
    """The model at DeepSeek's profiled decode point, phase by phase (see the docstring)."""
    # MTP rows: two tokens each (the last one and the draft), on the decode path
    dev = make_devices("deepseek-v3", "h800", 128, tp=1, ep=128, overlap=True,
                       decode_threshold=2)[0]
    g, model = dev.num_gpus, dev.model
    n = PROFILE_ROWS * g

    r = dev.run(mtp_batch(n, PROFILE_CONTEXT - 1))
    single = dev.run(Batch.decode(range(2 * n), [PROFILE_CONTEXT] * (2 * n)))
    print(f"DeepSeek's decode profile (H800, EP128, {PROFILE_ROWS} requests/GPU x 2 tokens "
          f"(MTP), {PROFILE_CONTEXT} context, two micro-batches); model with "
          "decode_threshold=2")
    print(f"  model        {_breakdown(r)}")
    print(f"  step {r.duration * 1e3:.1f} ms vs {PROFILE_STEP_MS:.0f} ms measured "
          f"({r.duration * 1e3 / PROFILE_STEP_MS - 1:+.0%}); the measured 61 layers alone take "
          f"{PROFILE_LAYERS_MS} ms; {2 * PROFILE_ROWS} single-token rows/GPU instead: "
          f"{single.duration * 1e3:.1f} ms")
    # One micro-batch is one pass of half the rows: `explain` gives its seconds per op
    e = dev.explain(mtp_batch(n // 2, PROFILE_CONTEXT - 1))
    layers, moe = model.num_layers, model.num_moe_layers
    mine = {"attention + gate": (e["attn_norm"] + e["qkv_proj"] + e["attention"] + e["o_proj"])
            / layers + (e["ffn_norm"] + e["router"]) / moe,
            "dispatch + combine": e["ffn_comm"] / moe,
            "routed experts": e["routed_experts"] / moe}
    print("  per micro-batch and MoE layer (us): " + "; ".join(
        f"{k} {mine[k] * 1e6:.0f} vs {v} ({mine[k] * 1e6 / v - 1:+.0%})"
        for k, v in PROFILE_PHASES_US.items()))
    # The overlap rule (costmodel/overlap.py) on the measured phases themselves: the shared
    # expert, not in the table's readable part, runs under the 394 us combine there
    a, d, x, c = 388 + 19, 187, 81 + 8 + 39, 394
    rule = max(a, d) + max(d, x) + max(x, c) + max(c, a)
    print(f"  the overlap rule on the measured phases: {rule} us a MoE layer; measured "
          f"{PROFILE_LAYERS_MS / layers * 1e3:.0f} us a layer on average (61 layers, 3 dense)")
    lo, hi = (PROFILE_ROWS * (1 + a) for a in MTP_ACCEPTANCE)

    def share(tokens_per_step):  # the day average over the profiled tokens/s per node
        return PUBLISHED_DECODE * PROFILE_STEP_MS / 1e3 / (GPUS_PER_NODE * tokens_per_step)

    print(f"  with {MTP_ACCEPTANCE[0]:.0%}-{MTP_ACCEPTANCE[1]:.0%} of second tokens accepted: "
          f"measured {lo / PROFILE_ROWS / PROFILE_STEP_MS * 1e3:.1f}-"
          f"{hi / PROFILE_ROWS / PROFILE_STEP_MS * 1e3:.1f} tokens/s per user, "
          f"{GPUS_PER_NODE * lo / PROFILE_STEP_MS:.1f}k-{GPUS_PER_NODE * hi / PROFILE_STEP_MS:.1f}k"
          f" per node; model {GPUS_PER_NODE * lo / r.duration / 1e3:.1f}k-"
          f"{GPUS_PER_NODE * hi / r.duration / 1e3:.1f}k; the published day average "
          f"{PUBLISHED_DECODE / 1e3:.1f}k is {share(hi):.0%}-{share(lo):.0%} of the measured")


def prefill_day_mix_at_capacity() -> None:
    """SGLang's measured prefill capacity carried over to the day's prompt mix by the
    model's own ratio between the two mixes (an estimate, not a measurement)."""
    for overlap in (True, False):
        pre = make_deployment("deepseek-v3-production", overlap=overlap)[0]
        n = 4 * pre.num_gpus
        day = PROMPT / pre.run(Batch(range(n), [PROMPT - CACHED] * n, [CACHED] * n)).duration
        fresh = 4096 / pre.run(fresh_4k(n)).duration
        capacity = SGLANG_PREFILL_4K * day / fresh
        profile = DEEPSEEK_PROFILE_PREFILL * day / fresh
        print(f"prefill, overlap {'on ' if overlap else 'off'}: the day's prompts run "
              f"{day / fresh:.2f}x the input tokens/s of 4K uncached ones in the model, so "
              f"SGLang's measured {SGLANG_PREFILL_4K / 1e3:.1f}k means about "
              f"{capacity / 1e3:.0f}k per node on the day's mix at capacity, DeepSeek's "
              f"profile ({DEEPSEEK_PROFILE_PREFILL / 1e3:.1f}k, balanced) about "
              f"{profile / 1e3:.0f}k; the published {PUBLISHED_PREFILL / 1e3:.1f}k is "
              f"{PUBLISHED_PREFILL / capacity:.0%} and {PUBLISHED_PREFILL / profile:.0%} of them")


def rtp_llm_points() -> None:
    """The model on DeepSeek's production units at RTP-LLM's measured load (docstring)."""
    print("RTP-LLM on DeepSeek's production layout (H800, RoCE; 4K in / 2K out, TTFT <= 1.6 s, "
          "ITL <= 50 ms)")
    for overlap in (True, False):
        label = "on " if overlap else "off"
        pre, dec = make_deployment("deepseek-v3-production", overlap=overlap,
                                   decode_threshold=2)
        r = pre.run(fresh_4k(RTP_PREFILL_ROWS * pre.num_gpus))
        _row(f"prefill {label}", r, GPUS_PER_NODE * RTP_PREFILL_ROWS * 4096 / r.duration,
             RTP_PREFILL_NODE)
        print(f"    {RTP_PREFILL_ROWS} x 4K prompts/GPU: {r.duration:.2f} s a step vs "
              f"{RTP_PREFILL_STEP_S} s measured")
        # MTP: each request feeds its last token and one draft; 85-90% of drafts accepted
        n = RTP_CONCURRENT
        r = dec.run(mtp_batch(n, RTP_CONTEXT - 2))
        lo, hi = ((1 + a) / r.duration for a in MTP_ACCEPTANCE)
        per_gpu = n / dec.num_gpus
        print(f"  decode {label}  {_breakdown(r)} | {RTP_CONCURRENT:,} requests "
              f"({per_gpu:.1f}/GPU, MTP): {lo:.1f}-{hi:.1f} tokens/s per user vs "
              f"{RTP_USER_RATE:.0f}; {GPUS_PER_NODE * per_gpu * lo / 1e3:.1f}k-"
              f"{GPUS_PER_NODE * per_gpu * hi / 1e3:.1f}k tok/s/node vs "
              f"{RTP_DECODE_NODE / 1e3:.1f}k measured "
              f"({GPUS_PER_NODE * per_gpu * lo / RTP_DECODE_NODE - 1:+.0%} to "
              f"{GPUS_PER_NODE * per_gpu * hi / RTP_DECODE_NODE - 1:+.0%})")
        # "at lower concurrency a single user reaches 42 TPS": concurrency not given; the
        # model at one request per GPU, the least load its data-parallel attention runs
        n = dec.num_gpus
        r = dec.run(mtp_batch(n, RTP_CONTEXT - 2))
        lo, hi = ((1 + a) / r.duration for a in MTP_ACCEPTANCE)
        print(f"    1 request/GPU: {r.duration * 1e3:.1f} ms a step, {lo:.0f}-{hi:.0f} tokens/s "
              f"per user vs {RTP_LOW_LOAD_RATE:.0f} measured at low concurrency")


if __name__ == "__main__":
    main()
    day_average_nodes()
    at_capacity()
    overlap_ablation()
    prefill_day_mix_at_capacity()
    decode_profile()
    rtp_llm_points()
