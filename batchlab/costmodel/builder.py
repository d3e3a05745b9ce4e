"""`make_devices`: the one call that turns (model, GPU, cluster size, parallelism) into Devices.

This is what the CLI and benchmark scripts use: `make_devices("deepseek-v3", "h200", 8)` gives
one Device standing for an 8-GPU H200 server serving DeepSeek-V3; `dp=2` on 16 GPUs gives two
such Devices ("h200x8-0", "h200x8-1") that the policy schedules independently.
"""

from __future__ import annotations

import math

from batchlab.core import ConfigError

from .checks import count, fraction, non_negative
from .device import CostModelDevice
from .gpus import GPUSpec
from .loading import resolve_efficiency, resolve_gpu, resolve_model
from .memory import plan_memory
from .models import ModelConfig
from .moe import Router
from .parallel import Layout, resolve_layout
from .runtime import apply_runtime
from .step import StepModel
from .topology import Cluster


def make_devices(model: str | ModelConfig, gpu: str | GPUSpec, num_gpus: int = 1, *,
                 tp: int | None = None, ep: int | None = None, pp: int = 1, dp: int = 1,
                 efficiency=None, price_per_hour: float | None = None,
                 routing: str = "expected", skew: float = 0.0, seed: int = 0,
                 gpus_per_node: int | None = None, memory_utilization: float = 0.9,
                 max_batch_tokens: int = 8192, max_batch_rows: int = 256,
                 redundant_experts: int = 0, overlap: bool = False, runtime=None,
                 decode_threshold: int = 1) -> list[CostModelDevice]:
    """Devices for `dp` replicas of `model` on `num_gpus` GPUs of kind `gpu` in all.

    model, gpu: preset names (see list_models(), list_gpus()), objects, dicts, or paths to
        .toml/.json files.
    num_gpus: GPUs in the whole cluster; each replica gets num_gpus / dp of them, laid out as
        pp pipeline stages of tp-way tensor parallel attention and ep-way expert parallel
        experts (defaults: tp = GPUs per stage; ep = GPUs per stage for MoE models).
    efficiency: None (defaults), an Efficiency, a dict of overrides or a profile file.
    price_per_hour: USD per GPU-hour (default: the GPU preset's); a device's price_per_hour
        is this times its GPUs.
    routing: "expected" (closed form) or "sampled" (seeded draws per step); skew: expert
        popularity skew (0 = uniform); seed: for sampled routing (replica r uses seed + r).
    gpus_per_node: servers' size (default: the GPU preset's, 8).
    memory_utilization, max_batch_tokens, max_batch_rows: the memory plan (see memory.py).
    redundant_experts: copies of routed experts placed EPLB-style (see moe.py), so that an ep
        that does not divide the experts can hold them (DeepSeek-V3: 256 + 32 on ep=144).
    overlap: two-batch overlap of communication with computation (see overlap.py); needs a
        layout with communication to hide and one pipeline stage.
    runtime: a runtime profile name ("cuda-graph", "eager", "overlap-scheduler"; see
        runtime.py) whose step and kernel overheads replace the efficiency profile's.
    decode_threshold: rows feeding at most this many tokens are decode rows: the attention's
        decode path (MLA: absorbed, over the latent cache; else the cache decompressed), and
        a batch of them only is a decode batch (DeepEP low-latency kernels, masked expert
        GEMMs), as engines run speculative verify steps. 1 (no speculative decoding), or 1 +
        the draft tokens verified a step (DeepSeek's MTP with one draft: 2).
    """
    m = resolve_model(model)
    g = resolve_gpu(gpu)
    eff = apply_runtime(resolve_efficiency(efficiency), runtime)
    num_gpus = count("make_devices", "num_gpus", num_gpus)
    per_node = (count("make_devices", "gpus_per_node", gpus_per_node)
                if gpus_per_node is not None else None)
    util = fraction("make_devices", "memory_utilization", memory_utilization)
    price = g.price_per_hour if price_per_hour is None else non_negative(
        "make_devices", "price_per_hour", price_per_hour)
    count("make_devices", "max_batch_tokens", max_batch_tokens)
    count("make_devices", "max_batch_rows", max_batch_rows)
    threshold = count("make_devices", "decode_threshold", decode_threshold)
    if routing not in ("expected", "sampled"):
        raise ConfigError(f"routing {routing!r} is unknown; use 'expected' (closed form) or "
                          "'sampled' (seeded draws every step)")
    if not isinstance(skew, (int, float)) or isinstance(skew, bool) or not math.isfinite(skew) \
            or skew < 0:
        raise ConfigError(f"make_devices: field 'skew' is {skew!r}; it must be a number >= 0")
    if not isinstance(overlap, bool):
        raise ConfigError(f"make_devices: field 'overlap' must be true or false, not "
                          f"{overlap!r}")
    layout0 = resolve_layout(m, num_gpus, tp=tp, ep=ep, pp=pp, dp=dp,
                             redundant_experts=redundant_experts)
    if overlap:
        check_overlap(m, layout0, g)
    plan = plan_memory(m, layout0, g, memory_utilization=util,
                       max_batch_tokens=max_batch_tokens, max_batch_rows=max_batch_rows)
    if plan.kv_capacity_tokens < 1:
        raise ConfigError(f"{m.name} on {layout0.num_gpus} x {g.name} leaves no memory for the "
                          "KV cache; use more GPUs per replica or a larger GPU")
    cluster = Cluster.build(g, num_gpus, per_node)
    per_replica = num_gpus // dp
    devices = []
    for r in range(dp):
        layout = resolve_layout(m, num_gpus, tp=tp, ep=ep, pp=pp, dp=dp, replica=r,
                                redundant_experts=redundant_experts)
        router = None
        if m.is_moe:
            router = Router(m.num_experts, m.num_experts_per_tok, layout.ep, m.num_moe_layers,
                            mode=routing, skew=float(skew), seed=int(seed) + r,
                            redundant=redundant_experts)
        step = StepModel(m, g, layout, eff, cluster, router, overlap=overlap,
                         decode_threshold=threshold)
        devices.append(CostModelDevice(f"{g.name}x{per_replica}-{r}", step, plan,
                                       price * per_replica))
    return devices


def check_overlap(m: ModelConfig, layout: Layout, g: GPUSpec) -> None:
    """Refuse two-batch overlap where it cannot apply, saying why."""
    if layout.pp > 1:
        raise ConfigError(f"overlap=True needs one pipeline stage, not pp={layout.pp}: "
                          "pipeline micro-batches already overlap stages; set pp=1")
    has_comm = layout.tp > 1 or (m.is_moe and layout.ep > 1)
    if not has_comm:
        raise ConfigError(f"overlap=True on {layout.num_gpus} x {g.name} (tp={layout.tp}, "
                          f"ep={layout.ep}) has no communication to hide; leave overlap off "
                          "or spread the model over more GPUs")
