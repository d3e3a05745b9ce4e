"""Run settings and compare configs an audit of the newer options found slipping through:
each now stops with one line naming the option, or the file, table and key, before a run."""

from __future__ import annotations

import pytest

from batchlab.cli import main

pytest.importorskip("batchlab.costmodel")

DEEPSEEK = ["--model", "deepseek-v3", "--gpu", "h200", "--gpus", "8"]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("batchlab: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv, words", [
    # "" ran the affine teaching device, as if --deployment were not given
    (["--deployment", ""], "--deployment must be a non-empty string, got ''"),
    (["--deployment", "deepseek-v3-production", "--decode-threshold", "0"],
     "--decode-threshold must be an integer from 1 to"),  # was "make_devices: field ..."
    # any size ran, far past a token count a row may feed
    (["--model", "llama-3-8b", "--gpu", "h100", "--decode-threshold", "99999999999"],
     "--decode-threshold must be an integer from 1 to 2147483647, got 99999999999"),
    ([*DEEPSEEK, "--redundant-experts", "-1"], "--redundant-experts must be an integer from 0"),
    (["--model", "llama-3-8b", "--gpu", "h100", "--runtime", " "],
     "--runtime must be a non-empty string"),
])
def test_run_names_a_bad_cost_model_setting_by_its_option(capsys, argv, words):
    assert words in _error(capsys, ["run", "--requests", "3", *argv])


