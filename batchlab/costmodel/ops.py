"""The op table: FLOPs and bytes of every op of a layer, as linear functions of batch features.

Everything the cost of an op depends on is one of ten batch features (per GPU, per
micro-batch; see `features.py`):
    ONE (1), T (tokens fed), R (rows), TP/CP/AP (tokens, context keys and query-key pairs of
    prefill rows), RD/CD/TD/QD (rows, context keys read, tokens fed and query-key pairs of
    decode rows: rows feeding at most the step model's `decode_threshold` tokens, 1 unless
    speculative decoding verifies drafts; for one-token rows TD = RD and QD = CD).
So an op is two coefficient rows, FLOPs = F . f and bytes = B . f, where B[ONE] holds the
weights the op reads once per micro-batch. Building the table once per device turns a step
into a few small matrix-vector products instead of a Python loop over layers and ops.

Per-GPU shares follow the layout: projections, FFNs and shared experts are split over `tp`
(KV heads too, replicated when tp exceeds them); MLA's down-projections and latent cache are
replicated on every tensor-parallel rank, as vLLM and SGLang do. Attention over all rows is
one op, as one variable-length kernel runs mixed prefill and decode rows in vLLM V1; its work
is prefill-style for rows feeding several tokens (MLA: decompress the latent cache, then
ordinary attention) and decode-style for rows feeding one, or up to `decode_threshold` (MLA:
"absorbed" weights, attention over the 576-wide latent, every key read once for the row's
queries, as FlashMLA runs several query tokens a row). One op also keeps the model
monotone: a row that feeds more tokens only ever adds FLOPs and bytes. KV is read once per
row per layer (FlashAttention's re-reads across query tiles are left out). Routed experts
depend on routing, so they are kept as coefficients per token assignment and per touched
expert (see `ExpertCoeffs`).
"""

from __future__ import annotations

import attrs

from .gpus import GPUSpec
from .models import ModelConfig
from .parallel import Layout

ONE, T, R, TP, CP, AP, RD, CD, TD, QD = range(10)
NUM_FEATURES = 10
# Where an op runs: every layer, dense layers, MoE layers, first stage, last stage.
EVERY, DENSE, MOE, FIRST, LAST = range(5)
ATTENTION, FFN, HEAD = "attention", "ffn", "head"


@attrs.frozen(slots=True)
class Op:
    name: str
    part: str          # attention / ffn / head: which pool runs it when disaggregated
    where: int         # EVERY / DENSE / MOE / FIRST / LAST
    peak: float        # FLOP/s it can reach (GEMMs may use FP8 tensor cores)
    flops: tuple       # coefficients over the features
    bytes: tuple
    gemms: tuple = ()  # (N, K) of each weight GEMM on one GPU, for measured kernels


@attrs.frozen(slots=True)
class ExpertCoeffs:
    """Routed experts on one GPU of the busiest EP rank."""

    flops_per_assignment: float   # one token through one expert (this GPU's slice)
    bytes_per_assignment: float   # its activations in and out
    bytes_per_expert: float       # weights of one touched expert (this GPU's slice)
    peak: float
    gemms: tuple = ()             # (N, K) of one expert's GEMMs on this GPU


def _vec(**coeffs) -> tuple:
    v = [0.0] * NUM_FEATURES
    for key, value in coeffs.items():
        v[globals()[key]] += float(value)
    return tuple(v)


