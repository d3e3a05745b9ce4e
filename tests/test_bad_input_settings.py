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
