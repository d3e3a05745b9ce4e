"""Capacity under an SLO: the highest request rate a deployment serves while meeting it.

This is the number capacity is bought with (what Vidur-Search and NVIDIA's AIConfigurator
answer): for a model, a deployment and a policy, probe Poisson traffic at a rate, check the
SLO (batchlab.studies.slo) and that the run is not overloaded, and search the rate:

1. from `start`, double while the SLO holds (or halve while it fails) to bracket the edge;
2. bisect the bracket geometrically until its ends are within `rel_tol` of each other.

Every probe uses the same seed, so its arrivals are the same draws scaled to the rate
(common random numbers): neighbouring rates see the same prompts and outputs, and the edge
found is the edge of one predicate, not of sampling noise. The search assumes that a rate
below one that meets the SLO meets it too; `Capacity.probes` keeps every probe so that a
table can show the evidence, and tests check the result against a brute-force scan.

Goodput, as DistServe defines it (Zhong et al., OSDI 2024): the highest rate served within
the SLO, per GPU — here `capacity_rps / num_gpus`. The price at capacity is the steady-state
one: the deployment's $ per hour over the output tokens it produces per hour at that rate,
which leaves out the drain after the last arrival that a finite run's makespan includes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import attrs

from ..core import limits
from ..core.errors import BatchlabError, ConfigError
from . import scenario
from .slo import SLO

SEARCH_DEFAULTS = {"start": 4.0, "duration": 20.0, "min_requests": 100, "max_requests": 2000,
                   "rel_tol": 0.05, "min_rate": 0.05, "max_rate": 5000.0}


def _figure(row: dict, key: str) -> float:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) else math.nan


def check_search(search: dict, name=lambda key: key) -> dict:
    """SEARCH_DEFAULTS overridden by `search`, every value checked up front (a bad one would
    otherwise surface only after probes ran, or not at all: a duration of 0 clamps every probe
    to min_requests). A ConfigError calls a setting `name(key)`: the CLI's option, a config's
    table and key."""
    unknown = set(search) - set(SEARCH_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown setting {sorted(unknown)[0]!r} of the capacity search; "
                          f"known: {', '.join(SEARCH_DEFAULTS)}")
    opts = {**SEARCH_DEFAULTS, **search}
    for key in ("start", "min_rate", "max_rate"):
        limits.check_number(opts[key], name(key), low=limits.MIN_RATE)
    limits.check_seconds(opts["duration"], name("duration"), positive=True)
    rel_tol = limits.check_number(opts["rel_tol"], name("rel_tol"), above=0)
    if rel_tol >= 1:
        raise ConfigError(f"{name('rel_tol')} must be above 0 and below 1 (0.05: the final "
                          f"bracket's ends within 5% of each other), got {rel_tol:g}")
    for key in ("min_requests", "max_requests"):
        limits.check_count(opts[key], name(key))
    limits.check_order(opts["min_requests"], opts["max_requests"], name("min_requests"),
                       name("max_requests"))
    if not opts["min_rate"] <= opts["start"] <= opts["max_rate"]:
        raise ConfigError(f"{name('start')} {opts['start']:g} must lie from {name('min_rate')} "
                          f"{opts['min_rate']:g} to {name('max_rate')} {opts['max_rate']:g}")
    return opts


def steady_cost(row: dict, rate: float) -> float:
    """$ per million output tokens when the deployment serves `rate` req/s without end: its
    price per hour (recovered from the run's cost and token rate) over tokens per hour."""
    per_m, tok_s, rps = (_figure(row, k) for k in (
        "usd_per_million_output_tokens", "output_tokens_per_s", "throughput_rps"))
    if not all(math.isfinite(x) and x > 0 for x in (per_m, tok_s, rps)) or rate <= 0:
        return math.nan
    usd_per_s = per_m * tok_s / 1e6
    tokens_per_request = tok_s / rps
    return usd_per_s / (rate * tokens_per_request) * 1e6


def probe_params(params: dict, rate: float, search: dict) -> dict:
    """The run settings of one probe: `params` with Poisson traffic at `rate`."""
    n = int(min(max(rate * search["duration"], search["min_requests"]), search["max_requests"]))
    return {**params, "arrival": "poisson", "rate": float(rate), "requests": n}


def probe(params: dict, slo: SLO, cache_dir=None) -> dict:
    """Run one probe (or load it from `cache_dir`): its summary row with `overloaded`,
    `slo_met`, `slo_violations` and the steady-state cost at its rate."""
    from .sweep import _write_atomic, point_key

    key = point_key({**params, "label": "capacity-probe"})
    path = None if cache_dir is None else Path(cache_dir) / f"{key}.json"
    row = None
    if path is not None and path.exists():
        try:
            row = json.loads(path.read_text())
        except ValueError:
            row = None  # half-written or foreign: run it again
    if row is None:
        try:
            result = scenario.run(params)
        except BatchlabError as exc:
            return {**params, "error": str(exc), "overloaded": False, "slo_met": False,
                    "slo_violations": str(exc)}
        row = scenario.summarize(params, result)
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, json.dumps(row))
    missed = slo.violations(row)
    if row.get("overloaded"):
        missed.append("overloaded (the queue grew during the run)")
    row["slo_met"] = not missed
    row["slo_violations"] = "; ".join(missed)
    row["usd_per_million_output_tokens_at_rate"] = steady_cost(row, params["rate"])
    return row


