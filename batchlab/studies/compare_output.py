"""The folder `batchlab compare` writes: results.csv, tables/, plots/ and report.md.

`build_view` gathers everything the tables, plots and report show from the run's rows — the
latency tables without repeated rows, the capacity tables, the scale axis with its one-user
runs, the cost curves and their crossover — so that all three read the same numbers.
"""

from __future__ import annotations

from pathlib import Path

from .compare_scale import cheapest_curve, crossover, demand_grid, deployment_economics
from .tables import (CAPACITY_COLUMNS, LATENCY_COLUMNS, drop_duplicates, slo_status,
                     table_lines, write_csv, write_results)


def _first_of_kind(config: dict, kind: str) -> dict | None:
    return next((m for m in config["models"] if m.get("kind") == kind), None)


def build_view(config: dict, rows: list[dict], capacity: dict, left_out: list[dict],
               best: dict) -> dict:
    slo = config["_slo"]
    for row in rows:
        if row["meta"]["section"] == "table":
            row["result"]["slo_status"] = slo_status(row["result"], slo)
    one_user = {r["meta"]["label"]: r["result"] for r in capacity["one_user"]}
    for row in capacity["scale"]:
        single = one_user.get(row["meta"]["label"], {})
        row["result"]["one_user_tpot_p50_s"] = single.get("tpot_p50_s")
        row["result"]["one_user_usd_per_million"] = single.get("usd_per_million_output_tokens")
        row["result"]["one_user_throughput_rps"] = single.get("throughput_rps")
    models = {}
    for model in config["models"]:
        key = model["key"]
        latency = [r for r in rows if r["meta"]["section"] == "table"
                   and r["meta"]["model_key"] == key]
        latency, notes = drop_duplicates(latency, ("model_key", "traffic"), "policy_label")
        cap = [r for r in capacity["capacity"] if r["meta"]["model_key"] == key]
        cap, cap_notes = drop_duplicates(cap, ("model_key", "section"), "label")
        skipped = [f"{e['label']}: left out — {e['why']}." for e in left_out
                   if e["model_key"] == key]
        models[key] = {"model": model, "latency": latency, "capacity": cap,
                       "notes": skipped + notes + cap_notes}
    scale = capacity["scale"]
    scale_notes = [f"{e['label']}: left out — {e['why']}." for e in capacity["left_out"]]
    view = {"config": config, "slo": slo, "models": models, "scale": scale,
            "scale_notes": scale_notes, "best": best, "studies": rows,
            "curves": {}, "crossover": None}
    moe, dense = _first_of_kind(config, "moe"), _first_of_kind(config, "dense")
    economics = {}
    for row in scale:
        econ = deployment_economics(row["result"])
        if econ is not None:
            economics.setdefault(row["meta"]["model_key"], []).append(
                {**econ, "label": row["meta"]["label"]})
    if economics:
        singles = [r["result"].get("one_user_throughput_rps") for r in scale]
        singles = [x for x in singles if isinstance(x, float) and x > 0]
        grid = demand_grid([d for ds in economics.values() for d in ds],
                           low=min(singles) if singles else None)
        view["curves"] = {k: cheapest_curve(ds, grid) for k, ds in economics.items()}
        view["economics"] = economics
        if moe and dense and moe["key"] in economics and dense["key"] in economics:
            view["crossover"] = crossover(view["curves"][moe["key"]],
                                          view["curves"][dense["key"]])
            view["pair"] = (moe, dense)
    return view


def write_outputs(config: dict, rows: list[dict], capacity: dict, left_out: list[dict],
                  best: dict, out: Path, *, plots: bool = True) -> dict[str, Path]:
    from .compare_report import write_report

    out.mkdir(parents=True, exist_ok=True)
    view = build_view(config, rows, capacity, left_out, best)
    every = rows + capacity["capacity"] + capacity["scale"] + capacity["one_user"]
    paths = {"results": write_results(every, out / "results.csv")}
    (out / "tables").mkdir(exist_ok=True)
    for key, m in view["models"].items():
        paths[key] = write_csv(table_lines(m["latency"], LATENCY_COLUMNS),
                               out / "tables" / f"{key}.csv")
        paths[f"{key}-capacity"] = write_csv(table_lines(m["capacity"], CAPACITY_COLUMNS),
                                             out / "tables" / f"{key}-capacity.csv")
    if view["scale"]:
        paths["scale"] = write_csv(table_lines(view["scale"], CAPACITY_COLUMNS),
                                   out / "tables" / "scale.csv")
    drawn: dict[str, Path] = {}
    if plots:
        from . import plots as plotting
        from . import plots_scale

        folder = out / "plots"
        folder.mkdir(exist_ok=True)
        for name, draw in (("crossover", plots_scale.crossover),
                           ("speed_vs_gpus", plots_scale.speed_vs_gpus),
                           ("capacity", plots_scale.capacity_by_policy),
                           ("frontier", plotting.frontier),
                           ("cost_vs_traffic", plotting.cost_vs_traffic)):
            path = draw(view, folder / f"{name}.png")
            if path is not None:
                drawn[name] = path
        for key in config.get("studies", {}):
            path = plotting.study(rows, key, folder / f"{key}.png")
            if path is not None:
                drawn[key] = path
    paths.update(drawn)
    paths["report"] = write_report(view, out, drawn)
    return paths
