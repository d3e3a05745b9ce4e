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
    "huge-tokens.csv": HEADER + "0,99999999999999999999999,3\n",
    "huge-tokens.jsonl": '{"arrival": 0, "prompt_tokens": 99999999999999999999999, '
                         '"output_tokens": 3}\n',
    "far-arrival.csv": HEADER + "1e300,5,3\n",
}
BINARY = {
    "binary.csv": bytes(range(256)) * 4,
    "binary.jsonl": b"\x00\xfb\xff" * 100,
    "utf16.csv": (HEADER + "0,5,3\n").encode("utf-16"),
    "nul.csv": HEADER.encode() + b"0,5\x00,3\n",
    "huge-field.csv": HEADER.encode() + b"0," + b"9" * 200_000 + b",3\n",
    "sweep-binary.toml": b"\x00\xfb\xff" * 10,
}
CONFIGS = {   # compare --config files with wrong types or missing keys
    "no-key.toml": '[run]\n[traffic]\nrates=[1]\n[[models]]\nmodel="llama-3-8b"\n'
                   'gpu="h100"\nlabel="x"\n',
    "run-string.toml": 'run="x"\n[traffic]\nrates=[1]\n[[models]]\nkey="a"\nlabel="x"\n',
    "rates-int.toml": '[run]\n[traffic]\nrates=1\n[[models]]\nkey="a"\nlabel="x"\n',
    "models-table.toml": '[run]\n[traffic]\n[models]\nkey="a"\n',
    "study-no-knob.toml": '[run]\n[traffic]\n[[models]]\nkey="a"\nlabel="x"\n'
                          '[studies.s]\npolicy="continuous"\n',
    "study-model.toml": '[run]\n[traffic]\n[[models]]\nkey="a"\nlabel="x"\n[studies.s]\n'
                        'policy="continuous"\nknob="window"\nvalues=[0.1]\nmodel="zz"\n'
                        'rate=1\n',
    "variants-string.toml": '[run]\n[traffic]\n[[models]]\nkey="a"\nlabel="x"\n'
                            '[variants]\ncontinuous="fast"\n',
    "points-only.toml": '[[points]]\nrequests=0\n',
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
     "Poisson.rate must be a rate of at least 1e-09 per second, got nan"),
    ("rate-negative", lambda t: Poisson(-1.0), ConfigError,
     "Poisson.rate must be a rate of at least 1e-09 per second, got -1.0"),
    ("rate-zero", lambda t: ConstantRate(0), ConfigError,
     "ConstantRate.rate must be a rate of at least 1e-09"),
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
     "rate (requests per second) is needed by arrival 'poisson'"),
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
    ("seed-negative", lambda t: simulate("fixed-window", ONE, affine_devices(1), seed=-1),
     ConfigError, "seed must be an int from 0 to 9223372036854775807, got -1"),
    ("workload-none", lambda t: simulate("fixed-window", None, affine_devices(1)),
     ConfigError, "simulate needs a Workload or a WorkloadSpec"),
    ("device-not-a-device", lambda t: simulate("fixed-window", ONE, [object()]), ConfigError,
     "simulate: device 0 (<object object at"),
    ("workload-int64-overflow", lambda t: Workload([0.0], [5], [2**63]), ConfigError,
     "Workload token counts must be integers from 1 to 2147483647"),
    ("workload-too-many-tokens", lambda t: Workload([0.0], [2**40], [1]), ConfigError,
     "a prompt or output has more than 2147483647 tokens"),
    ("requests-absurd", lambda t: make_workload(rate=1.0, num_requests=10**23), ConfigError,
     "num_requests must be a positive integer <= 100000000"),
    ("cv-absurd", lambda t: Gamma(1.0, 1e308), ConfigError,
     "Gamma.cv must be a positive finite number <= 1000, got 1e+308"),
    ("length-absurd", lambda t: make_workload(rate=1.0, prompt="uniform:1:99999999999999999999"),
     ConfigError, "UniformLength.high must be a positive integer <= 2147483647"),
    ("max-new-tokens-absurd", lambda t: make_workload(rate=1.0, max_new_tokens=10**20),
     ConfigError, "max_new_tokens must be a positive integer <= 2147483647"),
    ("trace-binary", lambda t: load_trace(t / "binary.csv"), TraceError,
     "binary.csv: is not text in UTF-8 or UTF-16 (byte 0x80"),
    ("trace-binary-jsonl", lambda t: load_trace(t / "binary.jsonl"), TraceError,
     "binary.jsonl: is not text in UTF-8 or UTF-16"),
    ("trace-nul", lambda t: load_trace(t / "nul.csv"), TraceError,
     "nul.csv:2: field 'prompt_tokens': is not an integer"),
    ("trace-huge-field", lambda t: load_trace(t / "huge-field.csv"), TraceError,
     "huge-field.csv:2: is not a readable CSV line (field larger than field limit"),
    ("trace-huge-tokens", lambda t: load_trace(t / "huge-tokens.csv"), TraceError,
     "huge-tokens.csv:2: field 'prompt_tokens': must be at most 2147483647 tokens"),
    ("trace-huge-tokens-jsonl", lambda t: load_trace(t / "huge-tokens.jsonl"), TraceError,
     "huge-tokens.jsonl:1: field 'prompt_tokens': must be at most 2147483647 tokens"),
    ("trace-far-arrival", lambda t: load_trace(t / "far-arrival.csv"), TraceError,
     "far-arrival.csv:2: field 'arrival': must be within 1e+09 seconds of 0"),
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
     ConfigError, "policy 'fixed-window': window must be a duration from 0 to 1e+09 seconds, "
     "got -1.0"),
    ("policy-parameter-nan", lambda t: load_policy("fixed-window", window="nan"), ConfigError,
     "policy 'fixed-window': parameter 'window' must be a finite float, got 'nan'"),
    ("policy-parameter-zero", lambda t: load_policy("fixed-window", max_batch=0), ConfigError,
     "policy 'fixed-window': max_batch must be > 0, got 0"),
    ("policy-parameter-name", lambda t: load_policy("fixed-window", name="x"), ConfigError,
     "policy 'fixed-window' has no parameter 'name'"),
    ("policy-parameter-inf", lambda t: load_policy("fixed-window", window=float("inf")),
     ConfigError, "parameter 'window' must be a finite float, got inf"),
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

