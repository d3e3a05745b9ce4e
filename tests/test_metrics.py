"""Result and summary: hand-computed cases, export, and rules for missing data."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from batchlab.core.table import FINISHED, RECORD_DTYPE, REJECTED
from batchlab.engines.result import DEVICE_DTYPE, Result


def make_result(price=10.0):
    rec = np.zeros(3, dtype=RECORD_DTYPE)
    # id, arrival, first_scheduled, first_token, finish, prompt, output, preemptions, max_tbt,
    # status
    rec[0] = (0, 0.0, 0.5, 1.0, 3.0, 100, 5, 0, 0.9, FINISHED)  # ttft 1, tpot .5, e2e 3, q .5
    rec[1] = (1, 1.0, 1.0, 1.5, 1.5, 50, 1, 1, math.nan, FINISHED)  # ttft .5, e2e .5, q 0
    rec[2] = (2, 2.0, math.nan, math.nan, math.nan, 10_000, 0, 0, math.nan, REJECTED)
    dev = np.zeros(2, dtype=DEVICE_DTYPE)
    dev["name"] = ["a", "b"]
    dev["busy_time"] = [1.5, 3.0]
    dev["num_gpus"] = [1, 1]
    dev["price_per_hour"] = price
    dev["peak_flops"] = [100.0, 100.0]
    dev["flops"] = [30.0, 30.0]
    dev["peak_bandwidth"] = math.nan
    return Result(rec, dev, policy="p", workload="w")


def test_hand_computed_summary():
    s = make_result().summary()
    assert s["num_finished"] == 2 and s["num_rejected"] == 1
    assert s["makespan_s"] == 3.0                      # first arrival 0, last finish 3
    assert s["ttft_mean_s"] == pytest.approx(0.75)
    assert s["ttft_p50_s"] == pytest.approx(0.75)      # linear interpolation of (0.5, 1.0)
    assert s["tpot_mean_s"] == pytest.approx(0.5)      # only request 0 has a TPOT
    assert s["e2e_p99_s"] == pytest.approx(0.5 + 0.99 * 2.5)
    assert s["queue_mean_s"] == pytest.approx(0.25)
    assert s["stall_p99_s"] == pytest.approx(0.9)       # request 1 has no gap between tokens
    assert s["throughput_rps"] == pytest.approx(2 / 3)
    assert s["output_tokens_per_s"] == pytest.approx(6 / 3)
    assert s["total_tokens_per_s"] == pytest.approx(156 / 3)
    assert s["output_tokens_per_s_per_device"] == pytest.approx(1.0)
    assert s["busy_fraction"] == pytest.approx(0.75)   # mean(1.5, 3) / 3
    assert s["preemptions"] == 1
    assert s["mfu"] == pytest.approx(60 / (3 * 200))
    assert math.isnan(s["bandwidth_utilisation"])      # no peak bandwidth known
    # Two devices at $10/h for 3 s produce 6 output tokens.
    assert s["usd_per_million_output_tokens"] == pytest.approx(20 * 3 / 3600 / 6 * 1e6)


def test_slo_goodput_counts_rejected_as_misses():
    s = make_result().summary(slo_ttft=0.8, slo_tpot=1.0)
    assert s["goodput_rps"] == pytest.approx(1 / 3)    # only request 1 has TTFT <= 0.8
    assert s["slo_attainment"] == pytest.approx(1 / 3)
    s = make_result().summary(slo_tpot=0.4)            # request 1 has no TPOT: cannot miss
    assert s["slo_attainment"] == pytest.approx(1 / 3)


def test_price_override_and_unknown_price():
    assert math.isnan(make_result(price=math.nan).summary()["usd_per_million_output_tokens"])
    s = make_result(price=math.nan).summary(price_per_device_hour=1.0)
    assert s["usd_per_million_output_tokens"] == pytest.approx(2 * 3 / 3600 / 6 * 1e6)


def test_no_finished_requests_gives_nan_not_an_error():
    r = make_result()
    rec = r.records.copy()
    rec["status"] = REJECTED
    s = Result(rec, r.devices).summary()
    assert s["num_finished"] == 0 and math.isnan(s["ttft_p50_s"])


def test_csv_and_json_export(tmp_path):
    r = make_result()
    path = r.to_csv(tmp_path / "r.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 3 and rows[0]["finish"] == "3.0" and rows[2]["finish"] == "nan"
    doc = json.loads(r.to_json(tmp_path / "r.json"))
    assert doc["summary"]["ttft_mean_s"] == pytest.approx(0.75)
    assert doc["records"][2]["finish"] is None         # NaN is written as null
    assert [d["name"] for d in doc["devices"]] == ["a", "b"]
    assert json.loads((tmp_path / "r.json").read_text()) == doc
