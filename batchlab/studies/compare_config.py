"""The shape of a `batchlab compare` config, checked before anything runs.

`compare.load_config` calls `check_config` on the parsed TOML, so that a wrong type or a
missing key is one line naming the table and the key ("[[models]] #2: 'key' is missing")
instead of a KeyError from deep inside `plan()`. A key compare does not read is an error
too (a typo would run another comparison than the one asked for), and so is a policy that
is not installed under that name, a knob it does not have or a value it refuses: each would
otherwise leave its runs failed or missing with only a line in the report. The values of
run settings are checked next, by `compare_plan.load_config` with `scenario.check_params`
(the checks every run gets), and it builds the devices of each model, `deploy` table,
study's inline model and scale entry once before anything runs.
"""

from __future__ import annotations

from ..core import limits
from ..core.errors import BatchlabError, ConfigError
from ..policies.discovery import available_policies, load_policy, policy_names
from .capacity import check_search

# The keys compare reads in each table (run settings, in [run], [[models]], `deploy` and `set`
# tables, are checked with every run's by scenario.check_params instead). A key outside these
# would be ignored: a typo ("reqests") must not run a different comparison than the one asked.
TOP = ("run", "traffic", "models", "studies", "policies", "scale", "slo", "capacity")
TRAFFIC = ("local_requests", "rates", "duration", "min_requests", "max_requests")
POLICY_ENTRY = ("label", "policy", "set", "deploy", "skip")
SCALE_ENTRY = ("label", "model", "preset", "deploy", "set", "capacity")
STUDY = ("title", "model", "policy", "knob", "values", "rate", "requests", "set")
KINDS = ("moe", "dense")
# Requests of a [traffic] rate: rate x duration, clamped to these unless the table says
TRAFFIC_REQUESTS = {"duration": 30, "min_requests": 30, "max_requests": 1000}


def _fail(name: str, where: str, problem: str) -> None:
    raise ConfigError(f"{name}: {where}: {problem} (see `batchlab compare --print-config` for "
                      "a correct file)")


def _table(name, where, value) -> dict:
    if not isinstance(value, dict):
        _fail(name, where, f"must be a table, got {limits._show(value)}")
    return value


def _need(name, where, table: dict, key: str, kind, what: str):
    if key not in table:
        _fail(name, where, f"{key!r} is missing; it must be {what}")
    value = table[key]
    # an empty text too: key = "" or label = "" gave blank rows and "(keys: , dense)"
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool or \
            isinstance(value, str) and not value.strip():
        _fail(name, where, f"{key!r} must be {what}, got {limits._show(value)}")
    return value


def _known(name, where, table: dict, keys) -> None:
    for key in table:
        if key not in keys:
            _fail(name, where, f"unknown key {key!r}; known: {', '.join(keys)}")


def _policy(name, where, policy: str, params: dict) -> tuple | None:
    """The parameter names of `policy`, or None if it is installed but cannot load (the
    report then leaves it out and says why); an unknown name is an error: a typo would
    otherwise leave the policy out of every table without a word on the terminal."""
    if policy not in params:
        names = policy_names()
        if policy not in names:
            _fail(name, where, f"unknown policy {policy!r}; available: {', '.join(names)}")
        return None
    return params[policy]


def _deferred(value) -> bool:
    """A [[policies]] knob value resolved only when the tables are planned (compare_plan)."""
    return isinstance(value, str) and (value == "device" or value.startswith("best:"))


def _knobs(name, where, policy: str, knobs: dict, params: dict,
           deferred: bool = False) -> None:
    """Each knob a parameter of `policy`, and the knobs together values the policy accepts
    (it is built once here, as every run would build it: a bad value would otherwise fail
    its runs and leave only a line in the report). deferred: "device" and "best:<study>"
    values are resolved later ([[policies]] only); with one among the knobs only the names
    are checked, since the others may be valid only beside the value it resolves to."""
    declared = _policy(name, where, policy, params)
    if declared is None:
        return
    if not deferred:
        for knob, value in knobs.items():
            if _deferred(value):
                _fail(name, where, f"{knob} = {value!r}: only a [[policies]] entry's set "
                      "resolves \"device\" and \"best:<study>\"; give a value")
    for knob in knobs:
        if knob not in declared:
            _fail(name, where, f"policy {policy!r} has no parameter {knob!r}; parameters: "
                  f"{', '.join(declared)}")
    if deferred and any(_deferred(v) for v in knobs.values()):
        return
    try:
        load_policy(policy, **knobs)
    except BatchlabError as exc:  # a refused value, or a plugin that fails to build
        _fail(name, where, str(exc))


