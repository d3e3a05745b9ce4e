"""report.md of `batchlab compare`: a short explanation with the run's own numbers in it.

Every figure quoted comes from the rows just computed; a sentence whose numbers are missing
(a policy not installed, a study skipped, a run that failed) says so instead.
"""

from __future__ import annotations

import math
from pathlib import Path

from .tables import markdown_table, table_rows


def _num(row, key):
    if row is None or row["result"].get("error"):
        return None
    value = row["result"].get(key)
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _find(rows, **meta):
    for row in rows:
        if all(row["meta"].get(k) == v for k, v in meta.items()):
            return row
    return None


def _money(x):
    return "n/a" if x is None else f"${x:,.2f}"


def _cost_story(rows, config, policy) -> list[str]:
    lines = ["## Why a MoE model is cheap at scale and expensive locally", ""]
    rates = config["traffic"].get("rates", [])
    heavy = f"{max(rates):g} req/s" if rates else None
    for model in config["models"]:
        one = _find(rows, section="table", model_key=model["key"], traffic="1 user",
                    policy_label=policy)
        big = _find(rows, section="table", model_key=model["key"], traffic=heavy,
                    policy_label=policy)
        c1, c2 = _num(one, "usd_per_million_output_tokens"), _num(big, "usd_per_million_output_tokens")
        t1, t2 = _num(one, "output_tokens_per_s_per_gpu"), _num(big, "output_tokens_per_s_per_gpu")
        if c1 is None or c2 is None:
            lines.append(f"- **{model['label']}**: the {policy} runs did not produce both "
                         "figures (see the table's notes).")
            continue
        lines.append(
            f"- **{model['label']}** ({policy}): one local user pays {_money(c1)} per million "
            f"output tokens at {t1:.3g} output tokens/s per GPU; at {heavy} the same GPUs cost "
            f"{_money(c2)} per million at {t2:.3g} tokens/s per GPU — **{c1 / c2:.3g}x "
            "cheaper**.")
    moe = [m for m in config["models"] if m.get("kind") == "moe"]
    dense = [m for m in config["models"] if m.get("kind") == "dense"]
    if moe and dense and heavy:
        pick = lambda m, key: _num(_find(rows, section="table", model_key=m["key"],  # noqa
                                         traffic=heavy, policy_label=policy), key)
        a, b = (pick(moe[0], "usd_per_million_output_tokens"),
                pick(dense[0], "usd_per_million_output_tokens"))
        e = pick(moe[0], "tokens_per_touched_expert")
        if None not in (a, b, e):
            lines += ["", f"At {heavy} the MoE model costs {_money(a)} and the dense one "
                      f"{_money(b)} per million output tokens ({a / b:.2g}x); each touched "
                      f"expert of the MoE gets {e:.3g} tokens per step, far below the few "
                      "hundred at which expert weights stop dominating (see the knob studies "
                      "and the 1024-sequence variant)."]
    lines += ["", "A GPU reads its weights once per step whatever the batch; with one user "
              "each step yields one token, so the whole cluster's price lands on it. A MoE "
              "model must keep all its experts in memory (many GPUs even for one user) but "
              "touches only a few per token, so it needs many concurrent tokens before its "
              "experts are busy: tokens per touched expert is the number to watch.", ""]
    return lines


def _study_story(rows, config) -> list[str]:
    lines = ["## Knob studies", ""]
    for key, study in config.get("studies", {}).items():
        pts = sorted((r for r in rows if r["meta"].get("study") == key),
                     key=lambda r: r["meta"]["value"])
        good = [r for r in pts if not r["result"].get("error")]
        if len(good) < 2:
            why = "policy not installed or not chosen" if not pts else \
                f"runs failed: {pts[0]['result'].get('error', '')}"
            lines.append(f"- **{study.get('title', key)}**: skipped ({why}).")
            continue
        lo, hi = good[0], good[-1]
        knob = study["knob"]
        if knob == "window":
            lines.append(
                f"- **{study['title']}**: a window of {lo['meta']['value'] * 1e3:g} ms feeds "
                f"{_num(lo, 'tokens_per_touched_expert'):.3g} tokens to each touched expert "
                f"(TTFT p50 {_num(lo, 'ttft_p50_s') * 1e3:.3g} ms); "
                f"{hi['meta']['value'] * 1e3:g} ms feeds "
                f"{_num(hi, 'tokens_per_touched_expert'):.3g} (TTFT p50 "
                f"{_num(hi, 'ttft_p50_s') * 1e3:.3g} ms). Waiting buys expert efficiency "
                "with latency.")
        elif knob == "num_micro_batches":
            lines.append(
                f"- **{study['title']}**: {lo['meta']['value']} micro-batch leaves the pipeline "
                f"idle {100 * _num(lo, 'bubble_fraction'):.3g}% of the time; "
                f"{hi['meta']['value']} leave {100 * _num(hi, 'bubble_fraction'):.3g}%.")
        else:
            metric = "padding_fraction"
            a, b = _num(lo, metric), _num(hi, metric)
            if a is None or b is None:
                continue
            lines.append(
                f"- **{study['title']}**: {lo['meta']['value']} bucket(s) pad "
                f"{100 * a:.3g}% of the tokens processed; {hi['meta']['value']} pad "
                f"{100 * b:.3g}%.")
    return lines + [""]


def write_report(rows, config, out: Path, plots: dict[str, Path], policy="continuous") -> Path:
    lines = ["# batchlab compare", "",
             f"Config: {config['_name']}. Every number below is from this run; the full data is "
             "in results.csv and tables/.", ""]
    lines += _cost_story(rows, config, policy)
    lines += _study_story(rows, config)
    for model in config["models"]:
        lines += [f"## {model['label']}", "", markdown_table(table_rows(rows, model["key"])), ""]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{name}]({path.relative_to(out).as_posix()})" for name, path in
                  plots.items()]
        lines.append("")
    lines += ["## What these numbers leave out", "",
              "Step times come from a roofline cost model with default efficiencies (see "
              "docs/costmodel.md for its formulas, sources and omissions): no real kernel was "
              "run. Costs are GPU-hour prices times the simulated makespan, which includes the "
              "time to drain the last requests; they leave out power, networking and idle "
              "capacity kept for peaks.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
