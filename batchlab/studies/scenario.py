"""One run described as a flat dict of plain values, and how to build it.

The CLI's `run`, `batchlab sweep` and `batchlab compare` all describe a run the same way, so
that a row of a results table says exactly how to reproduce it:

    {"policy": "continuous", "policy.max_num_seqs": 64,
     "model": "deepseek-v3", "gpu": "h200", "gpus": 8,
     "arrival": "poisson", "rate": 20.0, "requests": 500,
     "prompt": "lognormal:512:1.0", "output": "lognormal:128:1.0", "seed": 0}

Keys (all optional; defaults in DEFAULTS): policy and policy.<param>; workload: arrival, rate,
cv, users, think_time, requests, prompt, output (or lengths: a trace file whose (prompt, output)
pairs are drawn together, and max_tokens: their cap on prompt + output), max_new_tokens, or
trace, time_scale, limit;
devices: model, gpu, gpus, tp, ep, pp, dp, price, routing, efficiency (cost model; efficiency
is a calibrated profile file or a dict), or model, gpu,
attention_gpus, ffn_gpus (attention/FFN disaggregation: one device, two GPU pools), or devices
(affine); runtime, overlap, redundant_experts, decode_threshold (cost model: runtime
profile, two-batch overlap, EPLB copies of experts, the most tokens a decode row feeds:
1 + draft tokens verified a step); deployment (a named deployment such as "deepseek-v3-production": prefill
devices first, then decode devices), with prefill_units and decode_units (how many of each
unit; default one each), runtime, overlap, decode_threshold and efficiency (it fixes its
model, GPUs, layout and price, and takes precedence over those settings beside it, as a trace
does over the sampled-traffic ones: DEPLOYMENT_FIXES, TRACE_FIXES; the commands refuse them
where the user typed both);
run: seed, slo_ttft, slo_tpot; label (free text, ignored). An unknown key is an error.
"""

from __future__ import annotations

import os

from ..backends.affine import affine_devices
from ..engines.simulator import simulate
from ..core import limits
from ..core.errors import ConfigError
from ..policies.discovery import load_policy
from ..workloads import make_workload
from ..workloads.spec import check_length
from ..workloads.traces import TRACE_SUFFIXES
from .slo import is_overloaded

DEFAULTS = {
    "policy": "continuous",
    "arrival": "poisson",
    "requests": 500,
    "prompt": "lognormal:512:1.0",
    "output": "lognormal:128:1.0",
    "seed": 0,
}
_SAMPLED_RATE = 1.5  # req/s when a rate-based arrival process is given none
KEYS = frozenset({
    "policy", "arrival", "rate", "cv", "users", "think_time", "requests", "prompt", "output",
    "max_new_tokens", "trace", "time_scale", "limit", "model", "gpu", "gpus", "tp", "ep", "pp",
    "dp", "price", "routing", "devices", "seed", "slo_ttft", "slo_tpot", "label",
    "attention_gpus", "ffn_gpus", "efficiency", "runtime", "overlap", "redundant_experts",
    "decode_threshold", "deployment", "prefill_units", "decode_units",
    "lengths", "max_tokens",
})


def _get(params: dict, key: str):
    value = params.get(key)
    return DEFAULTS.get(key) if value is None else value


def check_keys(params: dict) -> None:
    unknown = [k for k in params if k not in KEYS and not k.startswith("policy.")]
    if unknown:
        raise ConfigError(f"unknown run setting {unknown[0]!r}; known settings: "
                          f"{', '.join(sorted(KEYS))}, and policy.<parameter>")


def _text(value, where):
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string, got {limits._show(value)}")


def _trace(value, where):
    _text(value, where)
    if os.path.isdir(value):
        raise ConfigError(f"{where} must be a trace file, got the directory {value!r}")
    if not value.lower().endswith(TRACE_SUFFIXES):
        raise ConfigError(f"{where} must end in {', '.join(TRACE_SUFFIXES)}, got {value!r}; "
                          "rename the file to say its format")