def _optional(name, where, table: dict, key: str, check) -> None:
    if table.get(key) is not None:
        try:
            check(table[key], f"{key!r}")
        except ConfigError as exc:
            _fail(name, where, str(exc))


def _check_traffic(name: str, traffic) -> None:
    where = "[traffic]"
    _table(name, where, traffic)
    _known(name, where, traffic, TRAFFIC)
    rates = traffic.get("rates", [])
    if not isinstance(rates, list):
        _fail(name, where, f"'rates' must be a list of requests per second, e.g. [1, 4], got "
              f"{limits._show(rates)}")
    for i, rate in enumerate(rates):
        _optional(name, where, {"rate": rate}, "rate",
                  lambda v, w: limits.check_number(v, f"rates[{i}]", low=limits.MIN_RATE))
    _optional(name, where, traffic, "local_requests",
              lambda v, w: limits.check_int(v, w, low=0, high=limits.MAX_REQUESTS))
    _optional(name, where, traffic, "duration", lambda v, w: limits.check_seconds(
        v, w, positive=True))
    for key in ("min_requests", "max_requests"):
        _optional(name, where, traffic, key, limits.check_count)
    # max_requests won silently: min_requests = 30 and max_requests = 10 ran 10 a rate. Only
    # a min_requests the file gives can contradict: the default one yields to a smaller
    # max_requests (max_requests = 10 alone runs 10 a rate, as the user asked)
    if "min_requests" in traffic:
        bounds = {**TRAFFIC_REQUESTS, **traffic}
        high = "'max_requests'" if "max_requests" in traffic else "the default 'max_requests'"
        try:
            limits.check_order(bounds["min_requests"], bounds["max_requests"], "'min_requests'",
                               high)
        except ConfigError as exc:
            _fail(name, where, str(exc))


def _entries(name: str, key: str, value, at_least_one: bool = False):
    """(where, table) of each entry of an array of tables `[[key]]`, each checked a table."""
    if not isinstance(value, list) or (at_least_one and not value):
        _fail(name, f"[[{key}]]", f"must be {'one or more ' if at_least_one else ''}[[{key}]] "
              f"tables, got {limits._show(value)}")
    for i, entry in enumerate(value):
        where = f"[[{key}]] #{i + 1}"
        _table(name, where, entry)
        yield where, entry


def _check_models(name: str, models) -> set:
    keys = set()
    for where, model in _entries(name, "models", models, at_least_one=True):
        key = _need(name, where, model, "key", str, "a short name, such as \"moe\"")
        _need(name, where, model, "label", str, "a title for tables and plots")
        if "kind" in model:
            kind = _need(name, where, model, "kind", str, "\"moe\" or \"dense\"")
            if kind not in KINDS:
                _fail(name, where, f"'kind' must be \"moe\" or \"dense\", got {kind!r}")
        if key in keys:
            _fail(name, where, f"key {key!r} is used twice")
        keys.add(key)
    return keys


def _check_studies(name: str, studies, model_keys: set, params: dict) -> None:
    _table(name, "[studies]", studies)
    for key, study in studies.items():
        where = f"[studies.{key}]"
        if not key.strip():  # "best:" could not name it, and its plot had no name
            _fail(name, where, "a study needs a name, such as [studies.window]")
        _table(name, where, study)
        _known(name, where, study, STUDY)
        policy = _need(name, where, study, "policy", str, "a policy name")
        knob = _need(name, where, study, "knob", str, "a policy parameter name")
        values = _need(name, where, study, "values", list, "a non-empty list of knob values")
        if not values:
            _fail(name, where, "'values' is empty: the study would have no points")
        model = _need(name, where, study, "model", (str, dict),
                      "a [[models]] key or an inline table of run settings")
        if isinstance(model, str) and model not in model_keys:
            _fail(name, where, f"model {model!r} is not a [[models]] key (keys: "
                  f"{', '.join(sorted(model_keys))})")
        _need(name, where, study, "rate", (int, float), "requests per second")
        _optional(name, where, study, "rate",
                  lambda v, w: limits.check_number(v, w, low=limits.MIN_RATE))
        _optional(name, where, study, "requests", limits.check_count)
        if "set" in study:
            _table(name, f"{where} set", study["set"])
        for value in values:
            _knobs(name, where, policy, {**study.get("set", {}), knob: value}, params)
        if "title" in study:
            _need(name, where, study, "title", str, "text")