@pytest.mark.parametrize("setting, words", [
    ("decode_threshold = 0", "decode_threshold must be an integer from 1 to"),
    ('overlap = "yes"', "overlap must be true or false, got 'yes'"),
    ("redundant_experts = -2", "redundant_experts must be an integer from 0"),
    ("prefill_units = 1.5", "prefill_units must be an integer from 0"),
    ('deployment = ""', "deployment must be a non-empty string"),
])
def test_a_sweep_refuses_a_bad_step_setting_before_running(tmp_path, capsys, setting, words):
    """These used to run and leave a failed row (or, for deployment = "", a teaching-device
    row): a mistake in the file, refused like an unknown policy."""
    path = tmp_path / "s.toml"
    path.write_text(f'[base]\nrequests = 3\nmodel = "llama-3-8b"\ngpu = "h100"\n{setting}\n')
    err = _error(capsys, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert f"{path}: sweep point 0 " in err and words in err
    assert not (tmp_path / "out" / "results.csv").exists()


@pytest.mark.parametrize("old, new, where, words", [
    # seed = -1 and seed = "x" were tracebacks from numpy; prompt = -512 failed every run
    ('output = "8"', 'output = "8"\nseed = -1', "[run]", "seed must be an integer from 0"),
    ('output = "8"', 'output = "8"\nseed = "x"', "[run]", "seed must be an integer from 0"),
    ('prompt = "64"', "prompt = -512", "[run]", "prompt must be an integer from 1"),
    # settings compare gives each point itself were overridden, or made every run fail
    ("gpus = 1\n", "gpus = 1\nrequests = 5\n", "[[models]] #1 (dense)",
     "requests is set by compare itself"),
    ('output = "8"', 'output = "8"\ncv = 2.0', "[run]", "cv is set by compare itself"),
    ("[studies.w]\nmodel = \"dense\"",
     '[studies.w]\nmodel = { model = "llama-3-8b", gpus = 1 }', "[studies.w] model",
     "the cost model needs both a model and a gpu preset"),
    ('policy = "continuous"\nset = { max_num_seqs = 8 }',
     'policy = "continuous"\nset = { max_num_seqs = 8 }\ndeploy.dense = { gpus = 2, tp = 3 }',
     "[[policies]] #1 deploy.dense", "tp=3"),
    ('policy = "continuous"\nset = { max_num_seqs = 8 }',
     'policy = "continuous"\nset = { max_num_seqs = 8 }\ndeploy.dense = "2"',
     "[[policies]] #1 deploy.dense", "must be a table of device settings"),
    ('deploy = { gpus = 1 }', 'preset = "deepseek-v3-production"\ndeploy = { gpus = 1 }',
     "[[scale]] #1 (one GPU)", "fixes its own devices; drop deploy"),
])
def test_a_compare_run_setting_mistake_is_named_before_anything_runs(tmp_path, old, new,
                                                                     where, words):
    from test_bad_input_audit import _config
    from batchlab.core.errors import ConfigError
    from batchlab.studies.compare_plan import load_config
    path = _config(tmp_path, old, new)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {where}: ") and words in str(info.value)


def test_traffic_min_requests_above_max_requests_is_refused(tmp_path):
    """max_requests won without a word (30 and 10 ran 10 requests a rate); the capacity
    search already refused the same pair."""
    from test_bad_input_audit import _config
    from batchlab.core.errors import ConfigError
    from batchlab.studies.compare_plan import load_config
    path = _config(tmp_path, "rates = []", "rates = [1]\nmin_requests = 30\nmax_requests = 10")
    with pytest.raises(ConfigError, match=r"\[traffic\]: 'min_requests' 30 is above "
                       "'max_requests' 10; raise the one or lower the other"):
        load_config(path)
    path = _config(tmp_path, "rates = []", "rates = [1]\nmin_requests = 2000")  # max 1000
    with pytest.raises(ConfigError, match="'min_requests' 2000 is above the default "
                       "'max_requests' 1000"):
        load_config(path)


def test_traffic_max_requests_alone_below_the_default_min_runs(tmp_path):
    """max_requests = 10 alone ran 10 requests a rate: the default min_requests (30) yields
    to it; only a min_requests the file gives is held against max_requests."""
    from test_bad_input_audit import _config
    from batchlab.studies.compare_plan import load_config, traffic_points
    path = _config(tmp_path, "rates = []", "rates = [1]\nmax_requests = 10")
    points = traffic_points(load_config(path))
    assert [p["requests"] for _, p in points if p["arrival"] == "poisson"] == [10]


def test_a_study_inline_model_is_checked_as_it_runs(tmp_path):
    """An inline study model copied from a [[models]] entry (key, kind, label beside its
    settings) runs: plan_studies drops those three, so the check before the run must too."""
    from test_bad_input_audit import _config
    from batchlab.studies.compare_plan import load_config, plan_studies
    path = _config(tmp_path, "[studies.w]\nmodel = \"dense\"",
                   '[studies.w]\nmodel = { key = "d", kind = "dense", label = "8B", '
                   'model = "llama-3-8b", gpu = "h100", gpus = 1 }')
    points = plan_studies(load_config(path))
    assert points and all(p["params"]["model"] == "llama-3-8b" and "kind" not in p["params"]
                          for p in points)


def test_an_slo_key_the_summary_lacks_is_refused_before_compare_runs(tmp_path, capsys):
    """A typo (ttfft_p99_s) ran every study and table, exited 0 and reported that no
    deployment met the SLO at any rate."""
    from test_bad_input_audit import _config
    path = _config(tmp_path, extra="[slo]\nttfft_p99_s = 2.0\n")
    err = _error(capsys, ["compare", "--config", str(path), "--out", str(tmp_path / "o"),
                          "--no-plots", "--quiet"])
    assert f"{path}: [slo]: SLO key 'ttfft_p99_s' is not in the run summary" in err
    assert not (tmp_path / "o").exists()
    path = _config(tmp_path, extra="[slo]\nitl_p99_s = 0.1\ne2e_p90_s = 9.0\n")
    from batchlab.studies.compare_plan import load_config
    assert load_config(path)["_slo"]  # the keys a summary has load


def test_a_model_kind_that_contradicts_the_model_is_refused(tmp_path):
    """kind = "moe" on a dense model put its numbers on the MoE side of the report."""
    from test_bad_input_audit import _config
    from batchlab.core.errors import ConfigError
    from batchlab.studies.compare_plan import load_config
    path = _config(tmp_path, 'kind = "dense"', 'kind = "moe"')
    with pytest.raises(ConfigError, match=r'\[\[models\]\] #1 \(dense\): kind = "moe", but '
                       r'llama-3-8b is a dense model; write kind = "dense"'):
        load_config(path)


@pytest.mark.parametrize("command", [["run", "--requests", "3"], ["capacity"]])
def test_an_absurd_price_is_refused(capsys, command):
    """--price 1e308 ran: the cost overflowed to inf (a numpy warning) and the summary
    silently dropped its $ line."""
    err = _error(capsys, [*command, "--model", "llama-3-8b", "--gpu", "h100", "--price",
                          "1e308"])
    assert "--price must be a finite number >= 0 and <= 1e+06, got 1e+308" in err


def test_a_pair_cap_below_two_tokens_names_the_option(capsys, tmp_path):
    """It said "TraceLengths.max_tokens must be >= 2", a class the user never typed."""
    trace = tmp_path / "t.csv"
    trace.write_text("arrival,prompt_tokens,output_tokens\n0,500,300\n")
    err = _error(capsys, ["run", "--lengths", str(trace), "--max-tokens", "1"])
    assert "--max-tokens must be an integer from 2 to" in err


@pytest.mark.parametrize("value", ["folder", "profile.csv"])
def test_an_efficiency_that_is_no_profile_file_names_the_option(capsys, tmp_path, value):
    """The cost model's message named its API: "efficiency must be None, an Efficiency, a
    dict or a .toml/.json profile path"."""
    (tmp_path / "folder").mkdir()
    err = _error(capsys, ["run", "--model", "llama-3-8b", "--gpu", "h100", "--efficiency",
                          str(tmp_path / value)])
    assert "--efficiency must be a .toml or .json profile file" in err


@pytest.mark.parametrize("slo, words", [
    ("ttft_p99_s=2,ttft_p99_s=3", "limits ttft_p99_s twice; give each key once"),  # last won
    ("", "--slo '' names no limit"),  # searched under the default SLO
    (" , ", "names no limit"),
])
def test_capacity_slo_that_repeats_or_names_no_key_is_refused(capsys, slo, words):
    assert words in _error(capsys, ["capacity", "--slo", slo])


@pytest.mark.parametrize("old, new, words", [
    ('label = "continuous"', 'label = " "', "[[policies]] #1: 'label' must be a title"),
    ('key = "dense"', 'key = ""', "[[models]] #1: 'key' must be a short name"),
    ('policy = "continuous"\nset = { max_num_seqs = 8 }',
     'policy = "continuous"\nset = { max_num_seqs = 8 }\nskip.dense = 3',
     "[[policies]] #1 skip: 'dense' must be a reason the policy cannot act on that model"),
    ("[studies.w]", '[studies." "]', "a study needs a name, such as [studies.window]"),
])
def test_compare_text_fields_must_hold_text(tmp_path, old, new, words):
    """An empty label gave a blank row; skip.dense = 3 left the policy out "because 3"."""
    from test_bad_input_audit import _config
    from batchlab.core.errors import ConfigError
    from batchlab.studies.compare_plan import load_config
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, old, new))
    assert words in str(info.value)