def _profile(value, where):
    # a table of overrides (a config) or a profile file; the cost model's own message named
    # its API ("None, an Efficiency, a dict ...") and not the option
    if isinstance(value, dict):
        return
    _text(value, where)
    if os.path.isdir(value) or not value.lower().endswith((".toml", ".json")):
        raise ConfigError(f"{where} must be a .toml or .json profile file (`batchlab "
                          f"calibrate --out` writes one), got {limits._show(value)}")


def _flag(value, where):
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {limits._show(value)}")


# What each setting may hold: the same checks for the CLI, sweep files and compare configs,
# so that `--gpus 0` and `gpus = 0` in a sweep get the same one-line error.
_CHECKS = {
    "policy": _text, "arrival": _text, "trace": _trace, "model": _text, "gpu": _text,
    "routing": _text, "prompt": check_length, "output": check_length,
    # a pair's cap holds one prompt and one output token at least (TraceLengths says so too,
    # but by its own name, not the setting's)
    "max_tokens": lambda v, w: limits.check_int(v, w, low=2, high=limits.MAX_TOKENS),
    "requests": limits.check_count, "users": limits.check_count, "limit": limits.check_count,
    "max_new_tokens": limits.check_tokens, "seed": limits.check_seed,
    "devices": lambda v, w: limits.check_count(v, w, limits.MAX_DEVICES),
    "rate": lambda v, w: limits.check_number(v, w, low=limits.MIN_RATE),
    "cv": lambda v, w: limits.check_number(v, w, above=0, high=1000),
    "think_time": limits.check_seconds,
    "time_scale": lambda v, w: limits.check_number(v, w, above=0, high=limits.MAX_SECONDS),
    "price": lambda v, w: limits.check_number(v, w, low=0, high=limits.MAX_PRICE),
    "slo_ttft": lambda v, w: limits.check_seconds(v, w, positive=True),
    "slo_tpot": lambda v, w: limits.check_seconds(v, w, positive=True),
    **{k: (lambda v, w: limits.check_count(v, w, limits.MAX_DEVICES))
       for k in ("gpus", "tp", "ep", "pp", "dp", "attention_gpus", "ffn_gpus")},
    # The cost model's step settings and a deployment's: checked here too, so that a sweep
    # refuses `decode_threshold = 0` before it runs and the CLI names --decode-threshold.
    "deployment": _text, "runtime": _text, "overlap": _flag, "efficiency": _profile,
    "decode_threshold": limits.check_tokens,
    **{k: (lambda v, w: limits.check_int(v, w, low=0, high=limits.MAX_DEVICES))
       for k in ("redundant_experts", "prefill_units", "decode_units")},
}


def check_params(params: dict) -> None:
    """Every key known and every value of the right type and in range (None: not given)."""
    check_keys(params)
    for key, value in params.items():
        check = _CHECKS.get(key)
        if check is not None and value is not None:
            check(value, key)
    for key in params:
        if key.startswith("policy.") and not key[len("policy."):].strip():
            raise ConfigError(f"setting {key!r} names no policy parameter; write "
                              "policy.<parameter>")


PRESET_KEYS = ("model", "gpu", "deployment", "runtime", "efficiency")


def check_presets(params: dict) -> None:
    """Each cost-model preset name (or file) of `params` one that resolves: a typo such as
    gpu = "h10" is a mistake in a sweep file, not a point that fails."""
    from .. import costmodel
    for key, resolve in (("model", costmodel.resolve_model), ("gpu", costmodel.resolve_gpu),
                         ("deployment", costmodel.get_deployment),
                         ("runtime", costmodel.get_runtime),
                         ("efficiency", costmodel.resolve_efficiency)):
        if params.get(key) is not None:
            resolve(params[key])


def build_policy(params: dict):
    policy_params = {k.split(".", 1)[1]: v for k, v in params.items()
                     if k.startswith("policy.") and v is not None}
    return load_policy(_get(params, "policy"), **policy_params)


# What a trace gives itself: beside it these settings do not apply. A sweep point or a compare
# cell inherits settings from [base] or [run] that were meant for the other points, so here a
# trace (or a deployment, below) takes precedence over them; the commands refuse them where
# the user typed both (`conflicts`), since there they would be silently ignored.
TRACE_FIXES = ("arrival", "rate", "cv", "users", "think_time", "requests", "prompt", "output",
                "max_tokens")