def build_ops(m: ModelConfig, lay: Layout, gpu: GPUSpec) -> tuple[list[Op], ExpertCoeffs | None]:
    """All ops of one layer of each kind, plus the embedding and output head, per GPU."""
    h, tp, ab, wb, kvb = m.hidden_size, lay.tp, m.act_bytes, m.weight_bytes, m.kv_bytes
    head_wb = max(wb, 2)  # embeddings and output head stay 16-bit in FP8 checkpoints
    gemm, bf16 = gpu.matmul_flops(m.weight_dtype), gpu.bf16_flops
    nh = m.num_heads / tp
    ops: list[Op] = []

    def op(name, part, where, flops, bytes_, peak=gemm, gemms=()):
        ops.append(Op(name, part, where, peak, flops, bytes_, tuple(gemms)))

    def norm(name, part, where):
        op(name, part, where, _vec(T=4 * h), _vec(ONE=h * wb, T=2 * h * ab), peak=bf16)

    def gemm_op(name, part, where, params, d_in, d_out, gemms=()):
        # a weight GEMM: 2 FLOPs per weight per token; weights read once; activations in/out
        op(name, part, where, _vec(T=2 * params), _vec(ONE=params * wb, T=(d_in + d_out) * ab),
           gemms=gemms)

    def ffn_gemms(inter):  # gate and up fused, then down (an un-gated FFN: up, down)
        inter = int(round(inter))
        return ((2 * inter, h), (h, inter)) if mats == 3 else ((inter, h), (h, inter))

    # ---- attention side, every layer -----------------------------------------------------
    norm("attn_norm", ATTENTION, EVERY)
    if m.attention == "mla":
        qk, nope, rope, lora, v = (m.qk_nope_head_dim + m.qk_rope_head_dim, m.qk_nope_head_dim,
                                   m.qk_rope_head_dim, m.kv_lora_rank, m.v_head_dim)
        q_params = (h * m.q_lora_rank + m.q_lora_rank * nh * qk) if m.q_lora_rank else h * nh * qk
        q_out = (m.q_lora_rank + nh * qk) if m.q_lora_rank else nh * qk
        n_q = int(round(nh * qk))
        q_gemms = (((m.q_lora_rank + lora + rope, h), (n_q, m.q_lora_rank)) if m.q_lora_rank
                   else ((n_q + lora + rope, h),))  # down-projections fused, then q up
        gemm_op("qkv_proj", ATTENTION, EVERY, q_params + h * (lora + rope), h,
                q_out + lora + rope, gemms=q_gemms)
        latent = (lora + rope) * kvb  # cached bytes per token, on every tp rank
        kv_b = lora * nh * (nope + v)  # up-projection of the latent to per-head K and V
        # prefill rows: decompress each key's latent with kv_b, then attention with qk/v dims;
        # decode rows: absorb kv_b into the query and output, attend over the latent itself
        # (decode rows: per token the absorbed projections, per query-key pair the attention
        # over the latent, per key read the latent once)
        op("attention", ATTENTION, EVERY,
           _vec(CP=2 * kv_b, AP=nh * (2 * qk + 2 * v),
                TD=2 * nh * (nope * lora + lora * v), QD=nh * (2 * (lora + rope) + 2 * lora)),
           _vec(ONE=kv_b * wb, CP=latent + 2 * nh * (nope + v) * ab,
                TP=nh * (qk + v) * ab + latent, CD=latent, TD=nh * (qk + v) * ab + latent),
           peak=bf16)
        o_in = nh * v
    else:
        hd = m.head_dim
        kv_heads = -(-m.num_kv_heads // tp)  # replicated when tp > num_kv_heads
        qkv = (nh + 2 * kv_heads) * hd
        gemm_op("qkv_proj", ATTENTION, EVERY, h * qkv, h, qkv, gemms=((int(round(qkv)), h),))
        kv_tok = 2 * kv_heads * hd * kvb
        # QK^T and PV: 2 FLOPs per multiply-add each, per head-dim, per query-key pair
        op("attention", ATTENTION, EVERY, _vec(AP=4 * nh * hd, QD=4 * nh * hd),
           _vec(CP=kv_tok, TP=2 * nh * hd * ab + kv_tok, CD=kv_tok,
                TD=2 * nh * hd * ab + kv_tok), peak=bf16)
        o_in = nh * hd
    gemm_op("o_proj", ATTENTION, EVERY, o_in * h, o_in, h, gemms=((h, int(round(o_in))),))

    # ---- FFN side ------------------------------------------------------------------------
    mats = m.ffn_matrices
    if m.num_dense_layers:
        norm("ffn_norm", FFN, DENSE)
        inter = m.intermediate_size / tp
        gemm_op("ffn", FFN, DENSE, mats * h * inter, 2 * h, 2 * (mats - 1) * inter,
                gemms=ffn_gemms(inter))
    experts = None
    if m.is_moe:
        norm("ffn_norm", FFN, MOE)
        e = m.num_experts
        op("router", FFN, MOE, _vec(T=2 * h * e), _vec(ONE=h * e * 2, T=(h + e) * ab),
           peak=bf16)
        if m.num_shared_experts:
            inter = m.num_shared_experts * m.moe_intermediate_size / tp
            gemm_op("shared_experts", FFN, MOE, mats * h * inter, 2 * h,
                    2 * (mats - 1) * inter, gemms=ffn_gemms(inter))
        slice_ = m.moe_intermediate_size / lay.expert_tp
        experts = ExpertCoeffs(
            flops_per_assignment=2 * mats * h * slice_,
            bytes_per_assignment=(2 * h + 2 * (mats - 1) * slice_) * ab,
            bytes_per_expert=mats * h * slice_ * wb, peak=gemm, gemms=ffn_gemms(slice_))

    # ---- once per step: embedding lookup (first stage), output head (last stage) ---------
    op("embed", HEAD, FIRST, _vec(), _vec(T=h * (head_wb + ab)), peak=bf16)
    vocab = m.vocab_size / tp
    # logits only for the rows' last positions, written in fp32 for sampling
    op("lm_head", HEAD, LAST, _vec(R=2 * h * vocab + 4 * h),
       _vec(ONE=(h * vocab + h) * head_wb, R=h * ab + 4 * vocab))
    return ops, experts
