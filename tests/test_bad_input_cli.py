"""The bad-input catalogue through the CLI: each mistake in `batchlab run`'s options, a trace,
a sweep file or a compare config prints one line, "batchlab: error: ...", naming what is wrong,
and exits with 2 (the Python API's rows are in test_bad_input_api.py).

Rows that need `--model`/`--gpu` skip themselves if `batchlab.costmodel` is not installed. The
bad files are conftest's `traces` fixture.
"""

from __future__ import annotations

import pytest

from batchlab.cli import main
from conftest import HAS_COSTMODEL

# (id, argv with {tmp} for the trace folder, words the one-line message contains)
CLI = [
    ("trace-empty", ["run", "--trace", "{tmp}/empty.csv"], "empty.csv: is empty"),
    ("trace-row", ["run", "--trace", "{tmp}/not-a-number.csv"],
     "not-a-number.csv:3: field 'prompt_tokens'"),
    ("trace-missing", ["run", "--trace", "{tmp}/nowhere.csv"], "nowhere.csv: not found"),
    ("rate-negative", ["run", "--rate", "-1"], "--rate must be a finite number >= 1e-09, got -1.0"),
    ("requests-zero", ["run", "--requests", "0"], "--requests must be an integer from 1 to"),
    ("devices-zero", ["run", "--devices", "0"], "--devices must be >= 1"),
    ("policy-unknown", ["run", "--policy", "nope"], "unknown policy 'nope'"),
    ("policy-parameter-nan", ["run", "--policy", "fixed-window", "--set", "window=nan"],
     "parameter 'window' must be a finite float, got 'nan'"),
    ("policy-parameter-negative", ["run", "--policy", "fixed-window", "--set", "window=-1"],
     "window must be a duration from 0 to 1e+09 seconds"),
    ("gpu-unknown", ["run", "--model", "llama-3-8b", "--gpu", "h9000"],
     "unknown GPU preset 'h9000'"),
    ("model-unknown", ["run", "--model", "gpt-9", "--gpu", "h200"],
     "unknown model preset 'gpt-9'"),
    ("model-does-not-fit", ["run", "--model", "deepseek-v3", "--gpu", "h200"],
     "deepseek-v3 does not fit on 1 x h200"),
    # tracebacks before: bad bytes in a trace, absurd numbers, a `name` parameter
    ("trace-utf16-or-binary", ["run", "--trace", "{tmp}/binary.csv"],
     "binary.csv: is not text in UTF-8 or UTF-16"),
    ("trace-binary-jsonl", ["run", "--trace", "{tmp}/binary.jsonl"], "is not text in UTF-8"),
    ("trace-huge-tokens", ["run", "--trace", "{tmp}/huge-tokens.csv"],
     "must be at most 2147483647 tokens"),
    ("trace-huge-tokens-jsonl", ["run", "--trace", "{tmp}/huge-tokens.jsonl"],
     "must be at most 2147483647 tokens"),
    ("trace-huge-field", ["run", "--trace", "{tmp}/huge-field.csv"],
     "huge-field.csv:2: is not a readable CSV line"),
    ("requests-absurd", ["run", "--requests", "99999999999999999999999"],
     "--requests must be an integer from 1 to 100000000, got 99999999999999999999999"),
    ("devices-absurd", ["run", "--devices", "99999999999999999999"],
     "--devices must be an integer from 1 to 10000"),
    ("set-name", ["run", "--set", "name=x"], "policy 'continuous' has no parameter 'name'"),
    ("cv-absurd", ["run", "--arrival", "gamma", "--cv", "1e308"],
     "--cv must be a finite number > 0 and <= 1000, got 1e+308"),
    ("prompt-absurd", ["run", "--prompt", "uniform:1:99999999999999999999"],
     "--prompt 'uniform:1:99999999999999999999': high must be a positive"),
    ("max-new-tokens-absurd", ["run", "--max-new-tokens", "99999999999999999999"],
     "--max-new-tokens must be an integer from 1 to 2147483647"),
    ("seed-negative", ["run", "--seed", "-1"], "--seed must be an integer from 0 to"),
    ("think-time-absurd", ["run", "--arrival", "closed", "--think-time", "1e308"],
     "--think-time must be a finite number >= 0 and <= 1e+09"),
    # silent wrong results before: each ran as something else, or gave nonsense
    ("time-scale-zero", ["run", "--trace", "{tmp}/utf16.csv", "--time-scale", "0"],
     "--time-scale must be a finite number > 0"),
    ("gpus-zero", ["run", "--model", "llama-3-8b", "--gpu", "h100", "--gpus", "0"],
     "--gpus must be an integer from 1 to 10000, got 0"),
    ("dp-zero", ["run", "--model", "llama-3-8b", "--gpu", "h100", "--dp", "0"],
     "--dp must be an integer from 1 to 10000, got 0"),
    ("price-negative", ["run", "--price", "-1"], "--price must be a finite number >= 0"),
    ("slo-ttft-zero", ["run", "--slo-ttft", "0"], "--slo-ttft must be a finite number > 0"),
    ("slo-ttft-negative", ["run", "--slo-ttft", "-1"], "--slo-ttft must be a finite number > 0"),
    ("window-inf", ["run", "--policy", "fixed-window", "--set", "window=inf"],
     "parameter 'window' must be a finite float, got 'inf'"),
    # config files
    ("sweep-binary", ["sweep", "{tmp}/sweep-binary.toml"],
     "sweep-binary.toml: not a TOML file: byte 0xfb at offset 1 is not UTF-8 text"),
    ("sweep-bad-point", ["sweep", "{tmp}/points-only.toml"],
     "requests must be an integer from 1 to 100000000, got 0"),
    ("compare-no-key", ["compare", "--config", "{tmp}/no-key.toml"],
     "no-key.toml: [[models]] #1: 'key' is missing"),
    ("compare-run-string", ["compare", "--config", "{tmp}/run-string.toml"],
     "run-string.toml: [run]: must be a table, got 'x'"),
    ("compare-rates-int", ["compare", "--config", "{tmp}/rates-int.toml"],
     "rates-int.toml: [traffic]: 'rates' must be a list"),
    ("compare-models-table", ["compare", "--config", "{tmp}/models-table.toml"],
     "models-table.toml: [[models]]: must be one or more [[models]] tables"),
    ("compare-study-no-knob", ["compare", "--config", "{tmp}/study-no-knob.toml"],
     "[studies.s]: 'knob' is missing"),
    ("compare-study-model", ["compare", "--config", "{tmp}/study-model.toml"],
     "[studies.s]: model 'zz' is not a [[models]] key"),
    ("compare-variants-string", ["compare", "--config", "{tmp}/variants-string.toml"],
     "[variants]: is no longer read: give each policy setting its own [[policies]] entry"),
]


@pytest.mark.parametrize("argv,words", [pytest.param(*row[1:], id=row[0]) for row in CLI])
def test_cli_prints_one_line_and_exits_2(argv, words, traces, capsys):
    if any(a in ("--model", "--gpu") for a in argv) and not HAS_COSTMODEL:
        pytest.skip("batchlab.costmodel is not installed")
    argv = [a.replace("{tmp}", str(traces)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("batchlab: error: ") and err.count("\n") == 1, err
    assert words in err and "Traceback" not in err


def test_cli_rejects_a_nan_option_before_running(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--rate", "nan"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "'nan' is not a finite number" in err
    assert err.startswith("batchlab: error: argument --rate:") and err.count("\n") == 1, err


def test_a_sweep_of_points_only_runs_just_those_points(tmp_path):
    from batchlab.studies import sweep
    config = {"points": [{"requests": 3, "policy": "fixed-window"}, {"requests": 4}]}
    assert sweep.expand(config) == config["points"]
    assert sweep.expand({"base": {"requests": 3}}) == [{"requests": 3}]
