"""The scale axis of `batchlab compare`: what a token costs each model at each demand, and
where (if anywhere) the MoE model becomes cheaper than the dense one.

Each deployment of the axis has a capacity at the SLO (req/s), a price ($/hour) and the mean
output tokens per request. Serving a demand of D req/s on a deployment takes ceil(D / capacity)
replicas — idle capacity is paid for — so its cost per million output tokens is

    ceil(D / capacity) x price_per_hour / 3600 / (D x tokens_per_request) x 1e6,

and a model's cost at D is that of its cheapest deployment. Below one replica's capacity the
cost falls as 1/D (one user pays for the whole replica); above it, it saw-tooths toward the
deployment's cost at capacity. The crossover is read off these two curves on a log grid of
demands; nothing here is fitted.

Named deployments: a [[scale]] entry may say `preset = NAME` instead of giving `deploy`;
`deployment_preset(NAME)` turns the name into run settings. This is the one place where a
deployment defined by the cost model (DeepSeek's production layout) plugs into the compare.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.errors import ConfigError

PRODUCTION = "deepseek-v3-production"


def deployment_preset(name: str) -> tuple[dict | None, str]:
    """Run settings of a named deployment, or (None, why it cannot run in this build).

    "deepseek-v3-production" is the cost model's preset of the same name
    (`batchlab.costmodel.make_deployment`): prefill units of 4 x 8 H800 (EP32) and a decode
    unit of 18 x 8 H800 (EP144, 32 redundant experts), two-batch overlap, $2 per GPU-hour
    (DeepSeek, "DeepSeek-V3/R1 Inference System Overview", open-infra-index, 2025-03-01), run
    under pd-disaggregated: prompts on the prefill units, KV caches moved to the decode unit.

    How many prefill units per decode unit also comes from that overview: its daily totals
    (608B input tokens, of which 56.3% hit the on-disk KV cache, and 168B output tokens) and
    per-node rates (73.7k input tokens/s per prefill node, counting cache hits; 14.8k output
    tokens/s per decode node) need 608/73.7 = 8.2 prefill node-days per 168/14.8 = 11.4 decode
    node-days: 0.73 prefill nodes per decode node, 13 per 18-node decode unit, i.e. three
    4-node prefill units (12 nodes). The caps are sized to the units, not to one node: a
    decode step takes up to 144 GPUs x 128 sequences, a prefill step 32 GPUs x 16k tokens.
    """
    if name == PRODUCTION:
        return {"deployment": PRODUCTION, "prefill_units": 3, "decode_units": 1,
                "policy": "pd-disaggregated", "policy.num_prefill": 3,
                "policy.max_num_seqs": 144 * 128, "policy.max_prefill_tokens": 32 * 16384}, ""
    raise ConfigError(f"[[scale]] preset {name!r} is unknown; known: {PRODUCTION}")


def _num(row: dict | None, key: str) -> float:
    value = (row or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def deployment_economics(row: dict) -> dict | None:
    """capacity_rps, price_per_hour, tokens_per_request of a capacity row (None if unknown)."""
    cap = _num(row, "capacity_rps")
    per_m, tok_s, rps = (_num(row, k) for k in (
        "usd_per_million_output_tokens", "output_tokens_per_s", "throughput_rps"))
    if not all(math.isfinite(x) and x > 0 for x in (cap, per_m, tok_s, rps)):
        return None
    return {"capacity_rps": cap, "price_per_hour": per_m * tok_s * 3600 / 1e6,
            "tokens_per_request": tok_s / rps, "num_gpus": row.get("num_gpus")}


def cost_at(economics: dict, demand: float) -> float:
    replicas = math.ceil(demand / economics["capacity_rps"] - 1e-9)
    usd_per_s = replicas * economics["price_per_hour"] / 3600
    return usd_per_s / (demand * economics["tokens_per_request"]) * 1e6


def demand_grid(deployments: list[dict], low: float | None = None,
                points: int = 240) -> np.ndarray:
    """Demands from `low` (one user's rate; default a tenth of the smallest capacity) to
    30 x the largest capacity, log-spaced."""
    caps = [d["capacity_rps"] for d in deployments]
    low = min(caps) / 10 if low is None or not low > 0 else min(low, min(caps) / 10)
    return np.geomspace(low, max(caps) * 30, points)


def cheapest_curve(deployments: list[dict], demands) -> list[tuple[float, float, str]]:
    """(demand, cost, label of the cheapest deployment) at each demand."""
    out = []
    for demand in demands:
        cost, label = min((cost_at(d, float(demand)), d["label"]) for d in deployments)
        out.append((float(demand), cost, label))
    return out


def crossover(moe: list[tuple], dense: list[tuple]) -> dict:
    """Where the MoE curve is below the dense one, on their common grid.

    kind: "moe-cheaper-above" (cheaper from `at` on, dearer below), "moe-cheaper-below"
    (cheaper up to `at`), "moe-always" / "dense-always" (one side throughout), or "mixed"
    (the order changes more than once: `changes` lists the demands). `ratio_high`: MoE cost
    over dense cost at the highest demand.
    """
    demands = np.array([p[0] for p in moe])
    cheaper = np.array([m[1] < d[1] for m, d in zip(moe, dense)])
    flips = np.flatnonzero(cheaper[1:] != cheaper[:-1])
    changes = [float(np.sqrt(demands[i] * demands[i + 1])) for i in flips]
    out = {"changes": changes, "lo": float(demands[0]), "hi": float(demands[-1]),
           "ratio_high": moe[-1][1] / dense[-1][1], "ratio_low": moe[0][1] / dense[0][1]}
    if not changes:
        out["kind"] = "moe-always" if cheaper[0] else "dense-always"
    elif len(changes) == 1:
        out["kind"] = "moe-cheaper-above" if cheaper[-1] else "moe-cheaper-below"
        out["at"] = changes[0]
    else:
        # Saw-teeth can cross back and forth; what matters is where MoE stays cheaper.
        out["kind"] = "mixed"
        if cheaper[-1]:
            out["at"] = changes[-1]
    return out


def conclusion(cross: dict, moe_name: str, dense_name: str) -> str:
    """The report's conclusion sentence, from the crossover alone."""
    span = f"from {cross['lo']:.3g} to {cross['hi']:.3g} req/s"
    high = cross["ratio_high"]
    tail = (f" (at {cross['hi']:.3g} req/s {moe_name} costs {high:.2f}x what {dense_name} "
            "does per token)")
    kind = cross["kind"]
    if kind == "moe-always":
        return f"{moe_name} is cheaper per output token than {dense_name} at every demand {span}" + tail + "."
    if kind == "dense-always":
        return (f"{moe_name} never becomes cheaper per output token than {dense_name} at any "
                f"demand {span}" + tail + ".")
    if kind == "moe-cheaper-above":
        return (f"{moe_name} becomes cheaper per output token than {dense_name} above about "
                f"{cross['at']:.3g} req/s, and stays cheaper up to {cross['hi']:.3g} req/s" + tail + ".")
    if kind == "moe-cheaper-below":
        return (f"{moe_name} is cheaper per output token than {dense_name} only below about "
                f"{cross['at']:.3g} req/s; above it {dense_name} is cheaper" + tail + ".")
    changes = ", ".join(f"{c:.3g}" for c in cross["changes"])
    if "at" in cross:
        return (f"{moe_name} and {dense_name} trade places at {changes} req/s as replicas "
                f"are added; {moe_name} is cheaper from {cross['at']:.3g} req/s on" + tail + ".")
    return (f"{moe_name} and {dense_name} trade places at {changes} req/s as replicas are "
            f"added, and {dense_name} is cheaper at the top of the range" + tail + ".")
