"""`batchlab compare`: cost at a service-level objective, every policy where it acts, traffic
from one local user to many, as tables, plots and a report.

A compare config (TOML; the default ships as batchlab/data/compare.toml) names the SLO, the
models on their base deployments, each policy in the setup where it acts, the scale axis
(deployments from one node up) and the knob studies. The run has two phases:
1. the knob studies and the latency tables at fixed offered rates (run points, in parallel,
   resumable through batchlab.studies.sweep);
2. the capacity searches (batchlab.studies.compare_capacity): every policy setup of every
   model, and every deployment of the scale axis, with one local user on each deployment.
Phase 2 follows phase 1 because a policy knob may be "best:<study>", the study's cheapest
value. `write_outputs` then writes results.csv, the tables, the plots and report.md, and
`write_readme` a README.txt saying what each file is.
"""

from __future__ import annotations

from pathlib import Path

from .compare_plan import (DEFAULT_CONFIG, best_values, load_config, plan_studies,  # noqa: F401
                           plan_tables)


def run(config_path=None, out="batchlab-compare", *, policies=None, executor="local",
        processes=None, address=None, plots=True, progress=None) -> dict[str, Path]:
    """Plan, run (resumably: finished runs are cached under out/points) and write
    everything; returns the paths written."""
    from .compare_capacity import run_capacity
    from .compare_output import write_outputs
    from .compare_readme import write_readme
    from .sweep import run_points

    config = load_config(config_path)
    out = Path(out)
    kw = {"executor": executor, "processes": processes, "address": address}

    def phase(what: str, size: int | None = None):
        # One bar per phase: a shared one finished after the first phase and then showed
        # nothing for the rest of the run. A phase with no work shows nothing at all.
        if progress is None or size == 0:
            return None
        return progress.phase(what) if hasattr(progress, "phase") else progress

    def run_all(points, what: str):
        # Biggest runs first, so that no worker is left with a long one at the end.
        order = sorted(range(len(points)), key=lambda i: -points[i]["params"].get("requests", 0))
        results = run_points([points[i]["params"] for i in order], cache_dir=out / "points",
                             progress=phase(what, len(points)), **kw)
        by_index = dict(zip(order, results))
        return [{**p, "result": by_index[i]} for i, p in enumerate(points)]

    rows = run_all(plan_studies(config, policies), "knob studies")
    best = best_values(config, rows)
    table_points, left_out = plan_tables(config, best, policies)
    rows += run_all(table_points, "latency tables")
    capacity = run_capacity(config, best, policies, cache_dir=out / "points" / "capacity",
                            progress=phase("capacity searches"), **kw)
    paths = write_outputs(config, rows, capacity, left_out, best, out, plots=plots)
    paths["readme"] = write_readme(out, paths)
    return paths