@attrs.frozen
class Capacity:
    """The result of a search: the rate, the row measured there, and every probe."""

    params: dict
    slo: SLO
    capacity_rps: float            # 0.0: even min_rate misses the SLO
    row: dict | None               # the probe at capacity_rps
    probes: tuple                  # every probe row, in the order run
    is_capped: bool = False        # max_rate met the SLO: the true capacity is higher

    @property
    def num_gpus(self) -> int:
        return int(self.row.get("num_gpus", 0)) if self.row else 0

    @property
    def goodput_rps_per_gpu(self) -> float:
        return self.capacity_rps / self.num_gpus if self.num_gpus else math.nan

    @property
    def usd_per_million_output_tokens(self) -> float:
        return steady_cost(self.row, self.capacity_rps) if self.row else math.nan

    def as_row(self) -> dict:
        """A flat row for tables: capacity figures, then the probe's figures at capacity."""
        base = {k: v for k, v in (self.row or {}).items() if k not in ("rate", "requests")}
        if self.row is None and self.probes:
            lowest = min(self.probes, key=lambda p: p["rate"])
            base = {"num_gpus": lowest.get("num_gpus"),
                    "note": f"misses the SLO at every rate probed, down to {lowest['rate']:g} "
                            f"req/s ({lowest.get('slo_violations')})"}
        return {**base, "capacity_rps": self.capacity_rps,
                "goodput_rps_per_gpu": self.goodput_rps_per_gpu,
                "usd_per_million_output_tokens_at_capacity": self.usd_per_million_output_tokens,
                "capacity_capped": self.is_capped, "num_probes": len(self.probes),
                "slo": self.slo.describe(self.row or {}),
                "slo_notes": " ".join(self.slo.notes(self.row or {}))}


def check_slo_keys(slo: SLO, row: dict | None = None) -> None:
    """A limit on a key the summary lacks would miss at every rate and report "capacity:
    none"; the first probe's row shows which keys the summary has, so name the stray one.
    row None: the summary of a one-request run on the affine device (every run's summary
    has the same keys, NaN where a run has no value), to check before anything runs."""
    if row is None:
        from ..backends.affine import affine_devices
        from ..engines.simulator import simulate
        from ..workloads import make_workload
        one = make_workload("constant", rate=1.0, num_requests=1, prompt="1", output="1")
        row = simulate("continuous", one, affine_devices(1)).summary()
    for key, _ in slo.limits:
        if slo.key_used(key, row) not in row:
            known = sorted(k for k in row if k.endswith(("_s", "_fraction"))
                           and not k.endswith("_per_s")
                           and isinstance(row[k], (int, float)) and not isinstance(row[k], bool))
            raise ConfigError(f"SLO key {key!r} is not in the run summary; limit one of "
                              f"{', '.join(known)}")


def _round(rate: float) -> float:
    # Three significant digits: probe settings (and their cache keys) stay readable.
    return float(f"{rate:.3g}")


