"""The latency plots of `batchlab compare` (matplotlib, imported here only; `pip install
batchlab[plot]`): the throughput-latency frontier, cost against offered traffic, and one plot
per knob study with both sides of its trade.

Rules every plot follows: units on the axes; linear axes for linear ranges (log only where the
data spans decades, with plain-number ticks); every series visible (distinct markers, facets);
legends outside the data; the SLO drawn where it applies; points labelled with their rate;
overloaded points hollow and labelled.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..core.errors import ConfigError

MARKERS = "osD^vP*Xh<>p"


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'batchlab[plot]' (or run "
                          "with --no-plots)") from None
    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    return plt


def ok(result: dict, *keys) -> bool:
    values = [result.get(k) for k in keys]
    return not result.get("error") and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in values)


def spans_decades(values, factor: float = 30.0) -> bool:
    values = [v for v in values if v > 0]
    return bool(values) and max(values) / min(values) >= factor


def frontier(view, path: Path) -> Path | None:
    """Output tokens/s per GPU against TTFT p99 per policy, one panel per model; the SLO's
    TTFT limit drawn; each point labelled with its offered rate; overloaded points hollow."""
    models = list(view["models"].values())
    plt = pyplot()
    fig, axes = plt.subplots(1, len(models), figsize=(6.8 * len(models), 5.6), squeeze=False)
    limit = dict(view["slo"].limits).get("ttft_p99_s")
    handles = {}
    # One style per policy label across panels, so a series looks the same in each.
    labels = list(dict.fromkeys(r["meta"]["policy_label"] for m in models
                                for r in m["latency"]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, m in zip(axes[0], models):
        all_x, all_y = [], []
        series: dict[str, list] = {}
        for r in m["latency"]:
            if r["params"].get("arrival") == "poisson" and ok(
                    r["result"], "output_tokens_per_s_per_gpu", "ttft_p99_s"):
                series.setdefault(r["meta"]["policy_label"], []).append(r)
        for label, pts in series.items():
            i = labels.index(label)
            pts.sort(key=lambda r: r["params"]["rate"])
            xs = [p["result"]["output_tokens_per_s_per_gpu"] for p in pts]
            ys = [p["result"]["ttft_p99_s"] for p in pts]
            all_x += xs
            all_y += ys
            line, = ax.plot(xs, ys, linestyle="-", alpha=0.6, marker=MARKERS[i % len(MARKERS)],
                            markersize=7, label=label, color=colors[i % len(colors)])
            handles[label] = line
            for p, x, y in zip(pts, xs, ys):
                hollow = p["result"].get("overloaded")
                if hollow:
                    ax.plot([x], [y], marker=MARKERS[i % len(MARKERS)], markersize=11,
                            markerfacecolor="white", color=line.get_color())
                ax.annotate(f"{p['params']['rate']:g}/s" + (" overloaded" if hollow else ""),
                            (x, y), textcoords="offset points", xytext=(5, 4 + 7 * (i % 3)),
                            fontsize=7, color=line.get_color())
        if limit is not None:
            ax.axhline(limit, color="black", linestyle="--", linewidth=1)
            ax.annotate(f"SLO: TTFT p99 {limit:g} s", (0.01, limit), xycoords=("axes fraction",
                        "data"), textcoords="offset points", xytext=(2, 3), fontsize=8)
        # Log only where the data spans decades (an overloaded run's TTFT, say).
        if spans_decades(all_y + ([limit] if limit else [])):
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        if spans_decades(all_x):
            ax.set_xscale("log")
        else:
            ax.set_xlim(left=0)
        ax.set_xlabel("output tokens/s per GPU")
        ax.set_ylabel("TTFT p99 (s)")
        ax.set_title(m["model"]["label"], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    if not handles:
        # No Poisson point ran (a config with `rates = []`): an empty plot says nothing.
        plt.close(fig)
        return None
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               ncol=min(len(handles), 3), fontsize=8, frameon=False)
    fig.suptitle("Throughput vs tail TTFT at fixed offered rates (labels: req/s; right and "
                 "low is better)", fontsize=11)
    fig.subplots_adjust(bottom=0.1 + 0.04 * math.ceil(len(handles) / 3))
    return save(fig, plt, path, tight=False)


def cost_vs_traffic(view, path: Path) -> Path | None:
    """$ per million output tokens against offered rate, per model, for the first policy of
    the tables; the one-user point at its served rate; overloaded points hollow."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    policy = None
    for i, m in enumerate(view["models"].values()):
        pts = [r for r in m["latency"] if ok(r["result"], "usd_per_million_output_tokens")]
        if not pts:
            continue
        policy = policy or pts[0]["meta"]["policy_label"]
        pts = [r for r in pts if r["meta"]["policy_label"] == policy]

        def x(r):
            return r["params"]["rate"] if r["params"].get("arrival") == "poisson" else \
                r["result"].get("throughput_rps")
        pts = [r for r in pts if x(r)]
        pts.sort(key=x)
        xs, ys = [x(r) for r in pts], [r["result"]["usd_per_million_output_tokens"] for r in pts]
        line, = ax.plot(xs, ys, marker=MARKERS[i], label=m["model"]["label"])
        for r, xv, yv in zip(pts, xs, ys):
            note = r["meta"]["traffic"] + (" (closed loop, served rate)" if r["params"].get(
                "arrival") != "poisson" else "")
            if r["result"].get("overloaded"):
                ax.plot([xv], [yv], marker=MARKERS[i], markersize=12, markerfacecolor="white",
                        color=line.get_color())
                note += ", overloaded"
            elif str(r["result"].get("slo_status", "")).startswith("misses"):
                note += ", misses SLO"
            ax.annotate(note, (xv, yv), textcoords="offset points", xytext=(6, 4 - 12 * i),
                        fontsize=7, color=line.get_color())
    if policy is None:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered traffic (requests/s; Poisson)")
    ax.set_ylabel("$ per million output tokens (makespan x price)")
    ax.set_title(f"Cost per token vs offered traffic ({policy})", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1,
              frameon=False)
    return save(fig, plt, path)


