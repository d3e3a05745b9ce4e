"""Named deployments: how a provider lays a model out over its fleet, as one call.

A `Deployment` is a model on a GPU kind in units: prefill units and decode units, each a
data-parallel-attention, expert-parallel replica of many GPUs (disaggregated prefill and
decode), or a single kind of unit serving both. `make_deployment(name)` turns it into
Devices: the prefill devices first, named "prefill-<i>", then the decode devices,
"decode-<i>", so the pd-disaggregated policy (which takes its first `num_prefill` devices as
prefill devices) runs it with `num_prefill` = the prefill units asked for; KV transfers
between them use `CostModelDevice.kv_transfer_time` (every GPU's NIC in parallel).

"deepseek-v3-production" is DeepSeek's published layout (DeepSeek-V3/R1 Inference System
Overview, github.com/deepseek-ai/open-infra-index, 2025-03-01): H800 nodes of 8 GPUs at $2
per GPU-hour (DeepSeek-V3 technical report, sec. 1); prefill units of 4 nodes (routed
experts EP32, MLA and shared expert DP32, i.e. tp=1), decode units of 18 nodes (routed
experts EP144, MLA and shared expert DP144, 32 redundant experts: 2 routed experts a GPU);
dual micro-batch overlap in prefill and decode; DeepEP for dispatch and combine. The blog's
figures (73.7k input tokens/s per prefill node with 56.3% of input tokens hitting the
on-disk KV cache; 14.8k output tokens/s per decode node at 20-22 tokens/s per user and an
average KV length of 4,989) are checked in tests/test_costmodel_deployment.py and printed by
benchmarks/deepseek_scale.py.
"""

from __future__ import annotations

import attrs

from batchlab.core import ConfigError

from .builder import make_devices
from .device import CostModelDevice
from .lookup import find_preset


@attrs.frozen(slots=True)
class Unit:
    """One replica kind: GPUs per unit and its parallel layout."""

    num_gpus: int
    tp: int = 1
    ep: int | None = None
    redundant_experts: int = 0
    overlap: bool = False


@attrs.frozen(slots=True)
class Deployment:
    """A named layout of a model over units of GPUs (prefill=None: one unit kind)."""

    name: str
    description: str
    model: str
    gpu: str
    decode: Unit
    prefill: Unit | None = None
    price_per_hour: float | None = None  # per GPU-hour; None: the GPU preset's
    runtime: str | None = None
    source: str = ""


DEPLOYMENTS: dict[str, Deployment] = {d.name: d for d in [
    Deployment(
        name="deepseek-v3-production",
        description="DeepSeek's serving layout on H800: prefill 4 nodes (EP32, DP32 "
                    "attention), decode 18 nodes (EP144 with 32 redundant experts, DP144 "
                    "attention), two-batch overlap, $2/GPU-h",
        model="deepseek-v3", gpu="h800",
        prefill=Unit(num_gpus=32, tp=1, ep=32, overlap=True),
        decode=Unit(num_gpus=144, tp=1, ep=144, redundant_experts=32, overlap=True),
        price_per_hour=2.0,
        source="DeepSeek-V3/R1 Inference System Overview (open-infra-index, 2025-03-01); "
               "DeepSeek-V3 technical report sec. 1 ($2 per H800 GPU-hour)"),
]}


def get_deployment(name) -> Deployment:
    """The deployment preset called `name` (see `lookup.py`), or a Deployment itself."""
    return find_preset("deployment", name, DEPLOYMENTS, Deployment)


def list_deployments() -> list[tuple[str, str]]:
    """(name, one-line description) of every deployment preset."""
    return [(d.name, d.description) for d in DEPLOYMENTS.values()]


def _unit_devices(d: Deployment, unit: Unit, count: int, role: str, overlap, kw) -> list:
    devices = []
    for i in range(count):
        dev = make_devices(d.model, d.gpu, unit.num_gpus, tp=unit.tp, ep=unit.ep,
                           redundant_experts=unit.redundant_experts,
                           overlap=unit.overlap if overlap is None else overlap,
                           price_per_hour=d.price_per_hour,
                           runtime=kw.pop("runtime", None) or d.runtime,
                           seed=kw.get("seed", 0) + i,
                           **{k: v for k, v in kw.items() if k != "seed"})[0]
        dev.name = f"{role}-{i}"
        devices.append(dev)
    return devices


def make_deployment(name, *, prefill_units: int = 1, decode_units: int = 1,
                    overlap: bool | None = None, **kwargs) -> list[CostModelDevice]:
    """Devices of deployment `name`: `prefill_units` prefill devices ("prefill-<i>") then
    `decode_units` decode devices ("decode-<i>"), each one unit of the layout.

    overlap: None keeps the preset's; True/False forces two-batch overlap on or off.
    kwargs go to make_devices (efficiency, runtime, routing, skew, seed, memory_utilization,
    max_batch_tokens, max_batch_rows); a layout or price keyword is an error (the deployment
    fixes those; build it with make_devices instead).
    """
    d = get_deployment(name)
    fixed = {"tp", "ep", "pp", "dp", "num_gpus", "redundant_experts", "price_per_hour",
             "gpus_per_node"} & set(kwargs)
    if fixed:
        raise ConfigError(f"make_deployment({d.name!r}): {', '.join(sorted(fixed))} is fixed by "
                          "the deployment; use make_devices for another layout")
    for what, n in (("prefill_units", prefill_units), ("decode_units", decode_units)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"make_deployment: {what} must be a whole number >= 0, not {n!r}")
    if d.prefill is None and prefill_units:
        prefill_units = 0
    if prefill_units + decode_units == 0:
        raise ConfigError("make_deployment: give at least one unit (decode_units >= 1)")
    runtime = kwargs.pop("runtime", None)
    devices = []
    if prefill_units:
        devices += _unit_devices(d, d.prefill, prefill_units, "prefill", overlap,
                                 dict(kwargs, runtime=runtime))
    devices += _unit_devices(d, d.decode, decode_units, "decode", overlap,
                             dict(kwargs, runtime=runtime))
    return devices