HAS_COSTMODEL = importlib.util.find_spec("batchlab.costmodel") is not None


@pytest.fixture
def traces(tmp_path):
    for name, text in {**TRACES, **CONFIGS}.items():
        (tmp_path / name).write_text(text)
    for name, data in BINARY.items():
        (tmp_path / name).write_bytes(data)
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
    err = capsys.readouterr().err
    assert "'nan' is not a finite number" in err
    assert err.startswith("batchlab: error: argument --rate:") and err.count("\n") == 1, err


def test_a_sweep_of_points_only_runs_just_those_points(tmp_path):
    from batchlab.studies import sweep
    config = {"points": [{"requests": 3, "policy": "fixed-window"}, {"requests": 4}]}
    assert sweep.expand(config) == config["points"]
    assert sweep.expand({"base": {"requests": 3}}) == [{"requests": 3}]


def test_utf16_trace_is_read(traces):
    workload = load_trace(traces / "utf16.csv")
    assert workload.prompt_tokens.tolist() == [5] and workload.output_tokens.tolist() == [3]


BROKEN_PLUGINS = '''
raise RuntimeError("this plugin needs a GPU driver")
'''
ODD_PLUGINS = '''
import sys


class Base:
    def __init__(self, name: str = "odd"):
        self.name = name
        self.inner = None

    def add(self, request, now):
        self._inner().add(request, now)

    def schedule(self, now, devices):
        return self._inner().schedule(now, devices)

    def update(self, batch, result, now):
        self._inner().update(batch, result, now)

    def abort(self, request_id):
        self._inner().abort(request_id)

    def _inner(self):
        if self.inner is None:
            from batchlab import load_policy
            self.inner = load_policy("fixed-window")
        return self.inner


class Named(Base):
    """Has a parameter called name."""


class Exploding(Base):
    def __init__(self):
        raise RuntimeError("no licence server")


class Quitter(Base):
    def update(self, batch, result, now):
        sys.exit(0)
'''


@pytest.fixture
def broken_plugins(tmp_path, monkeypatch):
    """A distribution with a policy whose module does not exist and one whose module raises
    while it is imported."""
    (tmp_path / "brokenplug.py").write_text(BROKEN_PLUGINS)
    info = tmp_path / "brokenplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 1.0\n")
    (tmp_path / "oddplug.py").write_text(ODD_PLUGINS)
    (info / "entry_points.txt").write_text(textwrap.dedent("""
        [batchlab.policies]
        ghost = brokenplug_missing_module:Policy
        grumpy = brokenplug:Policy
        named = oddplug:Named
        exploding = oddplug:Exploding
        quitter = oddplug:Quitter
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


def test_a_plugin_with_a_name_parameter_loads_through_every_path(broken_plugins, capsys):
    assert load_policy("named", name="mine").name == "mine"
    assert main(["run", "--policy", "named", "--set", "name=mine", "--requests", "3"]) == 0


@pytest.mark.parametrize("argv,words", [
    (["run", "--policy", "exploding"], "policy 'exploding' from brokenplug 1.0 "
     "(oddplug:Exploding) failed to construct: RuntimeError: no licence server"),
    (["run", "--policy", "quitter", "--requests", "3"],
     "policy 'odd' broke rule 'raised': update() raised SystemExit: 0"),
], ids=["init-raises", "sys-exit-in-update"])
def test_a_plugin_that_misbehaves_is_named_and_the_run_fails(argv, words, broken_plugins,
                                                            capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
