"""The plan of `batchlab compare`: its config, each policy's setup, and the run points.

See batchlab/data/compare.toml for the config's sections. A policy entry on a model gives run
settings (`policy_setup`) or one line saying why the policy cannot act there; a knob "device"
is sized to the device (`device_cap`) and "best:<study>" is the study's cheapest value
(`best_values`), which is why the studies run before the tables.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from ..core.errors import ConfigError
from .compare_config import TRAFFIC_REQUESTS, check_config
from ..policies.discovery import available_policies
from ..workloads.spec import parse_length
from .scenario import build_devices, check_keys, check_params
from .capacity import check_slo_keys
from .slo import SLO

DEFAULT_CONFIG = "compare.toml"
DEVICE_KEYS = ("gpus", "tp", "ep", "pp", "dp", "attention_gpus", "ffn_gpus", "devices")
MAX_DEVICE_CAP = 1024  # "device" batch caps stop here: the continuous policy's largest sane cap


def load_config(path=None) -> dict:
    """The compare config at `path`, or the embedded default, checked."""
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
    check_config(config, name)  # every table's shape, keys and policies
    for i, model in enumerate(config["models"]):
        for field in ("model", "gpu"):  # without them the entry would run the teaching device
            if field not in model:
                raise ConfigError(f"{name}: [[models]] #{i + 1} has no {field!r}")
    _check_devices(config, name)
    config["_name"] = name
    try:
        config["_slo"] = SLO.from_config(config.get("slo"), f"{name}: [slo]")
    except ConfigError as exc:
        raise ConfigError(str(exc)) from None
    try:  # a typo ran every study and table, then reported "no deployment met the SLO"
        check_slo_keys(config["_slo"])
    except ConfigError as exc:
        raise ConfigError(f"{name}: [slo]: {exc}") from None
    return config


# Settings compare gives every point itself (its traffic, its policy): in [run], a [[models]]
# entry, a `deploy` table or a study's inline model they would be overridden, or (a trace, a
# closed loop's users) turn every run into another experiment or a failed row.
OWN_KEYS = ("policy", "arrival", "rate", "cv", "users", "think_time", "requests", "trace",
            "time_scale", "limit")


def _check_devices(config: dict, name: str) -> None:
    """Build the devices of each [[models]] entry, each [[policies]] entry's `deploy` table,
    each study's inline model and each [[scale]] entry once: an unknown preset or a layout
    that does not fit would otherwise fail every run of it, leaving only failed rows in the
    report."""
    base = config["run"]  # run settings the points share (an efficiency profile, say)
    _build(f"{name}: [run]", base, devices=False)
    for i, model in enumerate(config["models"]):
        where = f"{name}: [[models]] #{i + 1} ({model['key']})"
        _build(where, {**base, **model_settings(config, model)})
        _check_kind(where, model)
    for i, entry in enumerate(config.get("policies") or []):
        for key, deploy in (entry.get("deploy") or {}).items():
            _build(f"{name}: [[policies]] #{i + 1} deploy.{key}",
                   {**base, **model_settings(config, key, _table(name, i, key, deploy))})
    for key, study in (config.get("studies") or {}).items():
        if isinstance(study["model"], dict):  # as plan_studies runs it: key, kind, label dropped
            _build(f"{name}: [studies.{key}] model",
                   {**base, **model_settings(config, study["model"])})
    for i, entry in enumerate(config.get("scale", [])):
        where = f"{name}: [[scale]] #{i + 1} ({entry['label']})"
        if "preset" in entry:
            _check_preset(where, entry)
        else:
            _build(where, {**base, **model_settings(config, model_entry(config, entry["model"]),
                                                    entry.get("deploy"))})


def _check_kind(where: str, model: dict) -> None:
    """`kind` says which side of the MoE-versus-dense conclusion a model is on: the wrong
    one would put a MoE model's numbers under "dense" in the report."""
    from ..costmodel import resolve_model
    if "kind" in model:
        spec = resolve_model(model["model"])
        actual = "moe" if spec.is_moe else "dense"
        if model["kind"] != actual:
            raise ConfigError(f"{where}: kind = \"{model['kind']}\", but {spec.name} is "
                              f"{'a mixture-of-experts' if spec.is_moe else 'a dense'} model; "
                              f"write kind = \"{actual}\"")


