"""`Result`: what a run produced — per-request records, per-device totals — and its summary.

Every engine returns a Result, so the same metrics, tables and plots serve the simulator and a
real backend. Definitions (all times in seconds):
- TTFT = first token - arrival; TPOT = (finish - first token) / (output tokens - 1), for
  requests with more than one output token; end-to-end = finish - arrival; queueing delay =
  first scheduled - arrival; worst stall = a request's longest time between two consecutive
  output tokens (max TBT). Statistics are over finished requests.
- ITL (inter-token latency) = for every output token after a request's first, the time since
  that request's previous token (vLLM's benchmark_serving computes it over every token gap;
  TPOT is one average per request, ITL weighs every gap). Over every gap of the run, finished
  or not, from a log-spaced histogram: percentiles within 0.5% of the exact nearest-rank
  value, the mean exact (see `batchlab.core.gaps`). NaN when the engine kept none.
- makespan = last finish - first arrival; throughputs divide by it.
- busy fraction = a device's busy time / makespan, averaged over devices.
- goodput = finished requests meeting every given SLO, per second; SLO attainment = their
  share of all requests (rejected and unfinished ones count as misses).
- cost per million output tokens = sum of device prices x makespan / output tokens x 1e6.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import attrs
import numpy as np

from ..core import limits
from ..core.gaps import GapHistogram
from ..core.table import FINISHED, RECORD_DTYPE, REJECTED, ABORTED
from . import export

DEVICE_DTYPE = np.dtype([
    ("name", "U64"),
    ("steps", np.int64),
    ("busy_time", np.float64),
    ("new_tokens", np.int64),        # tokens fed through the model (no padding)
    ("context_tokens", np.int64),    # cached + new tokens attended over, summed over steps
    ("output_tokens", np.int64),     # tokens emitted
    ("flops", np.float64),
    ("bytes", np.float64),
    ("compute_time", np.float64),
    ("memory_time", np.float64),
    ("communication_time", np.float64),
    ("overhead_time", np.float64),
    ("experts_touched", np.float64),  # summed over steps
    ("routed_tokens", np.float64),    # tokens_per_expert x experts_touched, summed
    ("bubble_time", np.float64),      # bubble_fraction x duration, summed
    ("padded_tokens", np.int64),
    ("failures", np.int64),
    ("recomputed_tokens", np.int64),  # KV-cached tokens failures destroyed (fed again later)
    ("kv_transfers", np.int64),       # KV caches received from other devices
    ("kv_transfer_time", np.float64), # seconds those transfers took, summed
    ("num_gpus", np.int64),
    ("price_per_hour", np.float64),   # NaN: unknown
    ("peak_flops", np.float64),       # NaN: unknown
    ("peak_bandwidth", np.float64),   # NaN: unknown
    ("num_experts", np.int64),        # 0: dense or unknown
])

def device_table(devices) -> np.ndarray:
    """Per-device totals, zeroed, with each device's name and the optional attributes reports
    use (GPUs, price, peaks, experts) filled in; every engine starts from this."""
    stats = np.zeros(len(devices), dtype=DEVICE_DTYPE)
    for i, d in enumerate(devices):
        stats[i]["name"] = d.name
        stats[i]["num_gpus"] = getattr(d, "num_gpus", 1)
        for field in ("price_per_hour", "peak_flops", "peak_bandwidth"):
            value = getattr(d, field, None)
            stats[i][field] = math.nan if value is None else value
        stats[i]["num_experts"] = getattr(d, "num_experts", 0) or 0
    return stats


_STATS = (("mean", None), ("p50", 50), ("p90", 90), ("p99", 99))


def _stats(values: np.ndarray, prefix: str, out: dict) -> None:
    values = values[np.isfinite(values)]
    for label, q in _STATS:
        if values.size == 0:
            out[f"{prefix}_{label}_s"] = math.nan
        elif q is None:
            out[f"{prefix}_{label}_s"] = float(values.mean())
        else:
            out[f"{prefix}_{label}_s"] = float(np.percentile(values, q))


def _ratio(num: float, den: float) -> float:
    """num / den, or nan where it means nothing: no span, or one so short (a denormal time
    span, as hypothesis finds) that the ratio overflows."""
    if not (den > 0 and math.isfinite(den)):
        return math.nan
    value = float(num) / float(den)  # Python floats: an overflow is inf, not a warning
    return value if math.isfinite(value) else math.nan


@attrs.frozen(eq=False)
class Result:
    """A finished run. `records` has RECORD_DTYPE, `devices` has DEVICE_DTYPE."""

    records: np.ndarray
    devices: np.ndarray
    policy: str = "policy"
    workload: str = "workload"
    seed: int = 0
    wall_time: float = 0.0
    num_events: int = 0
    itl: GapHistogram | None = None  # every inter-token gap of the run (engines fill it)

    @property
    def finished(self) -> np.ndarray:
        return self.records[self.records["status"] == FINISHED]

    @property
    def makespan(self) -> float:
        fin = self.finished
        if fin.size == 0:
            return 0.0
        return float(fin["finish"].max() - np.nanmin(self.records["arrival"]))

    def latencies(self) -> dict[str, np.ndarray]:
        """Per finished request: ttft, tpot, e2e, queue, stall (max time between tokens);
        tpot and stall are NaN for one-token outputs."""
        r = self.finished
        out = r["output_tokens"]
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(out > 1, (r["finish"] - r["first_token"]) / (out - 1), np.nan)
        return {
            "ttft": r["first_token"] - r["arrival"],
            "tpot": tpot,
            "e2e": r["finish"] - r["arrival"],
            "queue": r["first_scheduled"] - r["arrival"],
            "stall": r["max_tbt"],
        }

    def summary(self, *, slo_ttft: float | None = None, slo_tpot: float | None = None,
                price_per_device_hour: float | None = None) -> dict:
        """The headline figures as a flat dict (units in the key names).

        slo_ttft, slo_tpot: targets in seconds (> 0) for goodput and SLO attainment.
        price_per_device_hour: USD, replacing the devices' own prices."""
        # Checked up front: a string met numpy's UFuncTypeError, and -1 or nan gave a
        # goodput of 0 that looked like a result.
        for key, value in (("slo_ttft", slo_ttft), ("slo_tpot", slo_tpot)):
            if value is not None:
                limits.check_seconds(value, f"summary(): {key} (seconds)", positive=True)
        if price_per_device_hour is not None:
            limits.check_number(price_per_device_hour, "summary(): price_per_device_hour",
                                low=0)
        rec, dev = self.records, self.devices
        fin = self.finished
        span = self.makespan
        out: dict = {
            "policy": self.policy,
            "workload": self.workload,
            "seed": self.seed,
            "num_requests": int(rec.size),
            "num_finished": int(fin.size),
            "num_rejected": int((rec["status"] == REJECTED).sum()),
            "num_aborted": int((rec["status"] == ABORTED).sum()),
            "num_devices": int(dev.size),
            "num_gpus": int(dev["num_gpus"].sum()),
            "makespan_s": span,
        }
        lat = self.latencies()
        for key in ("ttft", "tpot", "e2e", "queue", "stall"):
            _stats(lat[key], key, out)
        itl = self.itl
        out["itl_mean_s"] = itl.mean if itl is not None else math.nan
        for q in (50, 90, 99):
            out[f"itl_p{q}_s"] = itl.percentile(q) if itl is not None else math.nan
        out_tokens = float(fin["output_tokens"].sum())
        all_tokens = out_tokens + float(fin["prompt_tokens"].sum())
        out["throughput_rps"] = _ratio(fin.size, span)
        out["output_tokens_per_s"] = _ratio(out_tokens, span)
        out["total_tokens_per_s"] = _ratio(all_tokens, span)
        out["output_tokens_per_s_per_device"] = _ratio(out_tokens, span * max(dev.size, 1))
        out["output_tokens_per_s_per_gpu"] = _ratio(out_tokens, span * dev["num_gpus"].sum())
        out["busy_fraction"] = _ratio(dev["busy_time"].mean(), span) if dev.size else math.nan
        out["preemptions"] = int(rec["preemptions"].sum())
        out["failures"] = int(dev["failures"].sum())
        out["recomputed_tokens"] = int(dev["recomputed_tokens"].sum())
        out["kv_transfers"] = int(dev["kv_transfers"].sum())
        busy = dev["busy_time"].sum()
        out["bubble_fraction"] = _ratio(dev["bubble_time"].sum(), busy)
        padded = dev["padded_tokens"].sum()
        out["padding_fraction"] = _ratio(padded, padded + dev["context_tokens"].sum())
        out["mfu"] = _ratio(dev["flops"].sum(), span * dev["peak_flops"].sum())
        out["bandwidth_utilisation"] = _ratio(dev["bytes"].sum(), span * dev["peak_bandwidth"].sum())
        steps = dev["steps"].sum()
        touched = dev["experts_touched"].sum()
        out["tokens_per_touched_expert"] = _ratio(dev["routed_tokens"].sum(), touched)
        experts = dev["num_experts"] * dev["steps"]
        out["expert_utilisation"] = _ratio(touched, experts.sum()) if steps else math.nan

        if slo_ttft is not None or slo_tpot is not None:
            ok = np.ones(fin.size, dtype=bool)
            if slo_ttft is not None:
                ok &= lat["ttft"] <= slo_ttft
            if slo_tpot is not None:
                # A one-token output has no TPOT and so cannot miss a TPOT target.
                ok &= ~(lat["tpot"] > slo_tpot)
            out["goodput_rps"] = _ratio(ok.sum(), span)
            out["slo_attainment"] = _ratio(ok.sum(), rec.size)
        price = dev["price_per_hour"].astype(float)
        if price_per_device_hour is not None:
            price = np.full(dev.size, float(price_per_device_hour))
        dollars = price.sum() * span / 3600.0
        out["usd_per_million_output_tokens"] = _ratio(dollars * 1e6, out_tokens)
        return out

    # -- export ---------------------------------------------------------------------------
    def to_csv(self, path) -> Path:
        """Write the per-request records as CSV (one row per request; status as a word)."""
        path = Path(path)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(RECORD_DTYPE.names)
            writer.writerows(export.record_rows(self.records))
        return path

    def to_pandas(self):
        """The per-request records as a pandas DataFrame (needs pandas: an optional extra)."""
        return export.to_pandas(self.records)

    def to_parquet(self, path) -> Path:
        """Write the per-request records as Parquet (needs pandas and pyarrow)."""
        return export.to_parquet(self.records, path)

    def to_json(self, path=None, **summary_kw) -> str:
        """Summary, per-device totals and records as JSON; written to `path` if given."""
        doc = {
            "summary": _jsonable(self.summary(**summary_kw)),
            "devices": [_jsonable(dict(zip(DEVICE_DTYPE.names, row)))
                        for row in self.devices.tolist()],
            "records": [_jsonable(dict(zip(RECORD_DTYPE.names, row)))
                        for row in export.record_rows(self.records)],
        }
        text = json.dumps(doc, indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text


def _jsonable(d: dict) -> dict:
    """NaN is not JSON: write null instead."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in d.items()}
