"""`batchlab compare`: the plan, the written folder, the direction of the seed's effects at
the SLO, rows that differ or are absent, and a report whose conclusion follows its numbers."""

from __future__ import annotations

import csv
import textwrap

import pytest

from batchlab.cli import main
from batchlab.studies import compare
from batchlab.studies.compare_output import build_view
from batchlab.studies.compare_report import write_report
from batchlab.studies.compare_scale import conclusion, crossover, cheapest_curve, demand_grid
from batchlab.studies.tables import drop_duplicates

SMALL = textwrap.dedent("""
    [run]
    prompt = "lognormal:256:1.0"
    output = "lognormal:64:1.0"

    [capacity]
    start = 8.0
    duration = 8.0
    rel_tol = 0.2
    min_requests = 60
    max_requests = 400

    [traffic]
    local_requests = 4
    rates = [4, 64]
    duration = 8
    max_requests = 300

    [[models]]
    key = "moe"
    kind = "moe"
    label = "DeepSeek-V3 on 8 x H200"
    model = "deepseek-v3"
    gpu = "h200"
    gpus = 8

    [[models]]
    key = "dense"
    kind = "dense"
    label = "Llama-3-70B on 2 x H200"
    model = "llama-3-70b"
    gpu = "h200"
    gpus = 2

    [[policies]]
    label = "continuous"
    policy = "continuous"

    [[policies]]
    label = "continuous, admission delay 50 ms"
    policy = "continuous"
    set = { admission_delay = 0.05 }

    [[policies]]
    label = "pd-disaggregated"
    policy = "pd-disaggregated"
    deploy.moe = { gpus = 16, dp = 2 }

    [[policies]]
    label = "disaggregated"
    policy = "disaggregated"
    deploy.moe = { attention_gpus = 8, ffn_gpus = 8 }
    skip.dense = "no experts to split off"

    [[scale]]
    model = "moe"
    label = "MoE 8 GPUs"
    deploy = { gpus = 8 }

    [[scale]]
    model = "moe"
    label = "MoE production"
    preset = "deepseek-v3-production"
    capacity = { start = 1024.0, max_requests = 4000, rel_tol = 0.5 }

    [[scale]]
    model = "dense"
    label = "dense TP2"
    deploy = { gpus = 2 }

    [[scale]]
    model = "dense"
    label = "dense TP8"
    deploy = { gpus = 8 }

    [studies.window]
    title = "window"
    model = "moe"
    policy = "continuous"
    knob = "window"
    values = [0.005, 0.2]
    rate = 8
    requests = 120
""")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    config = root / "small.toml"
    config.write_text(SMALL)
    out = root / "out"
    paths = compare.run(config, out, processes=1)
    rows = list(csv.DictReader((out / "results.csv").open()))
    return out, paths, rows


def _table(out, name):
    return list(csv.reader((out / "tables" / f"{name}.csv").open()))


def test_default_config_plans_each_policy_where_it_acts():
    config = compare.load_config()
    points, left_out = compare.plan_tables(config, {"buckets": 4})
    labels = {(p["meta"]["model_key"], p["meta"]["policy_label"]) for p in points}
    assert ("moe", "disaggregated: 8-GPU attention pool + 8-GPU expert pool") in labels
    assert ("dense", "disaggregated: 8-GPU attention pool + 8-GPU expert pool") not in labels
    assert any("no experts to split off" in e["why"] or "no experts" in e["why"]
               for e in left_out if e["model_key"] == "dense")
    pd = [p for p in points if p["params"]["policy"] == "pd-disaggregated"]
    assert pd and all(p["params"].get("dp") == 2 for p in pd)  # its own prefill/decode pools
    caps = {p["params"].get("policy.max_batch") for p in points
            if p["params"]["policy"] == "fixed-window"}
    assert min(caps) >= 256  # sized to the device, not 8
    traffic = {p["meta"]["traffic"] for p in points}
    assert "1 user" in traffic and "64 req/s" in traffic
    studies = {p["meta"]["study"] for p in compare.plan_studies(config)}
    assert {"window", "admission_delay", "micro_batches", "buckets"} <= studies


