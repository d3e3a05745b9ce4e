"""Phase 2 of `batchlab compare`: capacity searches and one-user runs, in parallel.

Two kinds of search, each a `find_capacity` call run in a worker (its probes are cached under
the compare's points/capacity folder, so a rerun costs nothing):
- "capacity": every policy setup of every model (batchlab.studies.compare.policy_setup), the
  number the policy table headlines;
- "scale": every deployment of the scale axis under continuous batching (or a preset's own
  policy), plus a closed-loop run of one local user on it (TPOT and cost at one user).
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import BatchlabError, ConfigError
from .capacity import SEARCH_DEFAULTS, find_capacity
from .compare_plan import model_entry, model_settings, policy_entries, policy_setup
from .compare_scale import deployment_preset
from .executors import map_unordered
from .scenario import check_keys
from .slo import SLO


def _search_options(config: dict, entry: dict | None = None) -> dict:
    """The [capacity] search options, with a [[scale]] entry's own `capacity` table on top
    (a deployment of hundreds of GPUs needs more requests per probe than one node)."""
    opts = dict(config.get("capacity", {}))
    own = (entry or {}).get("capacity", {})
    if not isinstance(own, dict):
        raise ConfigError(f"{config['_name']}: [[scale]] {entry.get('label')!r}: capacity must "
                          f"be a table of search options, got {own!r}")
    opts.update(own)
    unknown = set(opts) - set(SEARCH_DEFAULTS)
    if unknown:
        where = "[capacity]" if not own else f"[[scale]] {entry.get('label')!r} capacity"
        raise ConfigError(f"{config['_name']}: {where} {sorted(unknown)[0]!r} is unknown; "
                          f"known: {', '.join(SEARCH_DEFAULTS)}")
    return opts


def plan_capacity(config: dict, best: dict, policies=None) -> tuple[list[dict], list[dict]]:
    """(search cases, [{section, model_key, label, why}] left out)."""
    base = dict(config["run"])
    cases, left_out = [], []
    for model in config["models"]:
        for entry in policy_entries(config, policies):
            settings, why = policy_setup(config, entry, model, best)
            if settings is None:
                continue  # the latency table already says why
            cases.append({"section": "capacity", "model_key": model["key"],
                          "label": entry["label"], "params": {**base, **settings}})
    if policies is None or "continuous" in policies:
        for entry in config.get("scale", []):
            model = model_entry(config, entry["model"])
            if "preset" in entry:
                settings, why = deployment_preset(entry["preset"])
                if settings is None:
                    left_out.append({"section": "scale", "model_key": model["key"],
                                     "label": entry["label"], "why": why})
                    continue
                settings = {"policy": "continuous", **settings}
            else:
                settings = {**model_settings(config, model, entry.get("deploy")),
                            "policy": "continuous"}
            settings.update({f"policy.{k}": v for k, v in entry.get("set", {}).items()})
            cases.append({"section": "scale", "model_key": model["key"], "label": entry["label"],
                          "params": {**base, **settings},
                          "search": _search_options(config, entry)})
    for case in cases:
        check_keys(case["params"])
    return cases, left_out


def search(job: dict) -> dict:
    """One capacity search (runs in a worker): the case's row at capacity, with its probes;
    {"error": message} when the deployment cannot run (a model that does not fit, say)."""
    try:
        cap = find_capacity(job["params"], SLO(job["slo"]), cache_dir=job["cache_dir"],
                            **job["search"])
    except BatchlabError as exc:
        return {"error": str(exc)}
    row = cap.as_row()
    row["probes"] = [[p["rate"], bool(p["slo_met"])] for p in cap.probes]
    return row


def run_capacity(config: dict, best: dict, policies=None, *, cache_dir, progress=None,
                 executor="local", processes=None, address=None) -> dict:
    """{"capacity": rows, "scale": rows, "one_user": rows, "left_out": [...]}; each row is
    {"meta": ..., "params": ..., "result": ...} like the compare's other rows."""
    from .sweep import run_points

    cases, left_out = plan_capacity(config, best, policies)
    jobs = [{"params": c["params"], "slo": dict(config["_slo"].limits),
             "cache_dir": str(cache_dir), "search": c.get("search") or _search_options(config)}
            for c in cases]
    results: dict[int, dict] = {}
    one_user = []
    scale_cases = [c for c in cases if c["section"] == "scale"]
    # local_requests = 0 turns the one-user runs off here as it does in the tables (it ran 12
    # requests); left out, the scale axis still runs 12.
    local = int(config["traffic"].get("local_requests", 12))
    points = [{**c["params"], "arrival": "local", "requests": local}
              for c in scale_cases] if local else []
    total = len(jobs) + len(points)
    if not total:
        progress = None  # nothing to search: no "0/0 done" line
    if progress is not None:
        progress(0, total)
    if points:
        rows = run_points(points, executor=executor, processes=processes, address=address,
                          cache_dir=Path(cache_dir).parent)  # the compare's points/
        for case, row in zip(scale_cases, rows):
            one_user.append({"meta": {"section": "one_user", "model_key": case["model_key"],
                                      "label": case["label"]},
                             "params": row, "result": row})
    done = len(points)
    for i, row in map_unordered(search, jobs, executor=executor, processes=processes,
                                address=address):
        results[i] = row
        done += 1
        if progress is not None:
            progress(done, total)
    out = {"capacity": [], "scale": [], "one_user": one_user, "left_out": left_out}
    for i, case in enumerate(cases):
        meta = {"section": case["section"], "model_key": case["model_key"],
                "label": case["label"]}
        out[case["section"]].append({"meta": meta, "params": case["params"],
                                     "result": results[i]})
    return out