def _check_policies(name: str, policies, model_keys: set, params: dict,
                    studies: dict) -> None:
    for where, entry in _entries(name, "policies", policies):
        _known(name, where, entry, POLICY_ENTRY)
        _need(name, where, entry, "label", str, "a title for tables and plots")
        policy = _need(name, where, entry, "policy", str,
                       "a policy name (see `batchlab policies`)")
        for key in ("set", "deploy", "skip"):
            if key in entry:
                _table(name, f"{where} {key}", entry[key])
        _policy(name, where, policy, params)
        _knobs(name, f"{where} set", policy, entry.get("set", {}), params, deferred=True)
        for knob, value in entry.get("set", {}).items():
            if _deferred(value) and value.startswith("best:") and value[5:] not in studies:
                _fail(name, f"{where} set", f"{knob} = {value!r} names no [studies] table "
                      f"(studies: {', '.join(studies) or 'none'})")
        for model in entry.get("skip", {}):  # its text is the report's reason (skip = 3 was)
            _need(name, f"{where} skip", entry["skip"], model, str,
                  "a reason the policy cannot act on that model")
        for key in ("deploy", "skip"):
            for model in entry.get(key, {}):
                if model not in model_keys:
                    _fail(name, f"{where} {key}", f"{model!r} is not a [[models]] key (keys: "
                          f"{', '.join(sorted(model_keys))})")


def _check_scale(name: str, scale, model_keys: set, params: dict) -> None:
    for where, entry in _entries(name, "scale", scale):
        _known(name, where, entry, SCALE_ENTRY)
        _need(name, where, entry, "label", str, "a title for tables and plots")
        model = _need(name, where, entry, "model", str, "a [[models]] key")
        if model not in model_keys:
            _fail(name, where, f"model {model!r} is not a [[models]] key (keys: "
                  f"{', '.join(sorted(model_keys))})")
        if "preset" in entry:
            _need(name, where, entry, "preset", str, "a deployment preset name")
        for key in ("deploy", "set", "capacity"):
            if key in entry:
                _table(name, f"{where} {key}", entry[key])
        # scale runs continuous batching (a preset its own policy: compare_plan checks it)
        if "set" in entry and "continuous" in params and "preset" not in entry:
            _knobs(name, f"{where} set", "continuous", entry["set"], params)


def check_config(config: dict, name: str) -> None:
    """Raise a ConfigError naming the first table and key of `config` that is malformed."""
    if "variants" in config:  # read by early versions; later nothing did, silently
        _fail(name, "[variants]", "is no longer read: give each policy setting its own "
              "[[policies]] entry (label, policy, set = { knob = value }), or sweep one knob "
              "with a [studies.NAME] table")
    _known(name, "the top level", config, TOP)
    _table(name, "[run]", config["run"])
    _check_traffic(name, config["traffic"])
    model_keys = _check_models(name, config["models"])
    # Parameter names of every policy that loads (one discovery pass for the whole file).
    params = {i.name: tuple(p.name for p in i.params)
              for i in available_policies(include_broken=False)}
    if "studies" in config:
        _check_studies(name, config["studies"], model_keys, params)
    if "policies" in config:
        _check_policies(name, config["policies"], model_keys, params,
                        config.get("studies") or {})
    if "scale" in config:
        _check_scale(name, config["scale"], model_keys, params)
    for section in ("slo", "capacity"):
        if section in config:
            _table(name, f"[{section}]", config[section])
    _check_search(name, "[capacity]", config.get("capacity", {}))
    for i, entry in enumerate(config.get("scale", [])):
        if "capacity" in entry:  # on top of [capacity], as compare_capacity merges them
            _check_search(name, f"[[scale]] #{i + 1} capacity",
                          {**config.get("capacity", {}), **entry["capacity"]})


def _check_search(name: str, where: str, search: dict) -> None:
    # Checked here, before phase 1 runs: a bad value found by each search would fail every
    # capacity cell after the whole run, and exit 0.
    try:
        check_search(search)
    except ConfigError as exc:
        _fail(name, where, str(exc))
