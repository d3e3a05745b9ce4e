"""The tables of `batchlab compare`: results.csv with every figure, one CSV per model, and the
same tables as markdown for report.md."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from .sweep import write_table

TABLE_COLUMNS = (
    ("policy_label", "policy", None), ("traffic", "traffic", None),
    ("ttft_p50_s", "TTFT p50 (ms)", 1e3), ("ttft_p99_s", "TTFT p99 (ms)", 1e3),
    ("tpot_p50_s", "TPOT p50 (ms)", 1e3), ("tpot_p99_s", "TPOT p99 (ms)", 1e3),
    ("output_tokens_per_s_per_gpu", "output tok/s per GPU", 1.0),
    ("busy_fraction", "busy %", 100.0),
    ("tokens_per_touched_expert", "tokens per touched expert", 1.0),
    ("bubble_fraction", "bubble %", 100.0), ("padding_fraction", "padding %", 100.0),
    ("usd_per_million_output_tokens", "$ per M output tokens", 1.0),
    ("error", "note", None),
)


def _fmt(value, scale) -> str:
    if value is None or value == "":
        return ""
    if scale is None:
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    number = float(value) * scale
    return f"{number:,.0f}" if abs(number) >= 100 else f"{number:.3g}"


def table_rows(rows: list[dict], model_key: str) -> list[list[str]]:
    """The table for one model: a header and one line per (policy variant, traffic)."""
    out = [[title for _, title, _ in TABLE_COLUMNS]]
    for row in rows:
        if row["meta"]["section"] == "table" and row["meta"]["model_key"] == model_key:
            merged = {**row["meta"], **row["result"]}
            out.append([_fmt(merged.get(key), scale) for key, _, scale in TABLE_COLUMNS])
    return out


def markdown_table(lines: list[list[str]]) -> str:
    head, *body = lines
    keep = [i for i in range(len(head)) if any(line[i] for line in body)]
    pick = lambda line: [line[i] for i in keep]  # noqa: E731
    text = ["| " + " | ".join(pick(head)) + " |", "|" + "---|" * len(keep)]
    text += ["| " + " | ".join(pick(line)) + " |" for line in body]
    return "\n".join(text)


def write_tables(rows: list[dict], config: dict, out: Path) -> dict[str, Path]:
    """results.csv (every point, every figure) and tables/<model>.csv."""
    out.mkdir(parents=True, exist_ok=True)
    flat = [{**{"meta." + k: v for k, v in row["meta"].items()}, **row["result"]}
            for row in rows]
    paths = {"results": write_table(flat, out / "results.csv")}
    (out / "tables").mkdir(exist_ok=True)
    for model in config["models"]:
        path = out / "tables" / f"{model['key']}.csv"
        with path.open("w", newline="") as fh:
            csv.writer(fh).writerows(table_rows(rows, model["key"]))
        paths[model["key"]] = path
    return paths