def option(key: str) -> str:
    """The command-line option of a setting: 'think_time' -> '--think-time'."""
    return f"--{key.replace('_', '-')}"


# The settings of the arrival process: make_workload's errors about them start with the
# setting's name (a policy's or a model's errors name the policy or the model instead).
ARRIVAL_KEYS = ("arrival", "rate", "cv", "users", "think_time")


def as_option(message: str, keys=KEYS) -> str:
    """'gpus must be ...' -> '--gpus must be ...': an error about a setting (one of `keys`),
    worded with the option the user typed on a command line."""
    key, sep, rest = message.partition(" ")
    if sep and key in keys:
        return f"{option(key)} {rest}"
    return message


def conflicts(params: dict, by: str | None = None) -> list[str]:
    """Settings in `params` that its trace or deployment would override (the ones a command
    refuses when the user gave both); [] if none. by: "trace" or "deployment" to ask about
    that one alone (default: the trace if there is one, else the deployment)."""
    if by is None:
        by = "trace" if params.get("trace") else "deployment"
    if not params.get(by):
        return []
    fixes = TRACE_FIXES if by == "trace" else DEPLOYMENT_FIXES
    return [k for k in fixes if params.get(k) is not None]


def build_workload(params: dict):
    if params.get("trace"):
        if params.get("lengths"):
            raise ConfigError("trace replays a trace's arrivals and lengths; lengths takes only "
                              "its lengths, with synthetic arrivals; give one or the other")
        from ..workloads.traces import load_trace
        scale = params.get("time_scale")
        return load_trace(params["trace"], time_scale=1.0 if scale is None else scale,
                          limit=params.get("limit"), max_new_tokens=params.get("max_new_tokens"))
    if params.get("limit") is not None:
        raise ConfigError("limit applies to a trace only; use requests for sampled traffic")
    if params.get("time_scale") is not None:
        raise ConfigError("time_scale applies to a trace only; use rate for sampled traffic")
    lengths = None
    if params.get("lengths"):
        from ..workloads import TraceLengths
        if params.get("prompt") is not None or params.get("output") is not None:
            raise ConfigError("lengths (a trace's prompt, output pairs) replaces prompt and "
                              "output; give one or the other")
        lengths = TraceLengths.from_trace(params["lengths"], max_tokens=params.get("max_tokens"))
    elif params.get("max_tokens") is not None:
        raise ConfigError("max_tokens caps the pairs of lengths (a trace file); give lengths "
                          "too, or use max_new_tokens to cap outputs")
    arrival = _get(params, "arrival")
    rate = params.get("rate")
    # make_workload reads the name case-blind ("Poisson"): the default rate must too
    kind = arrival.strip().lower() if isinstance(arrival, str) else arrival
    if rate is None and kind in ("poisson", "gamma", "constant"):
        rate = _SAMPLED_RATE
    return make_workload(arrival, num_requests=_get(params, "requests"), rate=rate,
                         cv=params.get("cv"), users=params.get("users"),
                         think_time=params.get("think_time"),
                         prompt=None if lengths else _get(params, "prompt"),
                         output=None if lengths else _get(params, "output"), lengths=lengths,
                         max_new_tokens=params.get("max_new_tokens"))


DEPLOYMENT_FIXES = ("model", "gpu", "gpus", "tp", "ep", "pp", "dp", "price", "routing",
                     "attention_gpus", "ffn_gpus", "redundant_experts", "devices")
# make_devices settings beside the layout; the affine and the attention/FFN disaggregated
# devices model none of them
STEP_SETTINGS = ("runtime", "overlap", "redundant_experts", "decode_threshold")


