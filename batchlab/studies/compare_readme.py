"""README.txt of `batchlab compare`'s output folder: what each file is, for whoever opens the
folder without having run the command (a colleague, or yourself in a month)."""

from __future__ import annotations

from pathlib import Path


def write_readme(out: Path, paths: dict[str, Path], num_points: int) -> Path:
    """Write out/README.txt listing the files of this run; returns its path."""
    def rel(path: Path) -> str:
        return str(Path(path).relative_to(out))

    tables = sorted(rel(p) for k, p in paths.items() if Path(p).parent.name == "tables")
    plots = sorted(rel(p) for p in paths.values() if Path(p).suffix == ".png")
    lines = [
        "batchlab compare output",
        "",
        "report.md        Start here: the cost story and the knob studies, with this run's",
        "                 own numbers, and the tables in markdown.",
        "results.csv      Every run, one row each: its settings (meta.* says where it belongs",
        "                 in the report; policy.* are policy parameters) and every summary",
        "                 figure (units in the column names: _s seconds, _rps requests per",
        "                 second). A failed run names its policy and says why in `error`.",
    ]
    if tables:
        lines += ["tables/          One CSV per model, as in report.md: " + ", ".join(tables)]
    if plots:
        lines += ["plots/           " + ", ".join(plots)]
    lines += [
        f"points/          A cache of the {num_points} runs, one JSON file each, named by a",
        "                 hash of the run's settings, the batchlab version and the defaults.",
        "                 Running the same command again reuses them instead of recomputing;",
        "                 delete the folder to recompute everything. Not meant to be read.",
        "README.txt       This file.",
        "",
        "Reproduce: run `batchlab compare` with the same --config and --policies into this",
        "folder; `batchlab compare --print-config` shows the default scenario.",
    ]
    path = out / "README.txt"
    path.write_text("\n".join(lines) + "\n")
    return path
