"""The bad-input catalogue: everything a user can get wrong, through the public entry points,
each with the one-line message that says what is wrong and how to mend it.

A row is (what the user did, the exception, words its message must contain). The Python API
raises the error; the CLI prints it as one line, "batchlab: error: ...", and exits with 2.
Cost-model rows skip themselves if `batchlab.costmodel` is not installed.
"""

from __future__ import annotations

import importlib.util
import textwrap

import numpy as np
import pytest

from batchlab import (AffineDevice, ConfigError, TraceError, Workload, affine_devices,
                      load_policy, simulate)
from batchlab.engines.faults import Faults
from batchlab.cli import main
from batchlab.core.errors import BatchlabError, PluginError
from batchlab.workloads import (ConstantLength, ConstantRate, Gamma, LogNormalLength, Poisson,
                                UniformLength, load_trace, make_workload)

HEADER = "arrival,prompt_tokens,output_tokens\n"
TRACES = {
    "empty.csv": "",
    "header-only.csv": HEADER,
    "missing-column.csv": "arrival,prompt_tokens\n0,10\n",
    "unknown-columns.csv": "a,b,c\n1,2,3\n",
    "not-a-number.csv": HEADER + "0,10,3\n0.5,many,2\n",
    "negative.csv": HEADER + "0,-5,3\n",
    "nan-arrival.csv": HEADER + "nan,5,3\n",
    "short-row.csv": HEADER + "0,5\n",
    "bad.jsonl": '{"arrival": 0, "prompt_tokens": 3, "output_tokens": 1}\n{oops\n',
    "trace.txt": HEADER + "0,5,1\n",
}
ONE = Workload([0.0], [5], [1])

