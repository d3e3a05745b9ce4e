"""GPU memory: weights per GPU, the activation reserve, and the KV cache that fits in the rest.

A device's `kv_capacity_tokens` is what policies plan against, so it must be real: on each
GPU, usable memory (a `memory_utilization` share of it, 0.9 as vLLM's
`gpu_memory_utilization` default, the rest left to the CUDA context, allocator slack and
graphs) minus that GPU's slice of the weights minus a reserve for the activations of the
largest step, divided by the KV bytes one token takes on that GPU. A model that does not fit
is refused with the numbers and the way out, never silently given zero capacity.
"""

from __future__ import annotations

import math

import attrs

from batchlab.core import ConfigError

from .gpus import GPUSpec
from .models import ModelConfig
from .parallel import Layout

GIB = 2**30


@attrs.frozen(slots=True)
class MemoryPlan:
    """Per-GPU memory of the busiest stage of one replica, in bytes, and the KV capacity."""

    weights_per_gpu: tuple[float, ...]   # per pipeline stage
    activations_per_gpu: float
    usable_per_gpu: float
    kv_bytes_per_token_gpu: tuple[float, ...]  # per stage (all its layers)
    kv_capacity_tokens: int


def _attention_params_per_gpu(m: ModelConfig, tp: int) -> float:
    h, nh = m.hidden_size, m.num_heads / tp
    if m.attention == "mla":
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        q = (h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * nh * qk) if m.q_lora_rank \
            else h * nh * qk
        kv = (h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
              + m.kv_lora_rank * nh * (m.qk_nope_head_dim + m.v_head_dim))
        return q + kv + nh * m.v_head_dim * h + h
    kv_heads = -(-m.num_kv_heads // tp)
    return (h * (nh + 2 * kv_heads) * m.head_dim + nh * m.head_dim * h + h
            + (2 * m.head_dim if m.qk_norm else 0))


def kv_bytes_per_token_layer_gpu(m: ModelConfig, tp: int) -> float:
    """KV-cache bytes one token takes in one layer on one GPU."""
    if m.attention == "mla":  # the latent is shared by all heads: every tp rank keeps it whole
        return (m.kv_lora_rank + m.qk_rope_head_dim) * m.kv_bytes
    return 2 * -(-m.num_kv_heads // tp) * m.head_dim * m.kv_bytes


def weights_per_gpu(m: ModelConfig, lay: Layout) -> list[float]:
    """Bytes of weights on one GPU of each pipeline stage."""
    wb, head_wb, tp = m.weight_bytes, max(m.weight_bytes, 2), lay.tp
    attn = _attention_params_per_gpu(m, tp) * wb
    dense = (m.ffn_matrices * m.hidden_size * m.intermediate_size / tp + m.hidden_size) * wb
    moe = 0.0
    if m.is_moe:
        moe = (m.num_experts * m.hidden_size * 2  # router kept in 16 bits
               + (m.num_shared_experts * m.expert_params / tp + m.hidden_size) * wb
               + ((lay.expert_slots or m.num_experts) / lay.ep) * m.expert_params
               / lay.expert_tp * wb)  # redundant copies cost memory too
    table = m.vocab_size * m.hidden_size / tp * head_wb
    out = []
    for s in range(lay.pp):
        nd, nm = lay.stage_dense_layers[s], lay.stage_moe_layers[s]
        w = (nd + nm) * attn + nd * dense + nm * moe
        if s == 0:
            w += table
        if s == lay.pp - 1 and not (m.tie_word_embeddings and lay.pp == 1):
            w += table + m.hidden_size * head_wb
        out.append(w)
    return out


def activation_reserve(m: ModelConfig, lay: Layout, max_batch_tokens: int,
                       max_batch_rows: int) -> float:
    """Bytes of live activations of the largest step on one GPU (one layer at a time)."""
    h, ab = m.hidden_size, m.act_bytes
    tokens = max_batch_tokens / lay.attention_dp
    nh = m.num_heads / lay.tp
    per_token = [(m.num_heads + 2 * m.num_kv_heads) * m.head_dim / lay.tp]
    if m.attention == "mla":  # prefill decompresses K and V of the whole context
        per_token.append(nh * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim))
    if m.num_dense_layers:
        per_token.append((m.ffn_matrices - 1) * m.intermediate_size / lay.tp)
    if m.is_moe:
        inter = (m.ffn_matrices - 1) * m.moe_intermediate_size / lay.expert_tp + 2 * h
        per_token.append(m.num_experts_per_tok * inter * lay.expert_tp / lay.ep)
    logits = min(max_batch_rows, max_batch_tokens) * m.vocab_size / lay.tp * 4
    return tokens * (4 * h + max(per_token)) * ab + logits


def plan_memory(m: ModelConfig, lay: Layout, gpu: GPUSpec, *, memory_utilization: float = 0.9,
                max_batch_tokens: int = 8192, max_batch_rows: int = 256) -> MemoryPlan:
    """Weights, activations and KV capacity of one replica; ConfigError if it cannot fit."""
    weights = weights_per_gpu(m, lay)
    acts = activation_reserve(m, lay, max_batch_tokens, max_batch_rows)
    usable = gpu.memory_bytes * memory_utilization
    worst = max(weights)
    if worst + acts >= usable:
        extra = lay.expert_slots - m.num_experts if m.is_moe and lay.expert_slots else 0
        if extra > 0:  # the copies are what does not fit: say so, not "more GPUs"
            plain = max(weights_per_gpu(m, attrs.evolve(lay, expert_slots=m.num_experts)))
            copies = worst - plain
            if plain + acts < usable:
                raise ConfigError(
                    f"{m.name} with {extra} redundant experts does not fit on "
                    f"{lay.num_gpus} x {gpu.name}: the copies add about {copies / GIB:.1f} GiB "
                    f"of weights per GPU, and one GPU must hold {worst / GIB:.1f} GiB of "
                    f"weights + {acts / GIB:.1f} GiB of activations in {usable / GIB:.1f} "
                    "GiB usable; use fewer redundant experts (redundant_experts, "
                    "--redundant-experts), or more GPUs")
        total = m.num_params * m.weight_bytes
        need = math.ceil(total / max(usable - acts, 1.0))
        suggest = 1 << max(0, math.ceil(math.log2(max(need, 1))))
        raise ConfigError(
            f"{m.name} does not fit on {lay.num_gpus} x {gpu.name}: its weights are "
            f"{total / 1e9:.1f} GB ({m.num_params / 1e9:.1f}B params in {m.weight_dtype}); with "
            f"tp={lay.tp}, ep={lay.ep}, pp={lay.pp} one GPU must hold {worst / GIB:.1f} GiB of "
            f"weights + {acts / GIB:.1f} GiB of activations, but only {usable / GIB:.1f} GiB "
            f"of its {gpu.memory_bytes / GIB:.1f} GiB is usable "
            f"({memory_utilization:.0%}). Use more GPUs per replica: at least {need} "
            f"(e.g. num_gpus={suggest}, --gpus {suggest}), or a larger GPU")
    per_layer = kv_bytes_per_token_layer_gpu(m, lay.tp)
    kv_tok = [per_layer * (d + e) for d, e in zip(lay.stage_dense_layers, lay.stage_moe_layers)]
    tokens = min((usable - w - acts) / k for w, k in zip(weights, kv_tok))
    return MemoryPlan(tuple(weights), acts, usable, tuple(kv_tok),
                      int(tokens) * lay.attention_dp)
