"""The bad-input catalogue through the Python API: everything a user can get wrong in a trace
file, a workload, a device, a run, fault injection or a policy's parameters, each with the
one-line message that says what is wrong and how to mend it.

A row is (what the user did, the exception, words its message must contain); the CLI prints
the same errors as one line (test_bad_input_cli.py). Cost-model rows skip themselves if
`batchlab.costmodel` is not installed. The bad files are conftest's `traces` fixture.
"""

from __future__ import annotations

import numpy as np
import pytest

from batchlab import (AffineDevice, ConfigError, TraceError, Workload, affine_devices,
                      load_policy, simulate)
from batchlab.engines.faults import Faults
from batchlab.core.errors import BatchlabError
from batchlab.workloads import (ConstantLength, ConstantRate, Gamma, LogNormalLength, Poisson,
                                UniformLength, load_trace, make_workload)
from conftest import HAS_COSTMODEL, one_line

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


@pytest.mark.parametrize("call,error,words", [pytest.param(*row[1:], id=row[0]) for row in API])
def test_python_api_names_the_mistake(call, error, words, traces):
    with pytest.raises(error) as info:
        call(traces)
    assert isinstance(info.value, BatchlabError)   # the CLI prints these as one line
    assert words in one_line(info.value)


@pytest.mark.skipif(not HAS_COSTMODEL, reason="batchlab.costmodel is not installed")
@pytest.mark.parametrize("call,words", [pytest.param(*row[1:], id=row[0]) for row in COSTMODEL])
def test_cost_model_presets_name_the_mistake(call, words):
    import batchlab.costmodel as cm
    with pytest.raises(ConfigError) as info:
        call(cm)
    assert words in one_line(info.value)


def test_utf16_trace_is_read(traces):
    workload = load_trace(traces / "utf16.csv")
    assert workload.prompt_tokens.tolist() == [5] and workload.output_tokens.tolist() == [3]
