"""Capacity under an SLO: the search agrees with a brute-force scan of rates, the SLO falls
back from ITL to TPOT where the summary has no ITL, and bad settings are one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchlab.cli import main
from batchlab.core.errors import ConfigError
from batchlab.studies.capacity import find_capacity, probe, probe_params, steady_cost
from batchlab.studies.slo import SLO, is_overloaded

FAST = {"duration": 10.0, "min_requests": 60, "max_requests": 400}
SMALL = {"devices": 1, "prompt": "lognormal:256:1.0", "output": "lognormal:64:1.0"}


def test_search_agrees_with_a_brute_force_scan_of_rates(tmp_path):
    slo = SLO.from_config(None)
    cap = find_capacity(SMALL, slo, rel_tol=0.04, cache_dir=tmp_path, **FAST)
    assert 0 < cap.capacity_rps < 1000 and not cap.is_capped
    opts = {**FAST, "duration": 10.0}
    scan = np.round(np.arange(1.0, 2.5 * cap.capacity_rps, cap.capacity_rps / 20), 3)
    met = {float(r): probe(probe_params(SMALL, float(r), opts), slo)["slo_met"] for r in scan}
    passing = [r for r, ok in met.items() if ok]
    failing = [r for r, ok in met.items() if not ok]
    assert passing and failing
    # The scan's edge lies within the search's final bracket [capacity, capacity x (1+tol)],
    # give or take one scan step (the two grids differ).
    step = cap.capacity_rps / 20
    assert max(passing) <= cap.capacity_rps * 1.04 + step
    assert min(failing) >= cap.capacity_rps - step
    assert cap.row["slo_met"] and cap.row["rate"] == cap.capacity_rps


def test_a_stricter_slo_never_raises_capacity(tmp_path):
    loose = find_capacity(SMALL, SLO({"ttft_p99_s": 4.0, "itl_p99_s": 0.2}),
                          cache_dir=tmp_path, **FAST)
    strict = find_capacity(SMALL, SLO({"ttft_p99_s": 0.5, "itl_p99_s": 0.05}),
                           cache_dir=tmp_path, **FAST)
    assert strict.capacity_rps < loose.capacity_rps


def test_itl_limit_falls_back_to_tpot_and_says_so():
    slo = SLO({"ttft_p99_s": 2.0, "itl_p99_s": 0.1})
    without = {"ttft_p99_s": 1.0, "tpot_p99_s": 0.2}
    assert slo.violations(without) == ["tpot_p99_s 0.2 s > 0.1 s"]
    assert "checked on tpot_p99_s" in slo.notes(without)[0]
    with_itl = {"ttft_p99_s": 1.0, "tpot_p99_s": 0.2, "itl_p99_s": 0.05}
    assert slo.is_met(with_itl) and slo.notes(with_itl) == []
    assert not slo.is_met({"ttft_p99_s": math.nan, "itl_p99_s": 0.01})


def test_steady_cost_is_price_over_tokens_at_the_rate():
    # 2 $/h over 4000 tok/s at 8 req/s in the run; at 16 req/s: 1 $/h of 8000 tok/s...
    row = {"usd_per_million_output_tokens": 2 / 3600 / 4000 * 1e6,
           "output_tokens_per_s": 4000.0, "throughput_rps": 8.0}
    assert steady_cost(row, 16.0) == pytest.approx(2 / 3600 / 8000 * 1e6)


def test_overload_is_growth_of_the_wait_not_a_long_wait():
    rec = np.zeros(8, dtype=[("arrival", float), ("first_token", float), ("status", np.int8)])
    rec["status"] = 2
    rec["arrival"] = np.arange(8.0)
    rec["first_token"] = rec["arrival"] + 3.0  # long but steady
    assert not is_overloaded(rec)
    rec["first_token"] = rec["arrival"] + np.linspace(0.1, 6.0, 8)  # growing
    assert is_overloaded(rec)


def test_bad_settings_are_one_line_errors(capsys):
    with pytest.raises(ConfigError, match="sets the traffic itself"):
        find_capacity({**SMALL, "rate": 3.0})
    with pytest.raises(ConfigError, match="unknown setting 'speed'"):
        find_capacity(SMALL, speed=2)
    with pytest.raises(ConfigError, match="must be a number > 0"):
        SLO.from_config({"ttft_p99_s": -1})
    assert main(["capacity", "--devices", "1", "--slo", "ttft_p99_s"]) == 2
    assert "write KEY=SECONDS" in capsys.readouterr().err


def test_cli_prints_the_capacity_and_every_probe(capsys):
    assert main(["capacity", "--model", "llama-3-8b", "--gpu", "h100", "--tol", "0.1",
                 "--duration", "8", "--start", "8"]) == 0
    out = capsys.readouterr().out
    assert "capacity:" in out and "per million output tokens" in out
    assert "meets the SLO" in out and "misses:" in out
