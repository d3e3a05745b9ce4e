"""Bad input and silent surprises of `batchlab run`, `capacity` and `compare`: each either
runs as documented or stops with one line, "batchlab: error: ...", naming the option."""

from __future__ import annotations

import textwrap

import pytest

from batchlab.cli import main

pytest.importorskip("batchlab.costmodel")

TINY = textwrap.dedent("""
    [run]
    prompt = "64"
    output = "8"

    [capacity]
    start = 8.0
    duration = 2.0
    rel_tol = 0.5
    min_requests = 10
    max_requests = 40

    [traffic]
    local_requests = 2
    rates = []

    [[models]]
    key = "dense"
    kind = "dense"
    label = "Llama-3-8B on 1 x H100"
    model = "llama-3-8b"
    gpu = "h100"
    gpus = 1

    [[policies]]
    label = "continuous"
    policy = "continuous"
""")


def _error(capsys, argv) -> str:
    """The one error line of a CLI call that must fail with exit status 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("batchlab: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_compare_without_poisson_rates_writes_its_plots(tmp_path):
    pytest.importorskip("matplotlib")
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "out"
    assert main(["compare", "--config", str(config), "--out", str(out), "--processes", "1",
                 "--quiet"]) == 0
    # No Poisson point: no frontier; no [[scale]]: no crossover or speed plot. The plots
    # that have data are drawn, as PNGs, and the report shows them.
    drawn = sorted(p.name for p in (out / "plots").iterdir())
    assert drawn == ["capacity.png", "cost_vs_traffic.png"]
    assert all((out / "plots" / name).read_bytes()[:4] == b"\x89PNG" for name in drawn)
    report = (out / "report.md").read_text()
    assert all(f"(plots/{name})" in report for name in drawn)


@pytest.mark.parametrize("value", [",", "", " , "])
def test_compare_policies_naming_nothing_is_an_error(capsys, tmp_path, value):
    err = _error(capsys, ["compare", "--policies", value, "--out", str(tmp_path / "o")])
    assert "--policies" in err and "names no policy" in err
    assert not (tmp_path / "o").exists()


def test_run_on_a_deployment_reports_its_gpus_not_the_teaching_device(capsys):
    assert main(["run", "--requests", "3", "--deployment", "deepseek-v3-production"]) == 0
    out = capsys.readouterr().out
    assert "teaching device" not in out
    assert "GPUs      176" in out  # one prefill unit (32) and one decode unit (144)


@pytest.mark.parametrize("extra, culprits", [
    (["--model", "llama-3-8b", "--gpu", "h100"], "--model, --gpu"),
    (["--gpus", "8", "--devices", "3"], "--gpus, --devices"),
    (["--price", "3"], "--price"),
])
def test_run_deployment_refuses_what_it_fixes(capsys, extra, culprits):
    err = _error(capsys, ["run", "--requests", "3", "--deployment", "deepseek-v3-production",
                          *extra])
    assert f"drop {culprits} " in err


def test_settings_a_deployment_overrides_are_named():
    # Commands refuse them when typed beside --deployment; a sweep point that inherits them
    # from [base] builds the deployment (tests/test_inherited_settings.py).
    from batchlab.studies import scenario
    assert scenario.conflicts({"deployment": "deepseek-v3-production", "model": "llama-3-8b",
                               "gpus": 8}) == ["model", "gpus"]


@pytest.mark.parametrize("option, value", [("--duration", "0"), ("--duration", "-1"),
                                           ("--tol", "0"), ("--tol", "1"), ("--start", "0")])
def test_capacity_checks_its_search_options_before_probing(capsys, option, value):
    err = _error(capsys, ["capacity", "--model", "llama-3-8b", "--gpu", "h100", option, value])
    assert err.startswith(f"batchlab: error: {option} ")


def test_capacity_search_api_checks_its_options():
    from batchlab import ConfigError
    from batchlab.studies.capacity import find_capacity
    params = {"model": "llama-3-8b", "gpu": "h100"}
    with pytest.raises(ConfigError, match="duration must be"):
        find_capacity(params, duration=0)
    with pytest.raises(ConfigError, match="min_requests 500 is above .*max_requests 100"):
        find_capacity(params, min_requests=500, max_requests=100)


def test_capacity_slo_on_a_key_the_summary_lacks_is_an_error(capsys):
    err = _error(capsys, ["capacity", "--model", "llama-3-8b", "--gpu", "h100", "--prompt", "64",
                          "--output", "8", "--slo", "foo_s=1"])
    assert "'foo_s' is not in the run summary" in err and "ttft_p99_s" in err


def _with_capacity(table: str) -> str:
    start, end = TINY.index("[capacity]"), TINY.index("[traffic]")
    return TINY[:start] + "[capacity]\n" + table + "\n\n" + TINY[end:]


@pytest.mark.parametrize("table, words", [
    ("start = 0.0", "[capacity]: start must be"),
    ("rel_tol = 0", "[capacity]: rel_tol must be"),
    ("duration = -1", "[capacity]: duration must be"),
    ("min_requests = 5000\nmax_requests = 1200", "min_requests 5000 is above max_requests"),
    ("speed = 3", "unknown setting 'speed'"),
])
def test_compare_checks_capacity_settings_before_running(capsys, tmp_path, table, words):
    config = tmp_path / "c.toml"
    config.write_text(_with_capacity(table))
    err = _error(capsys, ["compare", "--config", str(config), "--out", str(tmp_path / "o"),
                          "--no-plots", "--quiet"])
    assert words in err
    assert not (tmp_path / "o").exists()  # nothing ran


def test_compare_checks_a_scale_entrys_capacity_on_top_of_the_table(capsys, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(TINY + '\n[[scale]]\nmodel = "dense"\nlabel = "x"\n'
                      "capacity = { start = 0.01 }\n")
    err = _error(capsys, ["compare", "--config", str(config), "--out", str(tmp_path / "o"),
                          "--no-plots", "--quiet"])
    assert "[[scale]] #1 capacity: start 0.01 must lie from min_rate 0.05" in err


def test_capacity_on_the_teaching_device_prints_no_nan_price(capsys):
    assert main(["capacity"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "nan" not in last and "GPU(s)" not in last
    assert "affine teaching device(s)" in last and "give --price" in last
    assert main(["capacity", "--price", "2"]) == 0
    assert "$" in capsys.readouterr().out.strip().splitlines()[-1]


def test_compare_progress_reports_every_phase_and_no_empty_one(tmp_path):
    import io

    from batchlab.studies import compare
    from batchlab.studies.progress import Progress
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    stream = io.StringIO()
    compare.run(config, tmp_path / "out", processes=1, plots=False,
                progress=Progress(stream, "running", is_terminal=False))
    lines = stream.getvalue().splitlines()
    # No knob study in TINY: that phase says nothing, and none says "0/0".
    assert [line.split(":")[0] for line in lines] == ["running latency tables",
                                                      "running capacity searches"]
    assert all(" 1/1 done" in line for line in lines)


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text("arrival,prompt_tokens,output_tokens\n0,5,3\n0.5,7,2\n")
    return str(path)


@pytest.mark.parametrize("extra, culprits", [
    (["--rate", "3"], "--rate"),
    (["--arrival", "gamma", "--cv", "2"], "--arrival, --cv"),
    (["--requests", "4", "--prompt", "8"], "--requests, --prompt"),
])
def test_run_trace_refuses_options_it_would_ignore(capsys, trace, extra, culprits):
    err = _error(capsys, ["run", "--trace", trace, *extra])
    assert f"drop {culprits} " in err


def test_run_trace_with_its_own_options_runs(capsys, trace):
    assert main(["run", "--trace", trace, "--time-scale", "0.5", "--limit", "1", "--json"]) == 0
    assert '"num_requests": 1' in capsys.readouterr().out


def test_time_scale_without_a_trace_is_an_error(capsys):
    assert "--time-scale applies to --trace only" in _error(capsys, ["run", "--time-scale", "2"])


@pytest.mark.parametrize("command", [["run", "--requests", "3"], ["capacity"]])
def test_devices_beside_a_cost_model_is_an_error(capsys, command):
    err = _error(capsys, [*command, "--model", "llama-3-8b", "--gpu", "h100", "--devices", "4"])
    assert "--devices counts affine teaching devices" in err and "--dp" in err


def test_settings_a_trace_overrides_are_named(trace):
    from batchlab.studies import scenario
    assert scenario.conflicts({"trace": trace, "rate": 3.0, "seed": 1}) == ["rate"]
    assert scenario.build_workload({"trace": trace, "rate": 3.0}).num_requests == \
        scenario.build_workload({"trace": trace}).num_requests


@pytest.mark.parametrize("argv, words", [
    (["capacity", "--gpus", "0"], "--gpus must be"),
    (["capacity", "--price", "-1"], "--price must be"),
])
def test_capacity_errors_name_the_option(capsys, argv, words):
    assert words in _error(capsys, argv)


def test_report_names_the_default_config_in_plain_words():
    from batchlab.studies.compare_report import _config_name
    assert _config_name({"_name": "the default compare config"}) == "the default compare config"
    assert _config_name({"_name": "my.toml"}) == "config my.toml"


def test_run_on_the_teaching_device_with_a_price_mentions_no_gpu(capsys):
    assert main(["run", "--requests", "20", "--price", "3.5"]) == 0
    out = capsys.readouterr().out
    assert "GPU" not in out.replace("no GPU", "").replace("--gpu", "")
    assert "$ per million output tokens" in out


def test_local_requests_zero_turns_off_the_one_user_runs_of_the_scale_axis(tmp_path):
    import csv

    from batchlab.studies import compare
    config = tmp_path / "c.toml"
    config.write_text(TINY.replace("local_requests = 2", "local_requests = 0")
                      .replace("rates = []", "rates = [4]")
                      + '\n[[scale]]\nmodel = "dense"\nlabel = "dense 1"\ndeploy = { gpus = 1 }\n')
    compare.run(config, tmp_path / "out", processes=1, plots=False)
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert rows and not [r for r in rows if r.get("arrival") == "local"]


@pytest.mark.parametrize("argv, message", [
    (["run", "--prompt", "0"], "--prompt must be a positive integer, got 0"),
    (["run", "--output", "uniform:5:2"], "--output 'uniform:5:2': low must be <= high"),
    (["run", "--lengths", "x.csv", "--max-tokens", "0"], "--max-tokens must be an integer"),
    (["sweep", "examples/sweep.toml", "--processes", "0"], "--processes must be an integer"),
    (["compare", "--processes", "0"], "--processes must be an integer"),
])
def test_errors_name_the_option_not_an_internal_class(capsys, argv, message):
    err = _error(capsys, argv)
    assert message in err
    assert "ConstantLength" not in err and "TraceLengths" not in err


def test_trace_with_another_suffix_or_a_directory_names_the_option(capsys, tmp_path):
    text = tmp_path / "ok.txt"
    text.write_text("arrival,prompt_tokens,output_tokens\n0,5,3\n")
    assert "--trace must end in .csv" in _error(capsys, ["run", "--trace", str(text)])
    err = _error(capsys, ["run", "--trace", str(tmp_path)])
    assert "--trace must be a trace file, got the directory" in err


def test_load_trace_on_a_directory_says_so(tmp_path):
    from batchlab import TraceError
    from batchlab.workloads import load_trace
    folder = tmp_path / "x.csv"
    folder.mkdir()
    with pytest.raises(TraceError, match="is a directory"):
        load_trace(folder)


def test_zero_output_token_warning_is_one_clean_line(capsys, tmp_path):
    path = tmp_path / "zero.csv"
    path.write_text("arrival,prompt_tokens,output_tokens\n0,5,0\n0.5,7,2\n")
    assert main(["run", "--trace", str(path)]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "0 output tokens" in line]
    assert warning == [f"batchlab: warning: {path}: 1 request(s) with 0 output tokens counted "
                       "as 1 token"]
    assert "UserWarning" not in err and ".py:" not in err


def test_a_closed_pipe_ends_the_run_quietly(capsys, monkeypatch):
    import io
    import sys

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["run", "--requests", "5"]) == 141  # 128 + SIGPIPE, as a shell reports it
    assert "error" not in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--arrival", "gamma", "--rate", "2"], "--cv (coefficient of variation"),
    (["--arrival", "poisson", "--rate", "2", "--cv", "2"],
     "--cv is not used by arrival 'poisson'"),
    (["--arrival", "closed", "--rate", "2"], "--rate is not used by arrival 'closed'"),
])
def test_run_names_the_arrival_option_it_needs_or_does_not_use(capsys, argv, message):
    err = _error(capsys, ["run", "--requests", "5", *argv])
    assert message in err and "\n" not in err.strip()


def test_run_leaves_a_policy_parameter_error_naming_the_policy(capsys):
    """Only the arrival settings are reworded as options: a policy's own error names the
    policy (the user typed --set, not --policy)."""
    err = _error(capsys, ["run", "--requests", "5", "--set", "max_num_seqs=0"])
    assert "error: policy 'continuous': max_num_seqs must be > 0" in err