def build_devices(params: dict):
    if params.get("deployment"):
        from .. import costmodel
        # It fixes its own model, GPUs, layout and price (see `conflicts`).
        kw = {k: params[k] for k in ("prefill_units", "decode_units", "decode_threshold")
              if params.get(k) is not None}
        return costmodel.make_deployment(params["deployment"], **kw,
                                         overlap=params.get("overlap"),
                                         runtime=params.get("runtime"),
                                         efficiency=params.get("efficiency"),
                                         seed=_get(params, "seed"))
    model, gpu = params.get("model"), params.get("gpu")
    if model or gpu:
        from .. import costmodel
        if not (model and gpu):
            raise ConfigError("the cost model needs both a model and a gpu preset (see "
                              "`batchlab presets`)")
        kw = {k: params[k] for k in ("tp", "ep", "efficiency") + STEP_SETTINGS
              if params.get(k) is not None}
        if params.get("routing"):
            kw["routing"] = params["routing"]
        pools = params.get("attention_gpus"), params.get("ffn_gpus")
        if any(p is not None for p in pools):
            if None in pools or any(params.get(k) is not None for k in ("gpus", "tp", "ep",
                                                                          "pp", "dp")):
                raise ConfigError("attention/FFN disaggregation takes attention_gpus and "
                                  "ffn_gpus (both), instead of gpus, tp, ep, pp and dp")
            unused = [k for k in STEP_SETTINGS if params.get(k) is not None]
            if unused:  # the disaggregated device has none of these: say so, not ignore
                raise ConfigError(f"attention/FFN disaggregation (attention_gpus, ffn_gpus) "
                                  f"does not model {', '.join(unused)}; drop "
                                  f"{'it' if len(unused) == 1 else 'them'}")
            return [costmodel.make_disaggregated_device(
                model, gpu, pools[0], pools[1], price_per_hour=params.get("price"),
                efficiency=params.get("efficiency"),
                seed=_get(params, "seed"), **({"routing": kw["routing"]} if "routing" in kw
                                               else {}))]
        return costmodel.make_devices(model, gpu, params.get("gpus") or 1,
                                      pp=params.get("pp") or 1, dp=params.get("dp") or 1,
                                      price_per_hour=params.get("price"),
                                      seed=_get(params, "seed"), **kw)
    for key in ("gpus", "tp", "ep", "pp", "dp", "routing", "attention_gpus", "ffn_gpus",
                "efficiency") + STEP_SETTINGS:
        if params.get(key) is not None:
            raise ConfigError(f"{key} needs a model and a gpu preset (the affine device has "
                              "no parallelism)")
    count = params.get("devices") or 1
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"devices must be a positive int, got {count!r}")
    return affine_devices(count, price_per_hour=params.get("price"))


AFFINE_KIND = ("affine teaching device (fixed + per-token step time, no GPU; --model and --gpu "
               "for the roofline cost model)")


def on_teaching_device(params: dict) -> bool:
    """Whether `params` run on the affine teaching device: no model, gpu or deployment."""
    return not any(params.get(k) for k in ("model", "gpu", "deployment"))


def without_gpus(summary: dict) -> dict:
    """A teaching-device run's summary: it says what the device is and counts no GPUs
    ("1 GPU" and tokens per GPU would mislead: the affine device stands for none)."""
    out = {k: v for k, v in summary.items()
           if k not in ("num_gpus", "output_tokens_per_s_per_gpu")}
    out["device_kind"] = AFFINE_KIND
    return out


def run(params: dict, *, progress=None):
    """Build and simulate the run `params` describes; returns the Result."""
    check_params(params)
    policy = build_policy(params)
    workload = build_workload(params)
    devices = build_devices(params)
    return simulate(policy, workload, devices, seed=_get(params, "seed"), progress=progress)


def summarize(params: dict, result) -> dict:
    """The run's settings followed by its summary: one row of a results table."""
    # Devices carry their own price (price is per GPU-hour, as the presets give it).
    summary = result.summary(slo_ttft=params.get("slo_ttft"), slo_tpot=params.get("slo_tpot"))
    # Overloaded: the queue grew during the run, so its latencies measure the run's length.
    summary["overloaded"] = is_overloaded(result.records)
    if on_teaching_device(params):
        summary = without_gpus(summary)
    return {**params, **{k: v for k, v in summary.items() if k not in params}}
