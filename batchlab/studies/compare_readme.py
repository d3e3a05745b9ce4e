"""README.txt of `batchlab compare`'s output folder: what each file is, for whoever opens the
folder without having run the command (a colleague, or yourself in a month)."""

from __future__ import annotations

from pathlib import Path


def write_readme(out: Path, paths: dict[str, Path]) -> Path:
    """Write out/README.txt listing the files of this run; returns its path."""
    num_points = sum(1 for _ in (out / "points").rglob("*.json"))
    def rel(path: Path) -> str:
        return str(Path(path).relative_to(out))

    tables = sorted(rel(p) for k, p in paths.items() if Path(p).parent.name == "tables")
    plots = sorted(rel(p) for p in paths.values() if Path(p).suffix == ".png")
    lines = [
        "batchlab compare output",
        "",
        "report.md        Start here: the crossover picture, then what this run found (capacity",
        "                 and $ per million tokens at the SLO, the scale axis, one user, the",
        "                 knob studies), every figure from this run's own numbers; then the",
        "                 tables in markdown and the caveats.",
        "results.csv      Every run, one row each: its settings (meta.* says where it belongs",
        "                 in the report; policy.* are policy parameters) and every summary",
        "                 figure (units in the column names: _s seconds, _rps requests per",
        "                 second). A failed run names its policy and says why in `error`.",
    ]
    if tables:
        lines += ["tables/          As in report.md: per model its latency table at fixed rates",
                  "                 (<model>.csv) and its capacity at the SLO per policy",
                  "                 (<model>-capacity.csv); scale.csv is the scale axis. Files: "
                  + ", ".join(tables)]
    if plots:
        lines += ["plots/           " + ", ".join(plots)]
    lines += [
        f"points/          A cache of the {num_points} runs (capacity/ holds the rate probes of the",
        "                 capacity searches), one JSON file each, named by a",
        "                 hash of the run's settings, the batchlab version, the defaults and",
        "                 batchlab's own files. The same command with the same batchlab",
        "                 reuses them instead of recomputing (edited code recomputes);",
        "                 delete the folder to recompute everything. Not meant to be read.",
        "README.txt       This file.",
        "",
        "Reproduce: run `batchlab compare` with the same --config and --policies into this",
        "folder; `batchlab compare --print-config` shows the default scenario.",
    ]
    path = out / "README.txt"
    path.write_text("\n".join(lines) + "\n")
    return path