# study knob -> (x label, x scale to display, gain metrics, price metrics)
_STUDY = {
    "window": ("step window (ms)", 1e3, ("tokens_per_touched_expert",),
               ("ttft_p50_s", "tpot_p50_s")),
    "admission_delay": ("admission delay (ms)", 1e3, ("tokens_per_touched_expert",),
                        ("ttft_p50_s", "tpot_p50_s")),
    "num_micro_batches": ("micro-batches per step (m)", 1, ("bubble_fraction",),
                          ("tpot_p50_s", "ttft_p50_s")),
    "num_buckets": ("number of length buckets", 1, ("padding_fraction",),
                    ("ttft_p99_s", "tpot_p50_s")),
}
_LABEL = {"tokens_per_touched_expert": ("tokens per touched expert", 1),
          "bubble_fraction": ("pipeline bubble (% of busy time)", 100),
          "padding_fraction": ("padding (% of tokens processed)", 100),
          "ttft_p50_s": ("TTFT p50 (ms)", 1e3), "ttft_p99_s": ("TTFT p99 (ms)", 1e3),
          "tpot_p50_s": ("TPOT p50 (ms)", 1e3)}


def study(rows, key: str, path: Path) -> Path | None:
    """One knob study: what the knob buys (left) and what it costs in latency (right)."""
    pts = [r for r in rows if r["meta"]["section"] == "study" and r["meta"]["study"] == key
           and not r["result"].get("error")]
    pts.sort(key=lambda r: r["meta"]["value"])
    if len(pts) < 2:
        return None
    knob, title = pts[0]["meta"]["knob"], pts[0]["meta"]["title"]
    xlabel, xscale, gains, prices = _STUDY.get(
        knob, (knob.replace("_", " "), 1, ("tokens_per_touched_expert",), ("ttft_p50_s",)))
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    xs = [r["meta"]["value"] * xscale for r in pts]
    for ax, metrics in ((left, gains), (right, prices)):
        for j, metric in enumerate(metrics):
            good = [(x, r) for x, r in zip(xs, pts) if ok(r["result"], metric)]
            if not good:
                continue
            name, scale = _LABEL.get(metric, (metric, 1))
            ys = [r["result"][metric] * scale for _, r in good]
            ax.plot([x for x, _ in good], ys, marker=MARKERS[j], label=name)
            if knob == "num_micro_batches" and metric == "bubble_fraction":
                p = pts[0]["params"].get("pp", 1)
                ax.plot(xs, [100 * (p - 1) / (m + p - 1) for m in xs], linestyle="--",
                        color="grey", label=f"(p-1)/(m+p-1), p={p}")
        if spans_decades([r["result"].get(m, 0) or 0 for r in pts for m in metrics]):
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False,
                  ncol=2)
    if knob in ("num_micro_batches", "num_buckets") and spans_decades(xs, 8):
        for ax in (left, right):
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs)
            ax.set_xticklabels([f"{x:g}" for x in xs])
            ax.minorticks_off()
    left.set_ylabel("what it buys: " + _LABEL.get(gains[0], (gains[0], 1))[0])
    right.set_ylabel("what it costs: latency (ms)")
    rate = pts[0]["meta"].get("rate") or pts[0]["params"].get("rate")
    fig.suptitle(f"{title}, Poisson {rate:g} req/s", fontsize=10)
    return save(fig, plt, path)


def plain_log_ticks(ax) -> None:
    """Label log axes with plain numbers and leave minor ticks unlabelled (no clutter)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis, scale, lim in ((ax.xaxis, ax.get_xscale(), ax.get_xlim()),
                             (ax.yaxis, ax.get_yscale(), ax.get_ylim())):
        locator = axis.get_major_locator()
        if scale == "log" and isinstance(locator, LogLocator):
            if lim[0] > 0 and lim[1] / lim[0] < 300:  # under 2.5 decades: 1-2-5 ticks
                axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())


def save(fig, plt, path: Path, tight: bool = True) -> Path:
    for ax in fig.axes:
        if ax.get_xscale() == "log" and ax.xaxis.get_major_formatter().__class__.__name__ \
                == "FixedFormatter":
            continue  # ticks set at the swept values
        plain_log_ticks(ax)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
