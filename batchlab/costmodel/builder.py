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
from .parallel import resolve_layout
from .step import StepModel
from .topology import Cluster


def make_devices(model: str | ModelConfig, gpu: str | GPUSpec, num_gpus: int = 1, *,
                 tp: int | None = None, ep: int | None = None, pp: int = 1, dp: int = 1,
                 efficiency=None, price_per_hour: float | None = None,
                 routing: str = "expected", skew: float = 0.0, seed: int = 0,
                 gpus_per_node: int | None = None, memory_utilization: float = 0.9,
                 max_batch_tokens: int = 8192, max_batch_rows: int = 256,
                 ) -> list[CostModelDevice]:
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
    """
    m = resolve_model(model)
    g = resolve_gpu(gpu)
    eff = resolve_efficiency(efficiency)
    num_gpus = count("make_devices", "num_gpus", num_gpus)
    per_node = (count("make_devices", "gpus_per_node", gpus_per_node)
                if gpus_per_node is not None else None)
    util = fraction("make_devices", "memory_utilization", memory_utilization)
    price = g.price_per_hour if price_per_hour is None else non_negative(
        "make_devices", "price_per_hour", price_per_hour)
    count("make_devices", "max_batch_tokens", max_batch_tokens)
    count("make_devices", "max_batch_rows", max_batch_rows)
    if routing not in ("expected", "sampled"):
        raise ConfigError(f"routing {routing!r} is unknown; use 'expected' (closed form) or "
                          "'sampled' (seeded draws every step)")
    if not isinstance(skew, (int, float)) or isinstance(skew, bool) or not math.isfinite(skew) \
            or skew < 0:
        raise ConfigError(f"make_devices: field 'skew' is {skew!r}; it must be a number >= 0")
    layout0 = resolve_layout(m, num_gpus, tp=tp, ep=ep, pp=pp, dp=dp)
    plan = plan_memory(m, layout0, g, memory_utilization=util,
                       max_batch_tokens=max_batch_tokens, max_batch_rows=max_batch_rows)
    if plan.kv_capacity_tokens < 1:
        raise ConfigError(f"{m.name} on {layout0.num_gpus} x {g.name} leaves no memory for the "
                          "KV cache; use more GPUs per replica or a larger GPU")
    cluster = Cluster.build(g, num_gpus, per_node)
    per_replica = num_gpus // dp
    devices = []
    for r in range(dp):
        layout = resolve_layout(m, num_gpus, tp=tp, ep=ep, pp=pp, dp=dp, replica=r)
        router = None
        if m.is_moe:
            router = Router(m.num_experts, m.num_experts_per_tok, layout.ep, m.num_moe_layers,
                            mode=routing, skew=float(skew), seed=int(seed) + r)
        step = StepModel(m, g, layout, eff, cluster, router)
        devices.append(CostModelDevice(f"{g.name}x{per_replica}-{r}", step, plan,
                                       price * per_replica))
    return devices
