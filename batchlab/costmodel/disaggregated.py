"""Attention/FFN disaggregation (MegaScale-Infer, Step-3): a MoE model's attention on one pool
of GPUs, its experts on another, micro-batches ping-ponging between them every layer.

Layout. GPUs 0..A-1 form the attention pool: attention is data-parallel over them (each GPU
holds every layer's attention weights, the embedding and the output head, and the KV cache of
its share of the sequences). GPUs A..A+F-1 form the FFN pool: routed experts are
expert-parallel over them (E/F experts each); router, shared experts and dense FFN layers are
data-parallel. Every layer, each micro-batch's hidden states go from the attention pool to the
experts (dispatch) and back (combine) over the link between the pools: NVLink when both pools
sit in one server, the GPUs' NICs otherwise (the `Cluster` graph says which).

Step time. A step of m micro-batches, per layer and per micro-batch: attention a (attention
pool), dispatch c, experts f (FFN pool), combine c. Stage times are the cost model's own
`part_times` of each micro-batch (rows split m ways, strided), divided by the layer count, and
averaged over the micro-batches. One micro-batch's round trip through a layer takes
R = a + 2c + f; the busiest resource (either pool, or the link) needs b = max(a, c, f) per
micro-batch, so one layer of all m micro-batches takes P = max(R, m b): with few micro-batches
the round trip sets the pace and the pools take turns idling (the bubble); with enough of
them the busiest resource never waits. Over L layers the first micro-batch starts layer l + 1
at l P, and the last one leaves the last layer (m - 1) b after the first:

    duration = (L - 1) max(R, m b) + R + (m - 1) b + output head + step overhead

For one layer with no transfer and a = f this is (m + 2 - 1) stage slots, the two-stage
pipeline's classic count; for m = 1 it is L R, no overlap. Both pools busy needs
m b >= R, i.e. m >= 2 + 2c/f when a = f: MegaScale-Infer's condition on the micro-batch count.
But every micro-batch reads the weights again (the experts' above all), so more micro-batches
are not free: `suggest_micro_batches` predicts the step for each m and returns the shortest.
Bubble fraction = 1 - (work of both pools) / (2 x pipeline time).

Transfers are sized as k copies of each token's hidden state per MoE layer (one per chosen
expert; one copy for dense layers), in the activation dtype; the busiest end of the link (an
attention GPU's sends or an FFN GPU's receives) sets the time. DeepSeek's FP8 dispatch and
per-node deduplication would shrink them; they are left out, so transfers are an upper bound.

Memory differs by pool: attention GPUs hold attention weights, embeddings and head, the
activations of their share of the largest step plus the hidden states of micro-batches in
flight, and the KV cache in what is left (so `kv_capacity_tokens` is the attention pool's);
FFN GPUs hold their experts and a double buffer of dispatched tokens (one micro-batch
computing while the next arrives), and no KV cache: what they have left over is stranded.
"""

from __future__ import annotations

import attrs

from batchlab.core import Batch, ConfigError, StepCost, StepResult

from .checks import count, fraction, non_negative
from .gpus import GPUSpec
from .loading import resolve_efficiency, resolve_gpu, resolve_model
from .memory import GIB, kv_bytes_per_token_layer_gpu
from .models import ModelConfig
from .moe import Router
from .parallel import Layout
from .step import StepModel
from .topology import Cluster, CollectiveCost


@attrs.frozen(slots=True)
class PoolMemory:
    """Bytes per GPU of each pool, and the KV capacity they leave (attention pool only)."""

    usable_per_gpu: float
    attention_weights_per_gpu: float
    attention_activations_per_gpu: float
    kv_bytes_per_token_gpu: float
    ffn_weights_per_gpu: float
    ffn_activations_per_gpu: float
    kv_capacity_tokens: int

    @property
    def ffn_stranded_per_gpu(self) -> float:
        """Memory an FFN GPU has left that no KV cache can use."""
        return self.usable_per_gpu - self.ffn_weights_per_gpu - self.ffn_activations_per_gpu