def _table(name: str, i: int, key: str, deploy) -> dict:
    if not isinstance(deploy, dict):  # deploy.moe = "16" was read as no deploy at all
        raise ConfigError(f"{name}: [[policies]] #{i + 1} deploy.{key}: must be a table of "
                          f"device settings, e.g. {{ gpus = 16, dp = 2 }}, got {deploy!r}")
    return deploy


def _check_preset(where: str, entry: dict) -> None:
    from .compare_scale import deployment_preset
    from .scenario import build_policy
    try:
        settings, _ = deployment_preset(entry["preset"])
        if "deploy" in entry:  # the preset's own layout ran; the table was ignored
            raise ConfigError(f"preset {entry['preset']!r} fixes its own devices; drop "
                              "deploy (or drop preset and give deploy)")
        if settings is not None and entry.get("set"):  # the knobs of the preset's policy
            build_policy({**settings, **{f"policy.{k}": v for k, v in entry["set"].items()}})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _build(where: str, settings: dict, devices: bool = True) -> None:
    try:
        own = [k for k in OWN_KEYS if k in settings]
        if own:
            raise ConfigError(f"{own[0]} is set by compare itself ([traffic], [studies], "
                              "[[policies]]); drop it here")
        check_params(settings)
        if devices:
            build_devices(settings)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def model_entry(config: dict, key: str) -> dict:
    for model in config["models"]:
        if model.get("key") == key:
            return model
    raise ConfigError(f"{config['_name']}: no [[models]] entry with key {key!r}")


def model_settings(config: dict, entry, deploy: dict | None = None) -> dict:
    """Run settings of a model entry (a key or inline settings); `deploy` replaces its
    device layout."""
    if isinstance(entry, str):
        entry = model_entry(config, entry)
    settings = {k: v for k, v in entry.items() if k not in ("key", "kind", "label")}
    if deploy:
        settings = {k: v for k, v in settings.items() if k not in DEVICE_KEYS}
        settings.update(deploy)
    return settings