def test_writes_tables_plots_and_a_report_with_its_numbers(small_run):
    out, paths, rows = small_run
    for name in ("results", "moe", "dense", "moe-capacity", "scale", "crossover",
                 "speed_vs_gpus", "capacity", "frontier", "cost_vs_traffic", "window",
                 "report"):
        assert paths[name].exists() and paths[name].stat().st_size > 0, name
    assert paths["crossover"].read_bytes()[:4] == b"\x89PNG"
    report = paths["report"].read_text()
    assert report.startswith("# batchlab compare\n\n![")  # the picture first
    scale = {r["meta.label"]: r for r in rows if r.get("meta.section") == "scale"}
    # The headline quotes the MoE model's cheapest deployment at capacity, from this run.
    cost = min(float(scale[k]["usd_per_million_output_tokens_at_capacity"])
               for k in ("MoE 8 GPUs", "MoE production"))
    assert f"${cost:,.2f}" in report
    # DeepSeek's production layout runs: 240 H800s serving far more than one node, and it is
    # in the report with its own figure.
    production = scale["MoE production"]
    assert float(production["capacity_rps"]) > 10 * float(scale["MoE 8 GPUs"]["capacity_rps"])
    assert "MoE production" in report


def test_one_user_pays_far_more_per_token_than_at_capacity(small_run):
    _, _, rows = small_run
    for r in rows:
        if r.get("meta.section") == "scale":
            at_capacity = float(r["usd_per_million_output_tokens_at_capacity"])
            assert float(r["one_user_usd_per_million"]) > 5 * at_capacity, r["meta.label"]


def test_more_gpus_buy_speed_at_one_user_and_cost_more_per_token(small_run):
    _, _, rows = small_run
    scale = {r["meta.label"]: r for r in rows if r.get("meta.section") == "scale"}
    tp2, tp8 = scale["dense TP2"], scale["dense TP8"]
    assert float(tp8["one_user_tpot_p50_s"]) < 0.7 * float(tp2["one_user_tpot_p50_s"])
    assert float(tp8["one_user_usd_per_million"]) > float(tp2["one_user_usd_per_million"])


def test_a_longer_step_window_feeds_experts_more_and_delays_tokens(small_run):
    _, _, rows = small_run
    study = {float(r["meta.value"]): r for r in rows if r.get("meta.study") == "window"}
    short, long = study[0.005], study[0.2]
    assert float(long["tokens_per_touched_expert"]) > 1.5 * float(
        short["tokens_per_touched_expert"])
    assert float(long["ttft_p50_s"]) > 2 * float(short["ttft_p50_s"])
    assert float(long["tpot_p50_s"]) > 2 * float(short["tpot_p50_s"])


def test_every_row_differs_or_is_absent_and_overload_is_marked(small_run):
    out, _, _ = small_run
    for name in ("moe", "dense", "moe-capacity", "dense-capacity"):
        table = _table(out, name)
        numbers = [tuple(line[2:]) for line in table[1:]]
        keyed = [(line[1] if "capacity" not in name else "", tuple(line[2:]))
                 for line in table[1:]]
        assert len(set(keyed)) == len(keyed), name
        assert numbers
    report = (out / "report.md").read_text()
    # The admission delay has no prompt to delay for one user: that row is left out, said.
    assert "continuous, admission delay 50 ms: left out where it repeats continuous" in report
    assert "disaggregated: left out — no experts to split off." in report
    dense = _table(out, "dense")
    status = {line[1]: line[-2] for line in dense[1:] if line[0] == "continuous"}
    # (4 req/s meets a TPOT-checked SLO; with ITL in the summary it may miss, never overload)
    assert status["64 req/s"] == "overloaded" and status["4 req/s"] != "overloaded"


def test_rerun_reuses_finished_runs_and_probes(small_run, monkeypatch):
    out, _, _ = small_run
    from batchlab.studies import scenario

    def boom(*a, **k):
        raise AssertionError("a cached point was recomputed")

    monkeypatch.setattr(scenario, "run", boom)
    compare.run(out.parent / "small.toml", out, processes=1, plots=False)