def find_capacity(params: dict, slo: SLO | None = None, *, cache_dir=None,
                  **search) -> Capacity:
    """The highest Poisson rate at which `params` (a run without traffic settings) meets
    `slo` and is not overloaded. `search` overrides SEARCH_DEFAULTS."""
    slo = slo or SLO.from_config(None)
    opts = check_search(search, lambda key: f"capacity search: {key}")
    for key in ("arrival", "rate", "requests", "trace"):
        if params.get(key) is not None:
            raise ConfigError(f"capacity search sets the traffic itself: drop {key!r} from "
                              "the run settings")
    probes: list[dict] = []
    seen: dict[float, dict] = {}

    def meets(rate: float) -> bool:
        if rate not in seen:
            seen[rate] = probe(probe_params(params, rate, opts), slo, cache_dir)
            probes.append(seen[rate])
        if seen[rate].get("error"):
            raise ConfigError(f"capacity search: {seen[rate]['error']}")
        if len(seen) == 1:
            check_slo_keys(slo, seen[rate])
        return seen[rate]["slo_met"]

    rate = _round(opts["start"])
    lo = hi = None
    if meets(rate):
        lo = rate
        while hi is None:
            nxt = _round(min(lo * 2, opts["max_rate"]))
            if nxt <= lo:
                return Capacity(params, slo, lo, seen[lo], tuple(probes), is_capped=True)
            if meets(nxt):
                lo = nxt
            else:
                hi = nxt
    else:
        hi = rate
        while lo is None:
            nxt = _round(hi / 2)
            if nxt < opts["min_rate"]:
                return Capacity(params, slo, 0.0, None, tuple(probes))
            if meets(nxt):
                lo = nxt
            else:
                hi = nxt
    while hi / lo > 1 + opts["rel_tol"]:
        mid = _round(math.sqrt(lo * hi))
        if mid in (lo, hi):
            break
        if meets(mid):
            lo = mid
        else:
            hi = mid
    return Capacity(params, slo, lo, seen[lo], tuple(probes))


def format_capacity(cap: Capacity, *, as_json: bool = False) -> str:
    """What `batchlab capacity` prints: every probe and its verdict, then the capacity, its
    goodput and its cost (or, as_json, the same as one JSON object)."""
    row = cap.as_row()
    if as_json:
        from ..engines.result import _jsonable
        probes = [{k: p.get(k) for k in ("rate", "slo_met", "slo_violations", "ttft_p99_s",
                                         "tpot_p99_s", "itl_p99_s") if k in p}
                  for p in cap.probes]
        return json.dumps(_jsonable({**{k: row.get(k) for k in (
            "capacity_rps", "goodput_rps_per_gpu", "usd_per_million_output_tokens_at_capacity",
            "num_gpus", "capacity_capped", "slo", "slo_notes")}, "probes": probes}), indent=1)
    lines = [f"  {p['rate']:>8.4g} req/s  "
             + ("meets the SLO" if p["slo_met"] else "misses: " + p["slo_violations"])
             for p in cap.probes]
    if cap.capacity_rps == 0:
        lines.append(f"capacity: none; even {cap.probes[-1]['rate']:g} req/s misses {row['slo']}")
        return "\n".join(lines)
    capped = " (the search's max_rate: the real capacity is higher)" if cap.is_capped else ""
    # The affine teaching device has no GPU and, unless given --price, no price: say so rather
    # than print "1 GPU(s)" and "$nan".
    if scenario.on_teaching_device(cap.params):
        n = int(row.get("num_devices") or 1)
        where = (f"{n} affine teaching device(s) (no GPU): goodput "
                 f"{cap.capacity_rps / n:.3g} req/s per device")
    else:
        where = f"{cap.num_gpus} GPU(s): goodput {cap.goodput_rps_per_gpu:.3g} req/s per GPU"
    usd = cap.usd_per_million_output_tokens
    cost = (f"${usd:.3g} per million output tokens" if math.isfinite(usd) else
            "no $ per million output tokens (the devices have no price; give --price)")
    lines.append(f"capacity: {cap.capacity_rps:g} req/s{capped} within {row['slo']} on "
                 f"{where}, {cost}")
    if row["slo_notes"]:
        lines.append("note: " + row["slo_notes"])
    return "\n".join(lines)
