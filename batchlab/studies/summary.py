"""Plain-text tables of a run's summary, for the terminal.

Plots and multi-run comparison tables come with `batchlab compare`; this module holds the
single-run summary table that `batchlab run` prints.
"""

from __future__ import annotations

import math

# (section, [(key, label, scale, unit)]); a key absent from the summary is skipped.
_LAYOUT = (
    ("run", (
        ("policy", "policy", None, ""), ("workload", "workload", None, ""),
        ("seed", "seed", None, ""), ("num_requests", "requests", None, ""),
        ("num_finished", "finished", None, ""), ("num_rejected", "rejected", None, ""),
        ("num_devices", "devices", None, ""), ("device_kind", "kind", None, ""),
        ("num_gpus", "GPUs", None, ""),
        ("makespan_s", "makespan", 1.0, "s"),
    )),
    ("latency", tuple(
        (f"{m}_{s}_s", f"{label} {s}", 1e3, "ms")
        for m, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"),
                         ("e2e", "end-to-end"), ("queue", "queueing"), ("stall", "worst stall"))
        for s in ("mean", "p50", "p90", "p99")
    )),
    ("throughput", (
        ("throughput_rps", "requests", 1.0, "req/s"),
        ("output_tokens_per_s", "output tokens", 1.0, "tok/s"),
        ("total_tokens_per_s", "total tokens", 1.0, "tok/s"),
        ("output_tokens_per_s_per_gpu", "output tokens per GPU", 1.0, "tok/s"),
        ("goodput_rps", "goodput (within SLO)", 1.0, "req/s"),
        ("slo_attainment", "SLO attainment", 100.0, "%"),
    )),
    ("utilisation", (
        ("busy_fraction", "busy", 100.0, "%"),
        ("mfu", "MFU", 100.0, "%"),
        ("bandwidth_utilisation", "memory bandwidth", 100.0, "%"),
        ("tokens_per_touched_expert", "tokens per touched expert", 1.0, ""),
        ("expert_utilisation", "experts touched per step", 100.0, "%"),
        ("bubble_fraction", "pipeline bubble", 100.0, "%"),
        ("padding_fraction", "padding", 100.0, "%"),
        ("preemptions", "preemptions", None, ""),
        ("failures", "device failures", None, ""),
    )),
    ("cost", (
        ("usd_per_million_output_tokens", "$ per million output tokens", 1.0, "USD"),
    )),
)


def _fmt(value, scale, unit) -> str | None:
    if value is None:
        return None
    if scale is None:
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    number = value * scale
    text = f"{number:,.0f}" if abs(number) >= 1000 else f"{number:.3g}"
    return f"{text} {unit}".rstrip()


def format_summary(summary: dict) -> str:
    """The summary as an aligned two-column table; figures that do not apply are left out
    (no MFU without a device's peak FLOP/s, no cost without a price)."""
    lines = []
    for section, rows in _LAYOUT:
        cells = [(label, _fmt(summary.get(key), scale, unit))
                 for key, label, scale, unit in rows if key in summary]
        cells = [(label, text) for label, text in cells if text is not None]
        if not cells:
            continue
        lines.append(f"{section}")
        width = max(len(label) for label, _ in cells)
        lines += [f"  {label:<{width}}  {text}" for label, text in cells]
    return "\n".join(lines)