def device_cap(config: dict, settings: dict) -> int:
    """A batch cap sized to the device: the sequences of mean prompt + output length its KV
    memory holds, rounded down to a power of two, at most MAX_DEVICE_CAP."""
    run = config["run"]
    mean = parse_length(run.get("prompt", "lognormal:512:1.0")).mean + \
        parse_length(run.get("output", "lognormal:128:1.0")).mean
    kv = min(d.kv_capacity_tokens for d in build_devices(settings))
    fits = max(int(kv // max(mean, 1.0)), 1)
    return min(1 << (fits.bit_length() - 1), MAX_DEVICE_CAP)


def _installed() -> list[str]:
    return [info.name for info in available_policies(include_broken=False)]


def policy_entries(config: dict, policies=None) -> list[dict]:
    """The [[policies]] entries to run (every installed policy at its defaults when the
    config has none), filtered by `policies`."""
    installed = _installed()
    for name in policies or []:
        if name not in installed:
            raise ConfigError(f"policy {name!r} is not installed; installed: "
                              f"{', '.join(installed)}")
    entries = config.get("policies") or [{"label": n, "policy": n} for n in installed]
    return [e for e in entries if (policies is None or e["policy"] in policies)]


def policy_setup(config: dict, entry: dict, model: dict, best: dict) -> tuple[dict | None, str]:
    """(run settings, "") for a policy entry on a model, or (None, why it is left out)."""
    if entry["policy"] not in _installed():
        return None, f"{entry['policy']} is not installed"
    skip = entry.get("skip", {}).get(model["key"])
    if skip:
        return None, skip
    deploy = entry.get("deploy")
    if deploy is not None and model["key"] not in deploy:
        return None, (f"needs its own devices ({', '.join(deploy)} only); on "
                      f"{model['label']} it would repeat continuous batching")
    settings = {**model_settings(config, model, (deploy or {}).get(model["key"])),
                "policy": entry["policy"]}
    for knob, value in entry.get("set", {}).items():
        if value == "device":
            value = device_cap(config, settings)
        elif isinstance(value, str) and value.startswith("best:"):
            study = value[5:]
            if study not in best:
                return None, f"its {knob} comes from the {study!r} study, which did not run"
            value = best[study]
        settings[f"policy.{knob}"] = value
    return settings, ""


def traffic_points(config: dict) -> list[tuple[str, dict]]:
    t = {**TRAFFIC_REQUESTS, **config["traffic"]}
    points = []
    if t.get("local_requests"):
        points.append(("1 user", {"arrival": "local", "requests": int(t["local_requests"])}))
    for rate in t.get("rates", []):
        if not (isinstance(rate, (int, float)) and rate > 0):
            raise ConfigError(f"{config['_name']}: traffic rate {rate!r} must be > 0 req/s")
        n = int(min(max(rate * t["duration"], t["min_requests"]), t["max_requests"]))
        points.append((f"{rate:g} req/s", {"arrival": "poisson", "rate": float(rate),
                                            "requests": n}))
    return points


def plan_studies(config: dict, policies=None) -> list[dict]:
    """Phase 1a: the knob studies' run points."""
    base, points = dict(config["run"]), []
    for study_key, study in config.get("studies", {}).items():
        policy = study["policy"]
        if (policies is not None and policy not in policies) or policy not in _installed():
            continue  # reported as skipped by the report
        settings = model_settings(config, study["model"])
        fixed = {f"policy.{k}": v for k, v in study.get("set", {}).items()}
        for value in study["values"]:
            params = {**base, **settings, "arrival": "poisson", "rate": float(study["rate"]),
                      "requests": int(study.get("requests", 300)), "policy": policy,
                      **fixed, f"policy.{study['knob']}": value}
            meta = {"section": "study", "study": study_key, "knob": study["knob"],
                    "value": value, "title": study.get("title", study_key),
                    "rate": float(study["rate"])}
            points.append({"params": params, "meta": meta})
    return _checked(points)


def plan_tables(config: dict, best: dict, policies=None) -> tuple[list[dict], list[dict]]:
    """Phase 1b: (run points of the latency tables, [{model_key, label, why}] left out)."""
    base, points, left_out = dict(config["run"]), [], []
    for model in config["models"]:
        for entry in policy_entries(config, policies):
            settings, why = policy_setup(config, entry, model, best)
            if settings is None:
                left_out.append({"model_key": model["key"], "label": entry["label"], "why": why})
                continue
            for traffic_label, traffic in traffic_points(config):
                meta = {"section": "table", "model_key": model["key"],
                        "model_kind": model.get("kind", ""), "model_label": model["label"],
                        "traffic": traffic_label, "policy_label": entry["label"]}
                points.append({"params": {**base, **settings, **traffic}, "meta": meta})
    return _checked(points), left_out


def _checked(points: list[dict]) -> list[dict]:
    for point in points:
        check_keys(point["params"])
    return points


def best_values(config: dict, rows: list[dict]) -> dict:
    """Each study's cheapest value ($ per million output tokens), among its runs that were
    neither overloaded nor failed."""
    best = {}
    for key in config.get("studies", {}):
        good = [r for r in rows if r["meta"].get("study") == key and not r["result"].get("error")
                and not r["result"].get("overloaded")
                and isinstance(r["result"].get("usd_per_million_output_tokens"), float)]
        if good:
            pick = min(good, key=lambda r: r["result"]["usd_per_million_output_tokens"])
            best[key] = pick["meta"]["value"]
    return best