@attrs.frozen(slots=True)
class StageTimes:
    """Per layer and per micro-batch (seconds, averaged), and the step's shape."""

    attention: float
    transfer: float   # one direction (dispatch, or combine)
    ffn: float
    head: float       # output head of all micro-batches, once per step
    num_layers: int
    num_micro_batches: int

    @property
    def round_trip(self) -> float:
        return self.attention + 2 * self.transfer + self.ffn

    @property
    def bottleneck(self) -> float:
        return max(self.attention, self.transfer, self.ffn)

    @property
    def pipeline(self) -> float:
        m, b, r = self.num_micro_batches, self.bottleneck, self.round_trip
        return (self.num_layers - 1) * max(r, m * b) + r + (m - 1) * b


def plan_pool_memory(m: ModelConfig, gpu: GPUSpec, attention_gpus: int, ffn_gpus: int, *,
                     memory_utilization: float, max_batch_tokens: int,
                     max_batch_rows: int) -> PoolMemory:
    """Weights, activations and KV capacity per pool; ConfigError naming the pool that does
    not fit."""
    usable = gpu.memory_bytes * memory_utilization
    h, ab, wb, head_wb = m.hidden_size, m.act_bytes, m.weight_bytes, max(m.weight_bytes, 2)
    attn_w = m.num_layers * m.attention_params * wb + m.embedding_params * head_wb
    tokens = max_batch_tokens / attention_gpus
    qkv = (m.num_heads + 2 * m.num_kv_heads) * m.head_dim
    # one layer's activations at a time, plus send and receive buffers of the hidden states
    attn_act = (tokens * (4 * h + qkv + 2 * h) * ab
                + min(max_batch_rows, max_batch_tokens) / attention_gpus * m.vocab_size * 4)
    kv_tok = kv_bytes_per_token_layer_gpu(m, 1) * m.num_layers
    ffn_w = (m.num_dense_layers * m.dense_ffn_params
             + m.num_moe_layers * (m.moe_fixed_params
                                   + m.num_experts / ffn_gpus * m.expert_params)) * wb
    inter = (m.ffn_matrices - 1) * m.moe_intermediate_size
    ffn_act = 2 * max_batch_tokens * m.num_experts_per_tok / ffn_gpus * (2 * h + inter) * ab
    for pool, n, weights, acts, hint in (
            ("attention", attention_gpus, attn_w, attn_act, "a larger GPU"),
            ("FFN", ffn_gpus, ffn_w, ffn_act, "more ffn_gpus")):
        if weights + acts >= usable:
            raise ConfigError(
                f"{m.name}: the {pool} pool does not fit on {n} x {gpu.name}: one GPU must hold "
                f"{weights / GIB:.1f} GiB of weights + {acts / GIB:.1f} GiB of activations, "
                f"but {usable / GIB:.1f} GiB is usable; use {hint}")
    capacity = int((usable - attn_w - attn_act) // kv_tok) * attention_gpus
    return PoolMemory(usable, attn_w, attn_act, kv_tok, ffn_w, ffn_act, capacity)


@attrs.define(eq=False)
class DisaggregatedDevice:
    """One MoE replica split into an attention pool and an FFN pool (see the module doc)."""

    name: str
    attention_model: StepModel = attrs.field(repr=False)  # its attention side is used
    ffn_model: StepModel = attrs.field(repr=False)        # its FFN side is used
    memory: PoolMemory = attrs.field(repr=False)
    link: CollectiveCost = attrs.field(repr=False)        # attention GPU -> FFN GPU
    price_per_hour: float
    num_attention_gpus: int
    num_ffn_gpus: int
    kv_capacity_tokens: int = attrs.field(init=False)
    num_gpus: int = attrs.field(init=False)
    peak_flops: float = attrs.field(init=False)
    peak_bandwidth: float = attrs.field(init=False)

    def __attrs_post_init__(self):
        self.kv_capacity_tokens = self.memory.kv_capacity_tokens
        self.num_gpus = self.num_attention_gpus + self.num_ffn_gpus
        gpu, model = self.attention_model.gpu, self.attention_model.model
        self.peak_flops = gpu.matmul_flops(model.weight_dtype) * self.num_gpus
        self.peak_bandwidth = gpu.memory_bandwidth * self.num_gpus

    @property
    def model(self) -> ModelConfig:
        return self.attention_model.model

    @property
    def num_experts(self) -> int:
        return self.model.num_experts

    def _parts(self, sub: Batch) -> tuple[float, float, float, float]:
        """Attention, one-way transfer and experts per layer, and the head, of one pass."""
        mdl, eff = self.model, self.attention_model.efficiency
        pa, pf = self.attention_model.part_times(sub), self.ffn_model.part_times(sub)
        copies = (mdl.num_moe_layers * mdl.num_experts_per_tok + mdl.num_dense_layers) \
            / mdl.num_layers
        busiest = copies * mdl.hidden_size * mdl.act_bytes * sub.num_tokens \
            / min(self.num_attention_gpus, self.num_ffn_gpus)
        return ((pa.attention + pa.attention_comm) / mdl.num_layers,
                self.link.time(busiest, eff.communication), pf.ffn / mdl.num_layers, pa.head)

    def stage_times(self, batch: Batch, num_micro_batches: int | None = None) -> StageTimes:
        """Per-layer stage times of `batch` split into m micro-batches (default: its own)."""
        m = max(1, min(int(num_micro_batches or batch.num_micro_batches), batch.num_seqs))
        total = [0.0, 0.0, 0.0, 0.0]
        for i in range(m):
            sub = batch if m == 1 else Batch(batch.request_ids[i::m], batch.num_new_tokens[i::m],
                                             batch.num_cached_tokens[i::m])
            total = [t + x for t, x in zip(total, self._parts(sub))]
        a, c, f, head = total
        return StageTimes(a / m, c / m, f / m, head, self.model.num_layers, m)

    def suggest_micro_batches(self, batch: Batch, limit: int = 8) -> int:
        """The micro-batch count with the shortest predicted step, within limit.

        More micro-batches overlap the pools (the bubble shrinks) but each one reads the
        weights again, the experts' above all: at small decode batches one micro-batch is
        best, with large batches two or more. The step for m is predicted from one of its
        micro-batches (the first, largest, share of rows); m grows while that prediction
        improves (it is unimodal in m in practice), so a decode step costs two predictions.
        """
        limit = max(1, min(limit, batch.num_seqs))
        best, best_time = 1, float("inf")
        for m in range(1, limit + 1):
            sub = batch if m == 1 else Batch(batch.request_ids[::m], batch.num_new_tokens[::m],
                                             batch.num_cached_tokens[::m])
            a, c, f, head = self._parts(sub)
            t = StageTimes(a, c, f, 0.0, self.model.num_layers, m).pipeline + m * head
            if t >= best_time:
                break
            best, best_time = m, t
        return best

    def run(self, batch: Batch) -> StepResult:
        if batch.num_seqs == 0:
            overhead = self.attention_model.efficiency.step_overhead
            return StepResult(overhead, StepCost(overhead=overhead))
        st = self.stage_times(batch)
        m, layers = st.num_micro_batches, st.num_layers
        overhead = self.attention_model.efficiency.step_overhead
        duration = st.pipeline + st.head + overhead
        # Along the critical path: each layer's period is a round trip (compute and two
        # transfers) or m turns of the busiest resource; the last layer adds (m - 1) turns.
        link_bound = st.transfer >= max(st.attention, st.ffn)
        periods = layers - 1 if st.round_trip >= m * st.bottleneck else 0
        turns = (layers - 1 - periods) * m + (m - 1)
        comm = (periods + 1) * 2 * st.transfer + (turns * st.bottleneck if link_bound else 0.0)
        work = st.pipeline - comm + st.head
        # FLOPs, bytes and routing as the colocated cost model counts them for m micro-batches
        _, ref = self.ffn_model.cost(attrs.evolve(batch, num_micro_batches=m))
        share = ref.compute / (ref.compute + ref.memory) if ref.compute + ref.memory else 0.0
        busy = m * layers * (st.attention + st.ffn)
        bubble = max(0.0, 1.0 - busy / (2 * st.pipeline)) if st.pipeline > 0 else 0.0
        return StepResult(duration, StepCost(
            compute=work * share, memory=work * (1 - share), communication=comm,
            overhead=overhead, flops=ref.flops, bytes=ref.bytes,
            experts_touched=ref.experts_touched, tokens_per_expert=ref.tokens_per_expert,
            bubble_fraction=bubble, padded_tokens=batch.num_padded_tokens))

    def describe(self) -> str:
        mem = self.memory
        return (f"{self.name}: {self.model.name}, attention on {self.num_attention_gpus} x "
                f"{self.attention_model.gpu.name} (KV {self.kv_capacity_tokens:,} tokens), "
                f"experts on {self.num_ffn_gpus} ({mem.ffn_weights_per_gpu / GIB:.1f} GiB "
                f"each, {mem.ffn_stranded_per_gpu / GIB:.1f} GiB stranded), "
                f"${self.price_per_hour:.2f}/h")


def make_disaggregated_device(model, gpu, attention_gpus: int, ffn_gpus: int, *,
                              efficiency=None, price_per_hour: float | None = None,
                              gpus_per_node: int | None = None, memory_utilization: float = 0.9,
                              max_batch_tokens: int = 8192, max_batch_rows: int = 256,
                              routing: str = "expected", skew: float = 0.0, seed: int = 0,
                              name: str | None = None) -> DisaggregatedDevice:
    """A Device for `model` (a MoE preset, object or file) with attention on `attention_gpus`
    GPUs and experts on `ffn_gpus` GPUs of kind `gpu`, the attention pool first in the
    cluster's servers. price_per_hour is per GPU (default: the GPU preset's)."""
    m, g, eff = resolve_model(model), resolve_gpu(gpu), resolve_efficiency(efficiency)
    if not m.is_moe:
        raise ConfigError(f"attention/FFN disaggregation needs a mixture-of-experts model; "
                          f"{m.name} is dense")
    n_a = count("make_disaggregated_device", "attention_gpus", attention_gpus)
    n_f = count("make_disaggregated_device", "ffn_gpus", ffn_gpus)
    if m.num_experts % n_f:
        raise ConfigError(f"ffn_gpus={n_f} must divide the {m.num_experts} routed experts of "
                          f"{m.name}")
    util = fraction("make_disaggregated_device", "memory_utilization", memory_utilization)
    price = g.price_per_hour if price_per_hour is None else non_negative(
        "make_disaggregated_device", "price_per_hour", price_per_hour)
    memory = plan_pool_memory(m, g, n_a, n_f, memory_utilization=util,
                              max_batch_tokens=max_batch_tokens, max_batch_rows=max_batch_rows)
    cluster = Cluster.build(g, n_a + n_f, gpus_per_node)
    dense, moe = (m.num_dense_layers,), (m.num_moe_layers,)
    # Built directly: data-parallel attention needs no tensor or expert groups of its own.
    attn_layout = Layout(tp=1, ep=1, pp=1, dp=1, stage_gpus=(tuple(range(n_a)),),
                         stage_dense_layers=dense, stage_moe_layers=moe)
    ffn_layout = Layout(tp=1, ep=n_f, pp=1, dp=1, stage_gpus=(tuple(range(n_a, n_a + n_f)),),
                        stage_dense_layers=dense, stage_moe_layers=moe)

    def router(ep):
        return Router(m.num_experts, m.num_experts_per_tok, ep, m.num_moe_layers,
                      mode=routing, skew=float(skew), seed=int(seed))

    attention = StepModel(m, g, attn_layout, eff, cluster, router(1))
    ffn = StepModel(m, g, ffn_layout, eff, cluster, router(n_f))
    return DisaggregatedDevice(name or f"{g.name}-a{n_a}f{n_f}", attention, ffn, memory,
                               cluster.p2p(0, n_a), price * (n_a + n_f), n_a, n_f)


__all__ = ["DisaggregatedDevice", "PoolMemory", "StageTimes", "make_disaggregated_device",
           "plan_pool_memory"]
