"""The tables of `batchlab compare`: results.csv with every figure, per model a latency table
at fixed offered rates and a capacity table at the SLO, the scale table, and the same tables
as markdown for report.md.

A row that repeats another row's numbers (a policy that did nothing different there) is left
out by `drop_duplicates`, with a note; a column that is empty or zero in every row is left out
of the markdown, so that no column is there only to say nothing happened.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from .sweep import write_table

# (key, title, scale): scale None is text; a number multiplies the value.
LATENCY_COLUMNS = (
    ("policy_label", "policy", None), ("traffic", "traffic", None), ("num_gpus", "GPUs", None),
    ("ttft_p50_s", "TTFT p50 (ms)", 1e3), ("ttft_p99_s", "TTFT p99 (ms)", 1e3),
    ("tpot_p50_s", "TPOT p50 (ms)", 1e3), ("tpot_p99_s", "TPOT p99 (ms)", 1e3),
    ("itl_p99_s", "ITL p99 (ms)", 1e3),
    ("output_tokens_per_s_per_gpu", "output tok/s per GPU", 1.0),
    ("busy_fraction", "busy %", 100.0),
    ("tokens_per_touched_expert", "tokens per touched expert", 1.0),
    ("bubble_fraction", "bubble %", 100.0), ("padding_fraction", "padding %", 100.0),
    ("kv_transfers", "KV transfers", None),
    ("usd_per_million_output_tokens", "$ per M output tokens", 1.0),
    ("slo_status", "at the SLO", None), ("error", "note", None),
)
CAPACITY_COLUMNS = (
    ("label", "policy or deployment", None), ("num_gpus", "GPUs", None),
    ("capacity_rps", "capacity (req/s)", 1.0),
    ("goodput_rps_per_gpu", "goodput (req/s per GPU)", 1.0),
    ("usd_per_million_output_tokens_at_capacity", "$ per M output tokens at capacity", 1.0),
    ("ttft_p99_s", "TTFT p99 (ms)", 1e3), ("itl_p99_s", "ITL p99 (ms)", 1e3),
    ("tpot_p99_s", "TPOT p99 (ms)", 1e3),
    ("tokens_per_touched_expert", "tokens per touched expert", 1.0),
    ("bubble_fraction", "bubble %", 100.0), ("padding_fraction", "padding %", 100.0),
    ("one_user_tpot_p50_s", "1 user: TPOT p50 (ms)", 1e3),
    ("one_user_usd_per_million", "1 user: $ per M output tokens", 1.0),
    ("note", "note", None), ("error", "error", None),
)
_FINGERPRINT = ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "makespan_s",
                "busy_fraction", "capacity_rps", "num_gpus")


def _fmt(value, scale) -> str:
    if value is None or value == "":
        return ""
    if scale is None:
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return ""
    number = float(value) * scale
    return f"{number:,.0f}" if abs(number) >= 100 else f"{number:.3g}"


def slo_status(result: dict, slo) -> str:
    """'overloaded', 'meets' or 'misses: ...' for a latency-table row."""
    if result.get("error"):
        return ""
    if result.get("overloaded"):
        return "overloaded"
    missed = slo.violations(result)
    return "meets" if not missed else "misses (" + "; ".join(missed) + ")"


def drop_duplicates(rows: list[dict], group_keys: tuple, label_key: str) -> tuple[list, list]:
    """(rows kept, notes): a row whose figures equal an earlier row's in its group is left
    out, and each left-out label gets one note naming what it repeated and where."""
    seen: dict = {}
    kept, repeats = [], {}
    for row in rows:
        res = row["result"]
        if res.get("error"):
            kept.append(row)
            continue
        group = tuple(row["meta"].get(k) for k in group_keys)
        print_ = tuple(repr(res.get(k)) for k in _FINGERPRINT)
        first = seen.setdefault((group, print_), row)
        if first is row:
            kept.append(row)
        else:
            key = (row["meta"][label_key], first["meta"][label_key])
            repeats.setdefault(key, []).append(str(row["meta"].get(group_keys[-1])))
    notes = [f"{label}: left out where it repeats {other} number for number "
             f"({', '.join(where)}): it does nothing different there."
             for (label, other), where in repeats.items()]
    return kept, notes


def table_lines(rows: list[dict], columns) -> list[list[str]]:
    """A header and one line per row ({"meta", "result"} merged)."""
    out = [[title for _, title, _ in columns]]
    for row in rows:
        merged = {**row["result"], **row["meta"]}
        out.append([_fmt(merged.get(key), scale) for key, _, scale in columns])
    return out


def markdown_table(lines: list[list[str]]) -> str:
    head, *body = lines

    def says_something(i):
        return any(line[i] not in ("", "0", "0.0") for line in body)

    keep = [i for i in range(len(head)) if says_something(i)]
    pick = lambda line: [line[i] for i in keep]  # noqa: E731
    text = ["| " + " | ".join(pick(head)) + " |", "|" + "---|" * len(keep)]
    text += ["| " + " | ".join(pick(line)) + " |" for line in body]
    return "\n".join(text)


def write_csv(lines: list[list[str]], path: Path) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(lines)
    return path


def write_results(rows: list[dict], path: Path) -> Path:
    """results.csv: every run and search, every figure, meta columns first."""
    flat = [{**{"meta." + k: v for k, v in row["meta"].items()},
             **{k: v for k, v in row["result"].items() if k != "probes"}} for row in rows]
    return write_table(flat, path)
