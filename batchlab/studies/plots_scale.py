"""The scale plots of `batchlab compare`: cost per token against demand with the crossover,
speed bought with GPUs at one user, and capacity per policy at the SLO (matplotlib).

They follow the rules in batchlab.studies.plots: units, every series visible, legends off the
data, points labelled with their rate, the SLO named.
"""

from __future__ import annotations

import math
from pathlib import Path

from .plots import MARKERS, ok, pyplot, save, spans_decades


def _short(label: str) -> str:
    return label.split(" (")[0].split(" on ")[0]


def crossover(view, path: Path) -> Path | None:
    """$ per million output tokens against demand: each model's cheapest deployment (a line),
    each deployment at its capacity (labelled points), one local user (stars), and the
    crossover (a vertical line) if there is one."""
    curves = view.get("curves") or {}
    if not curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    for i, (key, curve) in enumerate(curves.items()):
        model = view["models"][key]["model"]
        line, = ax.plot([c[0] for c in curve], [c[1] for c in curve], linewidth=2,
                        label=f"{_short(model['label'])}: cheapest deployment at each demand")
        color = line.get_color()
        for j, d in enumerate(view["economics"][key]):
            cost = d["price_per_hour"] / 3600 / (d["capacity_rps"] * d["tokens_per_request"]) * 1e6
            ax.plot([d["capacity_rps"]], [cost], marker=MARKERS[j + 1], color=color,
                    markersize=8, linestyle="none")
            # Staggered: one model's labels above its points, the other's below.
            ax.annotate(f"{d.get('num_gpus')} GPUs at capacity: {d['capacity_rps']:.3g} req/s",
                        (d["capacity_rps"], cost), textcoords="offset points",
                        xytext=(-40, 10 + 11 * j) if i == 0 else (-40, -16 - 11 * j),
                        fontsize=7, color=color)
        for row in view["scale"]:
            r = row["result"]
            if row["meta"]["model_key"] == key and ok(r, "one_user_throughput_rps",
                                                      "one_user_usd_per_million"):
                ax.plot([r["one_user_throughput_rps"]], [r["one_user_usd_per_million"]],
                        marker="*", markersize=12, color=color, linestyle="none")
                ax.annotate(f"1 user, {r.get('num_gpus')} GPUs",
                            (r["one_user_throughput_rps"], r["one_user_usd_per_million"]),
                            textcoords="offset points", xytext=(6, -4), fontsize=7,
                            color=color)
    cross = view.get("crossover")
    if cross and cross.get("at"):
        ax.axvline(cross["at"], color="black", linestyle="--", linewidth=1)
        ax.annotate(f"MoE cheaper from {cross['at']:.3g} req/s", (cross["at"], 0.95),
                    xycoords=("data", "axes fraction"), textcoords="offset points",
                    xytext=(4, 0), fontsize=8)
    ax.plot([], [], marker="*", linestyle="none", color="grey", label="one local user "
            "(closed loop; x = its served rate)")
    ax.plot([], [], marker="o", linestyle="none", color="grey",
            label="a deployment at its capacity within the SLO")
    ax.set_xscale("log")
    ax.set_yscale("log")
    lowest = min(c[1] for curve in curves.values() for c in curve)
    ax.set_ylim(bottom=lowest / 4)  # room for the labels staggered below the points
    ax.set_xlabel("demand (requests/s)")
    ax.set_ylabel("$ per million output tokens")
    ax.set_title(f"Cost per token vs demand within the SLO ({view['slo'].describe()}); "
                 "replicas added as demand grows", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    return save(fig, plt, path)


def speed_vs_gpus(view, path: Path) -> Path | None:
    """At one local user: TPOT and $ per million output tokens against GPUs per replica."""
    series: dict[str, list] = {}
    for row in view["scale"]:
        r = row["result"]
        if ok(r, "one_user_tpot_p50_s", "one_user_usd_per_million", "num_gpus"):
            series.setdefault(row["meta"]["model_key"], []).append(r)
    if not series:
        return None
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    gpus = sorted({r["num_gpus"] for rs in series.values() for r in rs})
    for i, (key, rs) in enumerate(series.items()):
        rs.sort(key=lambda r: r["num_gpus"])
        name = _short(view["models"][key]["model"]["label"])
        xs = [r["num_gpus"] for r in rs]
        for ax, metric, scale in ((left, "one_user_tpot_p50_s", 1e3),
                                  (right, "one_user_usd_per_million", 1.0)):
            ys = [r[metric] * scale for r in rs]
            line, = ax.plot(xs, ys, marker=MARKERS[i], label=name)
            for x, y in zip(xs, ys):
                ax.annotate(f"{y:.3g}", (x, y), textcoords="offset points",
                            xytext=(7, -3) if i == 0 else (-30, -3), fontsize=7,
                            color=line.get_color())
    for ax, metric in ((left, "one_user_tpot_p50_s"), (right, "one_user_usd_per_million")):
        if spans_decades([r[metric] for rs in series.values() for r in rs]):
            ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xticks(gpus)
        ax.set_xticklabels([str(g) for g in gpus])
        ax.minorticks_off()
        ax.set_xlabel("GPUs per replica")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False,
                  ncol=2)
    left.set_ylabel("TPOT p50 at one user (ms)")
    right.set_ylabel("$ per million output tokens at one user")
    fig.suptitle("Buying speed with more GPUs than the model needs: one local user",
                 fontsize=10)
    return save(fig, plt, path)


def capacity_by_policy(view, path: Path) -> Path | None:
    """Goodput per GPU at the SLO for each policy setup, one panel per model, labelled with
    capacity and $ per million output tokens at capacity."""
    models = [m for m in view["models"].values() if m["capacity"]]
    if not models:
        return None
    plt = pyplot()
    height = max(len(m["capacity"]) for m in models)
    fig, axes = plt.subplots(1, len(models), figsize=(7.5 * len(models), 1.0 + 0.55 * height),
                             squeeze=False)
    for ax, m in zip(axes[0], models):
        rows = [r for r in m["capacity"] if not r["result"].get("error")]
        labels = [r["meta"]["label"] for r in rows]
        values = [r["result"]["goodput_rps_per_gpu"] if ok(r["result"], "goodput_rps_per_gpu")
                  else 0.0 for r in rows]
        ax.barh(range(len(rows)), values, color="tab:blue")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        top = max(values, default=1.0)
        for k, r in enumerate(rows):
            cost = r["result"].get("usd_per_million_output_tokens_at_capacity")
            text = f"{r['result']['capacity_rps']:.3g} req/s on {r['result'].get('num_gpus')} GPUs"
            if not r["result"]["capacity_rps"]:
                text = "meets the SLO at no rate searched"
            if isinstance(cost, float) and math.isfinite(cost):
                text += f", ${cost:.2f}/M"
            ax.annotate(text, (values[k], k), textcoords="offset points", xytext=(4, -3),
                        fontsize=7)
        ax.set_xlim(0, top * 1.6)
        ax.set_xlabel("goodput within the SLO (req/s per GPU)")
        ax.set_title(m["model"]["label"], fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"Capacity per policy at the SLO ({view['slo'].describe()})", fontsize=10)
    return save(fig, plt, path)
