"""The plots of `batchlab compare` (matplotlib, imported here only; `pip install batchlab[plot]`).

Each function takes the compare rows ({"meta": ..., "result": ...}) and writes one PNG. Axes
carry units; scales are logarithmic where the data spans decades.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..core.errors import ConfigError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'batchlab[plot]' (or run "
                          "with --no-plots)") from None
    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    return plt


def _ok(row, *keys) -> bool:
    values = [row["result"].get(k) for k in keys]
    return not row["result"].get("error") and all(
        isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _table(rows, model_key):
    return [r for r in rows if r["meta"]["section"] == "table"
            and r["meta"]["model_key"] == model_key]


def frontier(rows, models, path: Path) -> Path:
    """Throughput per GPU against p99 TTFT, one line per policy variant, one panel per model."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 5), squeeze=False)
    for ax, model in zip(axes[0], models):
        lines: dict[str, list] = {}
        for r in _table(rows, model["key"]):
            if r["params"].get("arrival") == "poisson" and _ok(
                    r, "output_tokens_per_s_per_gpu", "ttft_p99_s"):
                lines.setdefault(r["meta"]["policy_label"], []).append(r)
        for label, pts in sorted(lines.items()):
            pts.sort(key=lambda r: r["params"]["rate"])
            ax.plot([p["result"]["output_tokens_per_s_per_gpu"] for p in pts],
                    [p["result"]["ttft_p99_s"] for p in pts], marker="o", label=label)
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel("output tokens/s per GPU")
        ax.set_ylabel("TTFT p99 (s)")
        ax.set_title(model["label"], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Throughput vs latency: each point a traffic rate (down and to the right is "
                 "better)", fontsize=11)
    return _save(fig, plt, path)


def cost_vs_traffic(rows, models, path: Path, policy: str = "continuous") -> Path:
    """$ per million output tokens against achieved traffic, MoE and dense, for one policy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for model in models:
        pts = [r for r in _table(rows, model["key"]) if r["meta"]["policy_label"] == policy
               and _ok(r, "throughput_rps", "usd_per_million_output_tokens")]
        pts.sort(key=lambda r: r["result"]["throughput_rps"])
        if not pts:
            continue
        xs = [p["result"]["throughput_rps"] for p in pts]
        ys = [p["result"]["usd_per_million_output_tokens"] for p in pts]
        ax.plot(xs, ys, marker="o", label=model["label"])
        for p, x, y in zip(pts, xs, ys):
            if p["meta"]["traffic"] == "1 user":
                ax.annotate("1 user", (x, y), textcoords="offset points", xytext=(6, 4),
                            fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("served traffic (requests/s)")
    ax.set_ylabel("$ per million output tokens")
    ax.set_title(f"Cost per token vs traffic ({policy})", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def study(rows, key: str, path: Path) -> Path | None:
    """The plot of one knob study, chosen by its knob."""
    pts = [r for r in rows if r["meta"]["section"] == "study" and r["meta"]["study"] == key]
    pts.sort(key=lambda r: r["meta"]["value"])
    if not pts:
        return None
    plt = _pyplot()
    knob, title = pts[0]["meta"]["knob"], pts[0]["meta"]["title"]
    fig, ax = plt.subplots(figsize=(7, 5))
    xs = [r["meta"]["value"] for r in pts]
    if knob == "window":
        good = [r for r in pts if _ok(r, "tokens_per_touched_expert", "ttft_p50_s")]
        xs = [r["meta"]["value"] * 1e3 for r in good]
        ax.plot(xs, [r["result"]["tokens_per_touched_expert"] for r in good], marker="o",
                color="tab:blue")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("batching window (ms)")
        ax.set_ylabel("tokens per touched expert", color="tab:blue")
        twin = ax.twinx()
        twin.plot(xs, [r["result"]["ttft_p50_s"] * 1e3 for r in good], marker="s",
                  color="tab:red")
        twin.set_ylabel("TTFT p50 (ms)", color="tab:red")
    elif knob == "num_micro_batches":
        good = [r for r in pts if _ok(r, "bubble_fraction")]
        ms = [r["meta"]["value"] for r in good]
        ax.plot(ms, [100 * r["result"]["bubble_fraction"] for r in good], marker="o",
                label="simulated (m is capped by the rows in a step)")
        stages = good[0]["params"].get("pp", 1) if good else 1
        ax.plot(ms, [100 * (stages - 1) / (m + stages - 1) for m in ms], linestyle="--",
                label=f"(p-1)/(m+p-1), p={stages}")
        ax.set_xscale("log", base=2)
        _ticks_at(ax, ms)
        ax.set_xlabel("micro-batches per step (m)")
        ax.set_ylabel("pipeline bubble (% of busy time)")
        ax.legend(fontsize=8)
    else:
        metric = "padding_fraction" if "bucket" in knob else "tokens_per_touched_expert"
        good = [r for r in pts if _ok(r, metric)]
        ax.plot([r["meta"]["value"] for r in good],
                [100 * r["result"][metric] if metric == "padding_fraction"
                 else r["result"][metric] for r in good], marker="o")
        ax.set_xlabel("number of length buckets" if knob == "num_buckets"
                      else knob.replace("_", " "))
        ax.set_ylabel("padding (% of tokens processed)" if metric == "padding_fraction"
                      else metric.replace("_", " "))
        if metric == "padding_fraction" and len(xs) > 1 and max(xs) / max(min(xs), 1) >= 8:
            ax.set_xscale("log", base=2)
            _ticks_at(ax, xs)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, plt, path)


def _ticks_at(ax, values) -> None:
    """Ticks at the swept values, labelled as plain numbers (not 2^k)."""
    ax.set_xticks(list(values))
    ax.set_xticklabels([f"{v:g}" for v in values])
    from matplotlib.ticker import NullLocator

    ax.xaxis.set_minor_locator(NullLocator())


def _plain_log_ticks(ax) -> None:
    """Label log axes with plain numbers and leave minor ticks unlabelled (no clutter)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis, scale, lim in ((ax.xaxis, ax.get_xscale(), ax.get_xlim()),
                             (ax.yaxis, ax.get_yscale(), ax.get_ylim())):
        locator = axis.get_major_locator()
        if scale == "log" and isinstance(locator, LogLocator) and locator._base == 10:
            if lim[0] > 0 and lim[1] / lim[0] < 300:  # under 2.5 decades: 1-2-5 ticks
                axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())


def _save(fig, plt, path: Path) -> Path:
    for ax in fig.axes:
        _plain_log_ticks(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
