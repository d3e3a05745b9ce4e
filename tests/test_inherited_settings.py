"""A trace or a deployment takes precedence over settings a sweep point inherits from [base]
(or a compare cell from [run]): those were meant for the other points. Where the user typed
both on one command line the command refuses them, since there they would be ignored."""

from __future__ import annotations

import csv

import pytest

from batchlab.cli import main
from batchlab.studies import scenario


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival,prompt_tokens,output_tokens\n0.0,10,5\n0.1,20,3\n")
    return path


def test_a_sweep_point_with_a_trace_ignores_the_bases_sampled_settings(tmp_path, trace):
    config = tmp_path / "sweep.toml"
    config.write_text(f'[base]\nrequests = 20\nseed = 0\n[grid]\npolicy = ["continuous"]\n'
                      f'[[points]]\nlabel = "replay"\ntrace = "{trace}"\n')
    out = tmp_path / "out"
    assert main(["sweep", str(config), "--out", str(out), "--processes", "1"]) == 0
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    replay = [r for r in rows if r.get("label") == "replay"]
    assert replay and not replay[0].get("error")
    assert int(float(replay[0]["num_requests"])) == 2  # the trace's, not base's 20


def test_a_deployment_point_ignores_an_inherited_model_and_price():
    params = {"deployment": "deepseek-v3-production", "model": "llama-3-8b", "gpu": "h100",
              "price": 3.0, "devices": 2}
    assert scenario.conflicts(params) == ["model", "gpu", "price", "devices"]
    devices = scenario.build_devices(params)
    plain = scenario.build_devices({"deployment": "deepseek-v3-production"})
    assert [d.model.name for d in devices] == [d.model.name for d in plain]
    assert {d.model.name for d in devices} == {"deepseek-v3"}
    assert [d.gpu.name for d in devices] == [d.gpu.name for d in plain]
    assert [d.price_per_hour for d in devices] == [d.price_per_hour for d in plain]


def test_bench_replays_a_trace(capsys, trace):
    # Defaults of sampled traffic made every --trace a conflict; now it reaches the server.
    code = main(["bench", "--endpoint", "http://127.0.0.1:9", "--trace", str(trace),
                 "--timeout", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach" in err and "replays" not in err


def test_bench_refuses_sampled_options_beside_a_trace(capsys, trace):
    assert main(["bench", "--endpoint", "http://127.0.0.1:9", "--trace", str(trace),
                 "--rate", "3"]) == 2
    err = capsys.readouterr().err
    assert "drop --rate" in err
