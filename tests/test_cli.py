"""The command line: the happy path, JSON agreement, and every user-error path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from batchlab import __version__
from batchlab.cli import main

SMALL = ["--requests", "60", "--rate", "1"]


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"batchlab {__version__}"


def test_policies_lists_fixed_window_with_parameters(capsys):
    assert main(["policies"]) == 0
    out = capsys.readouterr().out
    assert "fixed-window" in out and "--set window=<float>" in out


def test_presets_lists_gpus_models_runtimes_and_deployments(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "h200" in out and "deepseek-v3" in out
    assert "runtime profiles (--runtime)" in out and "eager" in out
    assert "deployments (--deployment)" in out and "deepseek-v3-production" in out


def test_run_on_a_cost_model_preset_shows_utilisation(capsys):
    assert main(["run", "--model", "mixtral-8x7b", "--gpu", "h100", "--gpus", "2",
                 "--requests", "40", "--rate", "4"]) == 0
    out = capsys.readouterr().out
    assert "MFU" in out and "tokens per touched expert" in out and "$ per million" in out


def test_run_prints_a_table_and_json_gives_the_same_numbers(capsys):
    assert main(["run", *SMALL]) == 0
    table = capsys.readouterr().out
    assert "TTFT p50" in table and "finished  60" in table
    assert main(["run", *SMALL, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_finished"] == 60
    ttft_ms = summary["ttft_p50_s"] * 1e3
    line = next(x for x in table.splitlines() if x.strip().startswith("TTFT p50"))
    assert line.split()[-2] in (f"{ttft_ms:.3g}", f"{ttft_ms:,.0f}")


def test_run_writes_records_and_full_json(tmp_path, capsys):
    rec, full = tmp_path / "r.csv", tmp_path / "r.json"
    assert main(["run", *SMALL, "--records", str(rec), "--save", str(full),
                 "--slo-ttft", "1", "--price", "2"]) == 0
    assert len(rec.read_text().splitlines()) == 61
    doc = json.loads(full.read_text())
    assert "goodput_rps" in doc["summary"] and doc["summary"]["usd_per_million_output_tokens"] > 0


def test_trace_replay(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival,prompt_tokens,output_tokens\n0,10,3\n0.5,20,2\n1.0,5,1\n")
    assert main(["run", "--trace", str(trace), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_finished"] == 3


@pytest.mark.parametrize("argv,message", [
    (["run", "--policy", "nope"], "unknown policy 'nope'"),
    (["run", "--set", "foo=1"], "has no parameter 'foo'"),
    (["run", "--policy", "fixed-window", "--set", "window=abc"], "parameter 'window' must be a finite float"),
    (["run", "--rate", "-1"], "--rate must be a finite number >= 1e-09"),
    (["run", "--requests", "0"], "--requests must be an integer"),
    (["run", "--trace", "/no/such/trace.csv"], "/no/such/trace.csv"),
    (["run", "--limit", "3"], "--limit applies to --trace only"),
    (["run", "--devices", "0"], "--devices must be >= 1"),
    (["run", "--tp", "2"], "--tp needs --model and --gpu"),
    (["run", "--model", "deepseek-v3", "--gpu", "h200"], "does not fit on 1 x h200"),
    (["run", "--model", "gpt-9", "--gpu", "h200"], "unknown model preset 'gpt-9'"),
    (["run", "--model", "llama-3-8b"], "needs both a model and a gpu"),
    (["run", "--arrival", "sometimes"], "arrival 'sometimes' is unknown"),
    (["run", "--prompt", "lognormal:abc"], "lognormal"),
])
def test_user_mistakes_print_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("batchlab: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_trace_row_names_the_line(tmp_path, capsys):
    trace = tmp_path / "bad.csv"
    trace.write_text("arrival,prompt_tokens,output_tokens\n0,10,3\n0.5,many,2\n")
    assert main(["run", "--trace", str(trace)]) == 2
    err = capsys.readouterr().err
    assert f"{trace}:3" in err and "prompt_tokens" in err


def test_console_script_exit_status_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "batchlab.cli", "run", "--policy", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("batchlab: error: unknown policy") and "Traceback" not in \
        proc.stderr