# (id, call(tmp_path), exception, words the message contains)
API = [
    # -- trace files
    ("trace-empty", lambda t: load_trace(t / "empty.csv"), TraceError,
     "empty.csv: is empty; a trace needs a header line"),
    ("trace-header-only", lambda t: load_trace(t / "header-only.csv"), TraceError,
     "header-only.csv:1: has a header but no requests"),
    ("trace-missing-column", lambda t: load_trace(t / "missing-column.csv"), TraceError,
     "missing-column.csv:1: field 'output_tokens': column 'output_tokens' is missing"),
    ("trace-unknown-columns", lambda t: load_trace(t / "unknown-columns.csv"), TraceError,
     "no known columns (found 'a', 'b', 'c')"),
    ("trace-not-a-number", lambda t: load_trace(t / "not-a-number.csv"), TraceError,
     "not-a-number.csv:3: field 'prompt_tokens': is not an integer: 'many'"),
    ("trace-negative", lambda t: load_trace(t / "negative.csv"), TraceError,
     "negative.csv:2: field 'prompt_tokens': must be >= 1 token, got -5"),
    ("trace-nan-arrival", lambda t: load_trace(t / "nan-arrival.csv"), TraceError,
     "nan-arrival.csv:2: field 'arrival': is not a finite number of seconds"),
    ("trace-short-row", lambda t: load_trace(t / "short-row.csv"), TraceError,
     "short-row.csv:2: field 'output_tokens': has 2 fields, the header has 3"),
    ("trace-bad-json", lambda t: load_trace(t / "bad.jsonl"), TraceError,
     "bad.jsonl:2: is not valid JSON"),
    ("trace-suffix", lambda t: load_trace(t / "trace.txt"), ConfigError,
     "load_trace.path must end in .csv"),
    ("trace-missing-file", lambda t: load_trace(t / "nowhere.csv"), TraceError,
     "nowhere.csv: not found (no such file)"),
    ("trace-time-scale-zero", lambda t: load_trace(t / "negative.csv", time_scale=0),
     ConfigError, "load_trace.time_scale must be a positive finite number, got 0"),
    # -- workloads: NaN, negative and zero parameters
    ("rate-nan", lambda t: Poisson(float("nan")), ConfigError,
     "Poisson.rate must be a positive finite number, got nan"),
    ("rate-negative", lambda t: Poisson(-1.0), ConfigError,
     "Poisson.rate must be a positive finite number, got -1.0"),
    ("rate-zero", lambda t: ConstantRate(0), ConfigError, "ConstantRate.rate must be a positive"),
    ("cv-negative", lambda t: Gamma(1.0, -1.0), ConfigError, "Gamma.cv must be a positive"),
    ("length-zero", lambda t: ConstantLength(0), ConfigError,
     "ConstantLength.n must be a positive integer, got 0"),
    ("length-nan", lambda t: LogNormalLength(float("nan"), 1.0), ConfigError,
     "LogNormalLength.mean must be a finite number >= 1"),
    ("length-reversed", lambda t: UniformLength(10, 5), ConfigError,
     "UniformLength.low must be <= high"),
    ("requests-zero", lambda t: make_workload(rate=1.0, num_requests=0), ConfigError,
     "num_requests must be a positive integer, got 0"),
    ("arrival-unknown", lambda t: make_workload("sometimes", rate=1.0), ConfigError,
     "arrival 'sometimes' is unknown"),
    ("rate-missing", lambda t: make_workload("poisson"), ConfigError,
     "arrival 'poisson' needs rate"),
    ("length-spec", lambda t: make_workload(rate=1.0, prompt="lognormal:abc"), ConfigError,
     "length 'lognormal:abc' is not understood"),
    ("workload-empty", lambda t: Workload([], [], []), ConfigError, "has no requests"),
    ("workload-zero-output", lambda t: Workload([0.0], [5], [0]), ConfigError,
     "every prompt and output needs >= 1 token"),
    ("workload-negative-arrival", lambda t: Workload([-1.0], [5], [1]), ConfigError,
     "arrival times must be finite and >= 0"),
    ("workload-infinite-arrival", lambda t: Workload([np.inf], [5], [1]), ConfigError,
     "arrival times must be finite and >= 0"),
    ("workload-lengths-differ", lambda t: Workload([0.0, 1.0], [5], [1, 1]), ConfigError,
     "prompt_tokens has 1 entries, arrival has 2"),
    ("workload-cap-too-small", lambda t: Workload([0.0], [5], [9], max_new_tokens=3),
     ConfigError, "max_new_tokens=3 is below the longest output (9)"),
    # -- devices and runs
    ("device-negative", lambda t: AffineDevice(fixed=-1.0), ConfigError,
     "AffineDevice.fixed must be a finite number >= 0, got -1.0"),
    ("device-nan", lambda t: AffineDevice(per_token=float("nan")), ConfigError,
     "AffineDevice.per_token must be a finite number >= 0, got nan"),
    ("device-no-memory", lambda t: AffineDevice(kv_capacity_tokens=0), ConfigError,
     "AffineDevice.kv_capacity_tokens must be a positive int, got 0"),
    ("devices-zero", lambda t: affine_devices(0), ConfigError,
     "number of devices must be a positive int, got 0"),
    ("no-devices", lambda t: simulate("fixed-window", ONE, []), ConfigError,
     "simulate needs at least one device"),
    ("device-names-clash", lambda t: simulate("fixed-window", ONE, [AffineDevice()] * 2),
     ConfigError, "device names must be unique"),
    ("seed-not-int", lambda t: simulate("fixed-window", ONE, affine_devices(1), seed="x"),
     ConfigError, "seed must be an int, got 'x'"),
    # -- fault injection
    ("failure-rate-one", lambda t: Faults(failure_rate=1.5), ConfigError,
     "Faults.failure_rate must be a probability in [0, 1)"),
    ("failure-rate-nan", lambda t: Faults(failure_rate=float("nan")), ConfigError,
     "Faults.failure_rate must be a probability in [0, 1)"),
    ("repair-negative", lambda t: Faults(repair_time=-1), ConfigError,
     "Faults.repair_time must be a finite number of seconds >= 0, got -1"),
    ("failure-time-nan", lambda t: Faults(schedule=[(float("nan"), "dev0")]), ConfigError,
     "Faults.schedule: failure time nan must be a finite number"),
    ("failure-schedule-shape", lambda t: Faults(schedule=["dev0"]), ConfigError,
     "Faults.schedule must be (time, device name) pairs"),
    ("failure-unknown-device", lambda t: simulate(
        "fixed-window", ONE, affine_devices(1), faults=Faults(schedule=[(1.0, "gpu7")])),
     ConfigError, "Faults.schedule names device 'gpu7', which is not one of ['dev0']"),
    # -- policies
    ("policy-unknown", lambda t: load_policy("nope"), ConfigError,
     "unknown policy 'nope'; available: "),
    ("policy-parameter-unknown", lambda t: load_policy("fixed-window", nope=1), ConfigError,
     "policy 'fixed-window' has no parameter 'nope'"),
    ("policy-parameter-negative", lambda t: load_policy("fixed-window", window=-1.0),
     ConfigError, "policy 'fixed-window': window must be >= 0, got -1.0"),
    ("policy-parameter-nan", lambda t: load_policy("fixed-window", window="nan"), ConfigError,
     "policy 'fixed-window': parameter 'window' must be a finite float, got 'nan'"),
    ("policy-parameter-zero", lambda t: load_policy("fixed-window", max_batch=0), ConfigError,
     "policy 'fixed-window': max_batch must be > 0, got 0"),
]