def _economics(label, capacity, usd_per_m):
    # A scale row as the capacity search writes it: tokens/s and req/s give the price.
    return {"capacity_rps": capacity, "usd_per_million_output_tokens": usd_per_m,
            "output_tokens_per_s": 100.0 * capacity, "throughput_rps": capacity,
            "num_gpus": 8, "goodput_rps_per_gpu": capacity / 8,
            "usd_per_million_output_tokens_at_capacity": usd_per_m}


def _view(moe_cost, dense_cost):
    config = {"_name": "test", "_slo": compare.load_config()["_slo"], "traffic": {},
              "models": [{"key": "moe", "kind": "moe", "label": "MoE-X"},
                         {"key": "dense", "kind": "dense", "label": "Dense-Y"}]}
    scale = [{"meta": {"section": "scale", "model_key": k, "label": k}, "params": {},
              "result": _economics(k, 50.0, c)}
             for k, c in (("moe", moe_cost), ("dense", dense_cost))]
    capacity = {"capacity": [], "scale": scale, "one_user": [], "left_out": []}
    return build_view(config, [], capacity, [], {})


def test_the_conclusion_follows_the_numbers(tmp_path):
    cheap_moe = write_report(_view(1.0, 2.0), tmp_path, {}).read_text()
    assert "MoE-X is cheaper per output token than Dense-Y at every demand" in cheap_moe
    flipped = write_report(_view(2.0, 1.0), tmp_path, {}).read_text()
    assert "MoE-X never becomes cheaper per output token than Dense-Y" in flipped
    assert "cheaper per output token than Dense-Y at every demand" not in flipped


def test_crossover_is_found_where_the_curves_cross():
    # MoE: a big replica (cheap at scale); dense: a small one (cheap for few users).
    moe = [{"label": "big", "capacity_rps": 100.0, "price_per_hour": 100.0,
            "tokens_per_request": 100.0}]
    dense = [{"label": "small", "capacity_rps": 5.0, "price_per_hour": 10.0,
              "tokens_per_request": 100.0}]
    grid = demand_grid(moe + dense)
    cross = crossover(cheapest_curve(moe, grid), cheapest_curve(dense, grid))
    assert cross["at"] is not None and 5.0 < cross["at"] < 100.0
    assert "becomes cheaper" in conclusion(cross, "M", "D") or "trade places" in conclusion(
        cross, "M", "D")


def test_duplicates_are_dropped_with_a_note():
    a = {"meta": {"model_key": "m", "traffic": "4", "policy_label": "a"},
         "result": {"ttft_p50_s": 1.0, "tpot_p50_s": 0.1}}
    b = {"meta": {"model_key": "m", "traffic": "4", "policy_label": "b"},
         "result": {"ttft_p50_s": 1.0, "tpot_p50_s": 0.1}}
    c = {"meta": {"model_key": "m", "traffic": "4", "policy_label": "c"},
         "result": {"ttft_p50_s": 2.0, "tpot_p50_s": 0.1}}
    kept, notes = drop_duplicates([a, b, c], ("model_key", "traffic"), "policy_label")
    assert kept == [a, c] and notes == [
        "b: left out where it repeats a number for number (4): it does nothing different "
        "there."]


def test_print_config_and_bad_configs(tmp_path, capsys):
    assert main(["compare", "--print-config"]) == 0
    assert "[[scale]]" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\n")
    assert main(["compare", "--config", str(bad), "--quiet"]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    missing = tmp_path / "missing.toml"
    assert main(["compare", "--config", str(missing), "--quiet"]) == 2
    assert "cannot read compare config" in capsys.readouterr().err
    assert main(["compare", "--policies", "nope", "--quiet", "--out", str(tmp_path)]) == 2
    assert "policy 'nope' is not installed" in capsys.readouterr().err
    bad_slo = tmp_path / "slo.toml"
    bad_slo.write_text(SMALL + "\n[slo]\nttft_p99_s = -1\n")
    assert main(["compare", "--config", str(bad_slo), "--quiet"]) == 2
    assert "must be a number > 0" in capsys.readouterr().err
