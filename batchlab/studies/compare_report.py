"""report.md of `batchlab compare`: the picture first, then one page whose every claim is
computed from this run's numbers, then the tables and the caveats.

No sentence is fixed text that would stay true if the numbers flipped: each direction word
("cheaper", "faster", "raises") is chosen by comparing the figures it talks about, and a
sentence whose figures are missing (a policy not installed, a search that failed) says so.
"""

from __future__ import annotations

import math
from pathlib import Path

from .compare_scale import conclusion
from .tables import CAPACITY_COLUMNS, LATENCY_COLUMNS, markdown_table, table_lines


def _config_name(config: dict) -> str:
    # "_name" is a path, or "the default compare config" for the embedded one.
    name = config["_name"]
    return name if name.startswith("the default") else f"config {name}"


def _num(result: dict | None, key: str) -> float | None:
    value = (result or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _money(x) -> str:
    return "n/a" if x is None else f"${x:,.2f}"


def _ms(x) -> str:
    return "n/a" if x is None else f"{x * 1e3:.3g} ms"


def compare_words(a: float, b: float, more: str, less: str) -> str:
    """'3.2x more' / '1.5x less' / 'the same' for a against b (both > 0)."""
    if math.isclose(a, b, rel_tol=0.005):
        return "about the same as"
    return f"{a / b:.3g}x {more} than" if a > b else f"{b / a:.3g}x {less} than"


def _scale_story(view) -> list[str]:
    lines = []
    by_model: dict[str, list] = {}
    for row in view["scale"]:
        by_model.setdefault(row["meta"]["model_key"], []).append(row)
    for key, rows in by_model.items():
        model = view["models"][key]["model"]
        good = [r for r in rows if _num(r["result"], "capacity_rps")]
        if not good:
            lines.append(f"- **{model['label']}**: no deployment met the SLO at any rate "
                         "searched.")
            continue
        cheap = min(good, key=lambda r: _num(r["result"],
                                              "usd_per_million_output_tokens_at_capacity")
                    or math.inf)
        small = min(good, key=lambda r: r["result"].get("num_gpus") or 0)
        c_cap = _num(cheap["result"], "usd_per_million_output_tokens_at_capacity")
        one = _num(small["result"], "one_user_usd_per_million")
        text = (f"- **{model['label'].split(' on ')[0]}**: at capacity its cheapest deployment "
                f"is {cheap['meta']['label']} ({cheap['result'].get('num_gpus')} GPUs, "
                f"{_num(cheap['result'], 'capacity_rps'):.3g} req/s within the SLO, "
                f"{_money(c_cap)} per million output tokens).")
        if one is not None and c_cap:
            text += (f" One local user on {small['meta']['label']} pays {_money(one)}: "
                     f"{compare_words(one, c_cap, 'more', 'less')} at capacity.")
        caps = sorted(good, key=lambda r: r["result"].get("num_gpus") or 0)
        if len(caps) > 1:
            a, b = caps[0]["result"], caps[-1]["result"]
            ga, gb = _num(a, "goodput_rps_per_gpu"), _num(b, "goodput_rps_per_gpu")
            if ga and gb:
                text += (f" With {b.get('num_gpus')} GPUs per replica its goodput per GPU "
                         f"is {compare_words(gb, ga, 'higher', 'lower')} with "
                         f"{a.get('num_gpus')} ({gb:.3g} against {ga:.3g} req/s per GPU).")
        lines.append(text)
    return lines


def _speed_story(view) -> list[str]:
    """The seed's third explanation: more GPUs than needed buy speed at one user."""
    lines = []
    by_model: dict[str, list] = {}
    for row in view["scale"]:
        r = row["result"]
        if _num(r, "one_user_tpot_p50_s") and _num(r, "one_user_usd_per_million"):
            by_model.setdefault(row["meta"]["model_key"], []).append(r)
    for key, rs in by_model.items():
        if len(rs) < 2:
            continue
        rs.sort(key=lambda r: r.get("num_gpus") or 0)
        a, b = rs[0], rs[-1]
        ta, tb = a["one_user_tpot_p50_s"], b["one_user_tpot_p50_s"]
        ca, cb = a["one_user_usd_per_million"], b["one_user_usd_per_million"]
        name = view["models"][key]["model"]["label"].split(" on ")[0]
        lines.append(f"- **{name}**, one user: {b.get('num_gpus')} GPUs per replica instead of "
                     f"{a.get('num_gpus')} make each token take {_ms(tb)} instead of {_ms(ta)} "
                     f"({compare_words(ta, tb, 'faster', 'slower').replace(' than', '')}) at "
                     f"{_money(cb)} instead of {_money(ca)} per million output tokens "
                     f"({compare_words(cb, ca, 'more', 'less').replace(' than', '')}).")
    return lines


def _policy_story(view) -> list[str]:
    lines = []
    for key, m in view["models"].items():
        rows = [r for r in m["capacity"] if _num(r["result"], "capacity_rps")]
        if len(rows) < 2:
            continue
        best = max(rows, key=lambda r: r["result"]["goodput_rps_per_gpu"] or 0)
        worst = min(rows, key=lambda r: r["result"]["goodput_rps_per_gpu"] or 0)
        gb, gw = best["result"]["goodput_rps_per_gpu"], worst["result"]["goodput_rps_per_gpu"]
        lines.append(
            f"- **{m['model']['label']}**: {best['meta']['label']} serves the most within the "
            f"SLO ({gb:.3g} req/s per GPU, "
            f"{_money(_num(best['result'], 'usd_per_million_output_tokens_at_capacity'))} per "
            f"million output tokens); {worst['meta']['label']} the least ({gw:.3g} req/s per "
            f"GPU, {_money(_num(worst['result'], 'usd_per_million_output_tokens_at_capacity'))}).")
    return lines


def _study_story(view) -> list[str]:
    lines = []
    rows = view["studies"]
    for key, study in view["config"].get("studies", {}).items():
        pts = sorted((r for r in rows if r["meta"].get("study") == key),
                     key=lambda r: r["meta"]["value"])
        good = [r for r in pts if not r["result"].get("error")]
        if len(good) < 2:
            lines.append(f"- **{study.get('title', key)}**: skipped (policy not installed or "
                         "not chosen, or its runs failed).")
            continue
        lo, hi = good[0], good[-1]
        knob, title = study["knob"], study.get("title", key)
        v = lambda r: r["meta"]["value"]  # noqa: E731
        if knob in ("window", "admission_delay"):
            ea, eb = (_num(r["result"], "tokens_per_touched_expert") for r in (lo, hi))
            fa, fb = (_num(r["result"], "ttft_p50_s") for r in (lo, hi))
            pa, pb = (_num(r["result"], "tpot_p50_s") for r in (lo, hi))
            if None in (ea, eb, fa, fb, pa, pb):
                continue
            lines.append(
                f"- **{title}** at {lo['meta']['rate']:g} req/s: {v(hi) * 1e3:g} ms instead of "
                f"{v(lo) * 1e3:g} ms gives each touched expert {eb:.3g} tokens instead of "
                f"{ea:.3g} ({compare_words(eb, ea, 'more', 'fewer').replace(' than', '')}), "
                f"for a TTFT p50 of {_ms(fb)} instead of {_ms(fa)} and a TPOT p50 of {_ms(pb)} "
                f"instead of {_ms(pa)}.")
        elif knob == "num_micro_batches":
            a, b = (_num(r["result"], "bubble_fraction") for r in (lo, hi))
            if a is not None and b is not None:
                lines.append(f"- **{title}**: {v(lo)} micro-batch(es) leave the pipeline idle "
                             f"{100 * a:.3g}% of the time; {v(hi)} leave {100 * b:.3g}%.")
        else:
            a, b = (_num(r["result"], "padding_fraction") for r in (lo, hi))
            ca, cb = (_num(r["result"], "usd_per_million_output_tokens") for r in (lo, hi))
            if None in (a, b, ca, cb):
                continue
            best = view["best"].get(key)
            lines.append(f"- **{title}**: {v(lo)} bucket(s) pad {100 * a:.3g}% of the tokens "
                         f"processed and {v(hi)} pad {100 * b:.3g}%; the cheapest count is "
                         f"{best} (used in the policy tables).")
    return lines


def write_report(view, out: Path, plots: dict[str, Path]) -> Path:
    config, slo = view["config"], view["slo"]
    rel = lambda p: p.relative_to(out).as_posix()  # noqa: E731
    lines = ["# batchlab compare", ""]
    if "crossover" in plots:
        lines += [f"![cost per token against demand]({rel(plots['crossover'])})", ""]
    sample = next((r["result"] for r in view["scale"] + [c for m in view["models"].values()
                                                           for c in m["capacity"]]
                   if not r["result"].get("error")), {})
    lines += ["## What a token costs at the service-level objective", "",
              f"SLO: {slo.describe(sample)}, with the queue not growing ({_config_name(config)}"
              "). Capacity is the highest Poisson rate that meets it; "
              "goodput is capacity per GPU (DistServe's definition); cost is the "
              "deployment's price over the tokens it serves at that rate.", ""]
    lines += [f"Note: {n}" for n in slo.notes(sample)] + ([""] if slo.notes(sample) else [])
    if view["crossover"] is not None:
        moe, dense = view["pair"]
        lines += ["**" + conclusion(view["crossover"], moe["label"].split(" (")[0],
                                    dense["label"].split(" (")[0]) + "**", ""]
    else:
        lines += ["No crossover: the scale axis did not run (it uses continuous batching; "
                  "--policies left it out) or it lacks a MoE and a dense model that both met "
                  "the SLO somewhere.", ""]
    lines += _scale_story(view) + [""]
    speed = _speed_story(view)
    if speed:
        lines += ["Buying speed with more GPUs than the model needs:", ""] + speed + [""]
    policy = _policy_story(view)
    if policy:
        lines += ["Policies at the SLO, each in the setup where it acts:", ""] + policy + [""]
    lines += ["Knob studies:", ""] + _study_story(view) + [""]
    policies = sorted({str(r.get("params", {}).get("policy", "continuous")) for r in view["scale"]})
    lines += ["## Tables", "", f"Scale axis ({', '.join(policies)}; capacity at the SLO, and "
              "one local user on the same deployment):", "",
              markdown_table(table_lines(view["scale"], CAPACITY_COLUMNS)), ""]
    lines += [f"- {n}" for n in view["scale_notes"]] + [""]
    for key, m in view["models"].items():
        lines += [f"### {m['model']['label']}", "", "Capacity at the SLO, per policy:", "",
                  markdown_table(table_lines(m["capacity"], CAPACITY_COLUMNS)), "",
                  "Latency and cost at fixed offered rates (an overloaded row's latencies "
                  "measure the run's length, not the system):", "",
                  markdown_table(table_lines(m["latency"], LATENCY_COLUMNS)), ""]
        lines += [f"- {n}" for n in m["notes"]] + [""]
    rest = [name for name in plots if name != "crossover"]
    if rest:
        lines += ["## Plots", ""] + [f"![{name}]({rel(plots[name])})" for name in rest] + [""]
    lines += ["## What these numbers leave out", "",
              "Step times come from a roofline cost model with default efficiencies (see "
              "docs/costmodel.md for its formulas, sources and omissions): no real kernel was "
              "run. Where a deployment overlaps expert-parallel communication with "
              "computation (DeepSeek's production layout), the model's decode is faster than "
              "published full-batch measurements of such layouts (by 33% against SGLang's, "
              "17% against DeepSeek's own profile, in docs/costmodel.md; its prefill is within "
              "a few percent of DeepSeek's profile), so its capacity and price there are "
              "optimistic. Capacity comes from finite runs of Poisson traffic (see [capacity] "
              "in the config for their length) searched to the bracket width given there, "
              "with one seed: where a policy's tail latency is set by a few long requests "
              "(request-level batching runs a cohort to its longest member), its capacity "
              "moves with the sample. Costs are GPU-hour prices only: no power, networking, or "
              "capacity kept for peaks beyond whole replicas. A scale-axis row left out above "
              "is not in the crossover.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
