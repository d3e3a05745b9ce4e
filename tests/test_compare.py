"""`batchlab compare`: planning, the written folder, and the story's direction in numbers."""

from __future__ import annotations

import csv
import textwrap

import pytest

from batchlab.studies import compare
from batchlab.cli import main

SMALL = textwrap.dedent("""
    [run]
    prompt = "lognormal:256:1.0"
    output = "lognormal:64:1.0"

    [traffic]
    local_requests = 4
    rates = [32]
    duration = 10
    max_requests = 320

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
    label = "Llama-3-8B on 1 x H100"
    model = "llama-3-8b"
    gpu = "h100"

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
    paths = compare.run(config, out, policies=["continuous"], processes=1)
    rows = list(csv.DictReader((out / "results.csv").open()))
    return out, paths, rows


def test_default_config_plans_every_installed_policy_and_each_study():
    config = compare.load_config()
    points = compare.plan(config)
    tables = [p for p in points if p["meta"]["section"] == "table"]
    labels = {p["meta"]["policy_label"] for p in tables}
    assert {"continuous", "fixed-window", "continuous window=0.2", "bucketing"} <= labels
    traffic = {p["meta"]["traffic"] for p in tables}
    assert "1 user" in traffic and "64 req/s" in traffic
    assert {p["meta"]["study"] for p in points if p["meta"]["section"] == "study"} >= {
        "window", "micro_batches"}


def test_writes_tables_plots_and_a_report_with_its_numbers(small_run):
    out, paths, rows = small_run
    for name in ("results", "moe", "dense", "frontier", "cost_vs_traffic", "window", "report"):
        assert paths[name].exists() and paths[name].stat().st_size > 0, name
    assert paths["frontier"].read_bytes()[:4] == b"\x89PNG"
    table = list(csv.reader((out / "tables" / "moe.csv").open()))
    assert table[0][:3] == ["policy", "traffic", "TTFT p50 (ms)"]
    assert {line[1] for line in table[1:]} == {"1 user", "32 req/s"}
    report = paths["report"].read_text()
    one_user = next(r for r in rows if r["meta.model_key"] == "moe" and
                    r["meta.traffic"] == "1 user")
    dollars = float(one_user["usd_per_million_output_tokens"])
    assert f"${dollars:,.2f}" in report


def test_moe_costs_far_more_per_token_for_one_user_than_at_heavy_traffic(small_run):
    _, _, rows = small_run
    cost = {r["meta.traffic"]: float(r["usd_per_million_output_tokens"]) for r in rows
            if r.get("meta.model_key") == "moe" and r["meta.policy_label"] == "continuous"}
    # Measured: about $89 per million output tokens for one user against about $5 at 32 req/s.
    assert cost["1 user"] > 5 * cost["32 req/s"]


def test_a_longer_window_feeds_experts_more_tokens_and_delays_the_first(small_run):
    _, _, rows = small_run
    study = {float(r["meta.value"]): r for r in rows if r.get("meta.study") == "window"}
    short, long = study[0.005], study[0.2]
    assert float(long["tokens_per_touched_expert"]) > 1.5 * float(
        short["tokens_per_touched_expert"])
    assert float(long["ttft_p50_s"]) > 2 * float(short["ttft_p50_s"])


def test_rerun_reuses_finished_points(small_run, monkeypatch):
    out, _, _ = small_run
    from batchlab.studies import scenario

    def boom(*a, **k):
        raise AssertionError("a cached point was recomputed")

    monkeypatch.setattr(scenario, "run", boom)
    config = out.parent / "small.toml"
    compare.run(config, out, policies=["continuous"], processes=1, plots=False)


def test_print_config_and_bad_configs(tmp_path, capsys):
    assert main(["compare", "--print-config"]) == 0
    assert "[[models]]" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\n")
    assert main(["compare", "--config", str(bad), "--quiet"]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    missing = tmp_path / "missing.toml"
    assert main(["compare", "--config", str(missing), "--quiet"]) == 2
    assert "cannot read compare config" in capsys.readouterr().err
    assert main(["compare", "--policies", "nope", "--quiet", "--out", str(tmp_path)]) == 2
    assert "policy 'nope' is not installed" in capsys.readouterr().err