def test_a_trace_column_named_twice_is_refused(capsys, tmp_path):
    """arrival,arrival,... read the first column and ignored the second without a word."""
    trace = tmp_path / "t.csv"
    trace.write_text("arrival,arrival,prompt_tokens,output_tokens\n0,1,5,3\n")
    err = _error(capsys, ["run", "--trace", str(trace)])
    assert f"{trace}:1: column 'arrival' appears 2 times in the header; keep one" in err


@pytest.mark.parametrize("grid, words", [
    ('gpu = ["h100", "h10"]', "unknown GPU preset 'h10'"),
    ('runtime = ["eager", "eagr"]', "unknown runtime profile 'eagr'"),
    ('model = ["llama-3-8b", "llama-9"]', "unknown model preset 'llama-9'"),
])
def test_a_sweep_refuses_an_unknown_preset_before_running(tmp_path, capsys, grid, words):
    """Each ran the other points and left a failed row, like a layout that does not fit."""
    path = tmp_path / "s.toml"
    key = grid.split()[0]
    base = "".join(f'{k} = "{v}"\n' for k, v in (("model", "llama-3-8b"), ("gpu", "h100"))
                   if k != key)
    path.write_text(f"[base]\nrequests = 3\n{base}[grid]\n{grid}\n")
    err = _error(capsys, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert f"{path}: sweep point 1 " in err and words in err
    assert not (tmp_path / "out" / "results.csv").exists()


@pytest.mark.parametrize("command", [["compare", "--no-plots", "--quiet"], ["sweep", "S"]])
def test_an_out_folder_through_a_dangling_link_is_named(capsys, tmp_path, command):
    """mkdir said only "[Errno 17] File exists: '<link>'", naming neither --out nor why."""
    link = tmp_path / "gone"
    link.symlink_to(tmp_path / "nowhere")
    sweep = tmp_path / "s.toml"
    sweep.write_text("[base]\nrequests = 2\n")
    argv = [str(sweep) if a == "S" else a for a in command]
    err = _error(capsys, [*argv, "--out", str(link / "sub")])
    assert f"--out {link / 'sub'}: {link} is a link to {tmp_path / 'nowhere'}, which does not " \
           "exist" in err