COSTMODEL = [
    ("gpu-unknown", lambda cm: cm.get_gpu("h9000"), "unknown GPU preset 'h9000'; choose one of"),
    ("model-unknown", lambda cm: cm.get_model("gpt-9"),
     "unknown model preset 'gpt-9'; choose one of"),
    ("model-does-not-fit", lambda cm: cm.make_devices("deepseek-v3", "h200", 1),
     "deepseek-v3 does not fit on 1 x h200"),
    ("gpus-zero", lambda cm: cm.make_devices("llama-3-8b", "h100", 0),
     "field 'num_gpus' is 0; it must be >= 1"),
    ("price-nan", lambda cm: cm.make_devices("llama-3-8b", "h100", 1,
                                             price_per_hour=float("nan")),
     "field 'price_per_hour' is nan; give a finite number"),
    ("tp-does-not-divide", lambda cm: cm.make_devices("llama-3-8b", "h100", 4, tp=3),
     "tp=3 must be >= 1 and divide"),
]

# (id, argv with {tmp} for the trace folder, words the one-line message contains)
CLI = [
    ("trace-empty", ["run", "--trace", "{tmp}/empty.csv"], "empty.csv: is empty"),
    ("trace-row", ["run", "--trace", "{tmp}/not-a-number.csv"],
     "not-a-number.csv:3: field 'prompt_tokens'"),
    ("trace-missing", ["run", "--trace", "{tmp}/nowhere.csv"], "nowhere.csv: not found"),
    ("rate-negative", ["run", "--rate", "-1"], "--rate must be a finite number > 0, got -1.0"),
    ("requests-zero", ["run", "--requests", "0"], "--requests must be an integer from 1 to"),
    ("devices-zero", ["run", "--devices", "0"], "--devices must be >= 1"),
    ("policy-unknown", ["run", "--policy", "nope"], "unknown policy 'nope'"),
    ("policy-parameter-nan", ["run", "--policy", "fixed-window", "--set", "window=nan"],
     "parameter 'window' must be a finite float, got 'nan'"),
    ("policy-parameter-negative", ["run", "--policy", "fixed-window", "--set", "window=-1"],
     "window must be >= 0"),
    ("gpu-unknown", ["run", "--model", "llama-3-8b", "--gpu", "h9000"],
     "unknown GPU preset 'h9000'"),
    ("model-unknown", ["run", "--model", "gpt-9", "--gpu", "h200"],
     "unknown model preset 'gpt-9'"),
    ("model-does-not-fit", ["run", "--model", "deepseek-v3", "--gpu", "h200"],
     "deepseek-v3 does not fit on 1 x h200"),
]

HAS_COSTMODEL = importlib.util.find_spec("batchlab.costmodel") is not None


@pytest.fixture
def traces(tmp_path):
    for name, text in TRACES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def _one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


@pytest.mark.parametrize("call,error,words", [pytest.param(*row[1:], id=row[0]) for row in API])
def test_python_api_names_the_mistake(call, error, words, traces):
    with pytest.raises(error) as info:
        call(traces)
    assert isinstance(info.value, BatchlabError)   # the CLI prints these as one line
    assert words in _one_line(info.value)


@pytest.mark.skipif(not HAS_COSTMODEL, reason="batchlab.costmodel is not installed")
@pytest.mark.parametrize("call,words", [pytest.param(*row[1:], id=row[0]) for row in COSTMODEL])
def test_cost_model_presets_name_the_mistake(call, words):
    import batchlab.costmodel as cm
    with pytest.raises(ConfigError) as info:
        call(cm)
    assert words in _one_line(info.value)


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
    assert "'nan' is not a finite number" in capsys.readouterr().err


BROKEN_PLUGINS = '''
raise RuntimeError("this plugin needs a GPU driver")
'''


@pytest.fixture
def broken_plugins(tmp_path, monkeypatch):
    """A distribution with a policy whose module does not exist and one whose module raises
    while it is imported."""
    (tmp_path / "brokenplug.py").write_text(BROKEN_PLUGINS)
    info = tmp_path / "brokenplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""
        [batchlab.policies]
        ghost = brokenplug_missing_module:Policy
        grumpy = brokenplug:Policy
    """))
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize("name,words", [
    ("ghost", "policy 'ghost' from brokenplug 1.0 (brokenplug_missing_module:Policy) failed "
              "to import: ModuleNotFoundError"),
    ("grumpy", "policy 'grumpy' from brokenplug 1.0 (brokenplug:Policy) failed to import: "
               "RuntimeError: this plugin needs a GPU driver"),
], ids=["missing-module", "raises-on-import"])
def test_a_plugin_that_fails_to_import_is_named(name, words, broken_plugins, capsys):
    with pytest.raises(PluginError) as info:
        load_policy(name)
    assert words in _one_line(info.value)
    assert main(["run", "--policy", name, "--requests", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err
    # The others still load.
    assert load_policy("fixed-window").name == "fixed-window"
