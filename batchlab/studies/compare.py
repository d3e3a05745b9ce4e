"""`batchlab compare`: the cost-at-scale story, as tables, plots and a short report.

A compare config (TOML; the default ships as batchlab/data/compare.toml) names the models, the
traffic (one local user up to heavy Poisson traffic), the policy variants and the knob studies.
`plan()` turns it into run points (flat dicts that batchlab.studies.scenario understands, plus a `meta`
saying where each belongs), `batchlab.studies.sweep.run_points` runs them (in parallel, resumable), and
`write_outputs()` writes the folder: results.csv, one table per model, the plots and report.md.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from ..core.errors import ConfigError
from ..policies.discovery import available_policies
from .compare_config import check_config
from .scenario import check_keys
from .tables import write_tables

DEFAULT_CONFIG = "compare.toml"


def load_config(path=None) -> dict:
    """The compare config at `path`, or the embedded default."""
    if path is None:
        text, name = (resources.files("batchlab") / "data" / DEFAULT_CONFIG).read_text(), \
            "the default compare config"
    else:
        name = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read compare config {name}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{name}: not a TOML file (byte 0x{exc.object[exc.start]:02x} "
                              f"at offset {exc.start} is not UTF-8 text)") from None
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    for section in ("run", "traffic", "models"):
        if section not in config:
            raise ConfigError(f"{name}: missing [{section}] (copy the default with "
                              "`batchlab compare --print-config`)")
    check_config(config, name)
    config["_name"] = name
    return config


def _model_settings(config: dict, entry) -> dict:
    """Run settings of a model entry (or of a study's inline model)."""
    if isinstance(entry, str):
        for model in config["models"]:
            if model.get("key") == entry:
                entry = model
                break
        else:
            raise ConfigError(f"{config['_name']}: no [[models]] entry with key {entry!r}")
    return {k: v for k, v in entry.items() if k not in ("key", "kind", "label")}


def _traffic(config: dict) -> list[tuple[str, dict]]:
    t = config["traffic"]
    points = []
    if t.get("local_requests"):
        points.append(("1 user", {"arrival": "local", "requests": int(t["local_requests"])}))
    for rate in t.get("rates", []):
        if not (isinstance(rate, (int, float)) and rate > 0):
            raise ConfigError(f"{config['_name']}: traffic rate {rate!r} must be > 0 req/s")
        n = int(min(max(rate * t.get("duration", 30), t.get("min_requests", 30)),
                    t.get("max_requests", 1000)))
        points.append((f"{rate:g} req/s", {"arrival": "poisson", "rate": float(rate),
                                            "requests": n}))
    return points


def policy_variants(config: dict, policies=None) -> list[tuple[str, dict]]:
    """(label, settings) for every installed policy at its defaults, plus configured variants."""
    installed = [info.name for info in available_policies(include_broken=False)]
    chosen = installed if policies is None else list(policies)
    for name in chosen:
        if name not in installed:
            raise ConfigError(f"policy {name!r} is not installed; installed: "
                              f"{', '.join(installed)}")
    out = []
    for name in chosen:
        out.append((name, {"policy": name}))
        for knobs in config.get("variants", {}).get(name, []):
            label = name + " " + " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in knobs.items())
            out.append((label, {"policy": name, **{f"policy.{k}": v for k, v in knobs.items()}}))
    return out


def plan(config: dict, policies=None) -> list[dict]:
    """Every run point of the comparison: settings plus a `meta` dict (not a run setting)."""
    base = dict(config["run"])
    points = []
    variants = policy_variants(config, policies)
    for model in config["models"]:
        settings = _model_settings(config, model)
        for traffic_label, traffic in _traffic(config):
            for label, policy in variants:
                params = {**base, **settings, **traffic, **policy}
                meta = {"section": "table", "model_key": model["key"],
                        "model_kind": model.get("kind", ""), "model_label": model["label"],
                        "traffic": traffic_label, "policy_label": label}
                points.append({"params": params, "meta": meta})
    for study_key, study in config.get("studies", {}).items():
        policy = study["policy"]
        if policies is not None and policy not in policies:
            continue
        if policy not in {info.name for info in available_policies(include_broken=False)}:
            continue  # reported as skipped by write_outputs
        settings = _model_settings(config, study["model"])
        fixed = {f"policy.{k}": v for k, v in study.get("set", {}).items()}
        for value in study["values"]:
            params = {**base, **settings, "arrival": "poisson", "rate": float(study["rate"]),
                      "requests": int(study.get("requests", 300)), "policy": policy,
                      **fixed, f"policy.{study['knob']}": value}
            meta = {"section": "study", "study": study_key, "knob": study["knob"],
                    "value": value, "title": study.get("title", study_key)}
            points.append({"params": params, "meta": meta})
    for point in points:
        check_keys(point["params"])
    return points


def run(config_path=None, out="batchlab-compare", *, policies=None, executor="local",
        processes=None, address=None, plots=True, progress=None) -> dict[str, Path]:
    """Plan, run (resumably: finished points are cached under out/points) and write
    everything; returns the paths written."""
    from . import plots as plotting
    from .compare_report import write_report
    from .sweep import run_points

    config = load_config(config_path)
    points = plan(config, policies)
    out = Path(out)
    # Biggest runs first, so that no worker is left with a long one at the end.
    order = sorted(range(len(points)), key=lambda i: -points[i]["params"].get("requests", 0))
    results = run_points([points[i]["params"] for i in order], executor=executor,
                         processes=processes, address=address, cache_dir=out / "points",
                         progress=progress)
    by_index = dict(zip(order, results))
    rows = [{"params": p["params"], "meta": p["meta"], "result": by_index[i]}
            for i, p in enumerate(points)]
    paths = write_tables(rows, config, out)
    drawn: dict[str, Path] = {}
    if plots:
        (out / "plots").mkdir(exist_ok=True)
        drawn["frontier"] = plotting.frontier(rows, config["models"], out / "plots" /
                                              "frontier.png")
        drawn["cost_vs_traffic"] = plotting.cost_vs_traffic(rows, config["models"],
                                                            out / "plots" / "cost_vs_traffic.png")
        for key in config.get("studies", {}):
            path = plotting.study(rows, key, out / "plots" / f"{key}.png")
            if path is not None:
                drawn[key] = path
    paths.update(drawn)
    paths["report"] = write_report(rows, config, out, drawn)
    return paths
