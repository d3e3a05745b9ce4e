"""Workloads: distributions and arrival processes against their analytic moments, seeded
determinism, the closed-loop layout, the trace loader and every configuration error.

Statistical checks use fixed seeds and tolerances of a few standard errors computed from the
distribution itself, so they are deterministic and would still pass for almost any seed.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from batchlab.core.errors import ConfigError, TraceError
from batchlab.workloads import (ClosedLoop, ConstantLength, ConstantRate, EmpiricalLength, Gamma,
                                LogNormalLength, Poisson, UniformLength, Workload, WorkloadSpec,
                                load_trace, make_workload, parse_length)

N = 20_000


def rng(seed=0):
    return np.random.default_rng(seed)


def within(measured, expected, se, k=4.0):
    assert abs(measured - expected) <= k * se, (measured, expected, se)


# --- length distributions ---------------------------------------------------------------

def test_constant_length():
    d = ConstantLength(128)
    x = d.sample(rng(), 5)
    assert x.dtype == np.int64 and (x == 128).all()
    assert d.mean == 128.0 and d.describe() == "const(128)"


def test_uniform_length_is_inclusive_with_the_right_mean():
    d = UniformLength(3, 7)
    x = d.sample(rng(), N)
    assert x.dtype == np.int64 and set(np.unique(x)) == {3, 4, 5, 6, 7}
    sd = math.sqrt(((7 - 3 + 1) ** 2 - 1) / 12)
    within(x.mean(), d.mean, sd / math.sqrt(N))
    assert UniformLength(4, 4).sample(rng(), 3).tolist() == [4, 4, 4]
    assert UniformLength(1, 1e3).high == 1000   # an integral float means the integer


@pytest.mark.parametrize("dist", [
    LogNormalLength(512, 1.0),
    LogNormalLength(512, 2.0, max=2048),   # clipping pulls the mean well below 512
    LogNormalLength(2, 2.0),               # many draws below one token are lifted to 1
    LogNormalLength(2, 0.1),               # rounding alone shifts the mean
])
def test_lognormal_mean_is_the_mean_of_what_sample_returns(dist):
    x = dist.sample(rng(1), 100_000)
    assert x.dtype == np.int64 and x.min() >= 1
    if dist.max is not None:
        assert x.max() <= dist.max
    within(x.mean(), dist.mean, x.std() / math.sqrt(len(x)))


def test_lognormal_shape():
    assert LogNormalLength(512, 2.0, max=2048).mean < 450
    x = LogNormalLength(512, 1.0).sample(rng(2), N)
    # the cv of the underlying lognormal; rounding barely changes it at this size
    assert abs(x.std() / x.mean() - 1.0) < 0.1
    assert LogNormalLength(7.4, 0).sample(rng(), 4).tolist() == [7] * 4
    assert LogNormalLength(7.4, 0).mean == 7.0
    assert LogNormalLength(100, 1, max=50).describe() == "lognormal(mean=100, cv=1, max=50)"


def test_empirical_length_resamples_the_given_values():
    d = EmpiricalLength(np.array([10, 20, 20, 50]))
    x = d.sample(rng(), N)
    assert x.dtype == np.int64 and set(np.unique(x)) == {10, 20, 50}
    assert d.mean == 25.0
    within((x == 20).mean(), 0.5, 0.5 / math.sqrt(N))
    assert d.describe() == "empirical(n=4, mean=25.0)"
    assert EmpiricalLength([3.0]).sample(rng(), 2).tolist() == [3, 3]


# --- arrival processes ------------------------------------------------------------------

def check_times(t, n):
    assert t.shape == (n,) and t[0] == 0.0 and (np.diff(t) >= 0).all()


def test_poisson_rate():
    t = Poisson(5.0).sample(rng(), N)
    check_times(t, N)
    gaps = np.diff(t)
    within(gaps.mean(), 0.2, 0.2 / math.sqrt(len(gaps)), k=3)   # exponential: sd = mean
    within(gaps.std() / gaps.mean(), 1.0, 0.03)


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_gamma_rate_and_cv(cv):
    t = Gamma(2.0, cv).sample(rng(3), N)
    check_times(t, N)
    gaps = np.diff(t)
    n = len(gaps)
    within(gaps.mean(), 0.5, cv * 0.5 / math.sqrt(n), k=3)
    # sd of the sample sd is sigma * sqrt((kurtosis - 1) / 4n); gamma kurtosis is 3 + 6 cv^2
    se_cv = cv * math.sqrt((2 + 6 * cv ** 2) / (4 * n)) + cv / math.sqrt(n)
    within(gaps.std() / gaps.mean(), cv, se_cv)


def test_constant_rate_is_evenly_spaced():
    t = ConstantRate(4.0).sample(rng(), 5)
    assert t.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_closed_loop_layout():
    arrival, user, think = ClosedLoop(3, think_time=2.0).sample_layout(rng(), 7)
    assert arrival[:3].tolist() == [0.0, 0.0, 0.0] and np.isnan(arrival[3:]).all()
    assert user.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert think.tolist() == [0, 0, 0, 2, 2, 2, 2]
    # fewer requests than users: each is some user's first
    arrival, user, think = ClosedLoop(5).sample_layout(rng(), 2)
    assert arrival.tolist() == [0.0, 0.0] and user.tolist() == [0, 1] and think.tolist() == [0, 0]


def test_closed_loop_exponential_think_time():
    _, _, think = ClosedLoop(2, think_time=3.0, think="exponential").sample_layout(rng(), N)
    assert (think[:2] == 0).all()
    within(think[2:].mean(), 3.0, 3.0 / math.sqrt(N - 2), k=3)
    _, _, think = ClosedLoop(2, think="exponential").sample_layout(rng(), 4)
    assert (think == 0).all()


def test_one_local_user_workload():
    w = WorkloadSpec(ClosedLoop(1), ConstantLength(8), ConstantLength(4), 3).sample(0)
    assert w.is_closed_loop
    assert w.arrival[0] == 0.0 and np.isnan(w.arrival[1:]).all()
    assert w.user.tolist() == [0, 0, 0] and w.think.tolist() == [0, 0, 0]


# --- specs ------------------------------------------------------------------------------

SPEC = WorkloadSpec(Poisson(2.0), LogNormalLength(256, 1.0), UniformLength(1, 100), 50)


def same(a: Workload, b: Workload) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True)
               for f in ("arrival", "prompt_tokens", "output_tokens"))


def test_spec_is_deterministic_for_a_seed():
    assert same(SPEC.sample(rng(7)), SPEC.sample(rng(7)))
    assert same(SPEC.sample(7), SPEC.sample(np.random.default_rng(7)))
    assert not same(SPEC.sample(7), SPEC.sample(8))
    w = SPEC.sample(7)
    assert w.sample(rng(9)) is w and w.num_requests == 50 and not w.is_closed_loop


def test_spec_streams_are_independent():
    base = SPEC.sample(11)
    bursty = WorkloadSpec(Gamma(2.0, 4.0), SPEC.prompt, SPEC.output, 50).sample(11)
    assert np.array_equal(base.prompt_tokens, bursty.prompt_tokens)
    assert np.array_equal(base.output_tokens, bursty.output_tokens)
    assert not np.array_equal(base.arrival, bursty.arrival)
    longer = WorkloadSpec(SPEC.arrivals, ConstantLength(4000), SPEC.output, 50).sample(11)
    assert np.array_equal(base.arrival, longer.arrival)
    assert np.array_equal(base.output_tokens, longer.output_tokens)
    closed = WorkloadSpec(ClosedLoop(4, 1.0), SPEC.prompt, SPEC.output, 50).sample(11)
    assert np.array_equal(base.prompt_tokens, closed.prompt_tokens)


def test_spec_max_new_tokens_caps_outputs():
    w = WorkloadSpec(Poisson(1), ConstantLength(5), UniformLength(1, 100), 200,
                     max_new_tokens=30).sample(0)
    assert w.max_new_tokens == 30 and w.output_tokens.max() == 30
    assert SPEC.sample(0).max_new_tokens == SPEC.sample(0).output_tokens.max()


def test_spec_name():
    assert SPEC.sample(0).name == SPEC.describe()
    assert SPEC.describe().startswith("poisson(rate=2/s) x50, prompt lognormal(")
    assert WorkloadSpec(Poisson(1), ConstantLength(1), ConstantLength(1), 1,
                        name="chat").sample(0).name == "chat"


# --- make_workload and parse_length -----------------------------------------------------

def test_make_workload_names():
    assert make_workload("poisson", rate=3).arrivals == Poisson(3.0)
    assert make_workload("gamma", rate=3, cv=2).arrivals == Gamma(3.0, 2.0)
    assert make_workload("constant", rate=3).arrivals == ConstantRate(3.0)
    assert make_workload("closed", users=4, think_time=1.5).arrivals == ClosedLoop(4, 1.5)
    assert make_workload("closed-loop").arrivals == ClosedLoop(1)
    assert make_workload("local", think_time=2, think="exponential").arrivals == \
        ClosedLoop(1, 2.0, "exponential")
    spec = make_workload(Poisson(1), num_requests=7, prompt=64, output="uniform:1:9",
                         max_new_tokens=9, name="x")
    assert spec.num_requests == 7 and spec.prompt == ConstantLength(64)
    assert spec.output == UniformLength(1, 9) and spec.max_new_tokens == 9 and spec.name == "x"
    assert spec.sample(0).num_requests == 7


@pytest.mark.parametrize("text, dist", [
    ("128", ConstantLength(128)), ("const:16", ConstantLength(16)),
    ("uniform: 2 : 9", UniformLength(2, 9)), ("lognormal:512:1.5", LogNormalLength(512, 1.5)),
    ("lognormal:512:1:4096", LogNormalLength(512, 1.0, max=4096)), (12, ConstantLength(12)),
])
def test_parse_length(text, dist):
    assert parse_length(text) == dist


@pytest.mark.parametrize("call, message", [
    (lambda: make_workload("weibull", rate=1), "arrival 'weibull' is unknown"),
    (lambda: make_workload("poisson"), "rate .* is needed by arrival 'poisson'"),
    (lambda: make_workload("gamma", rate=1), "cv .* is needed by arrival 'gamma'"),
    (lambda: make_workload("poisson", rate=1, cv=2), "cv is not used by arrival 'poisson'"),
    (lambda: make_workload("closed", rate=1), "rate is not used by arrival 'closed'"),
    (lambda: make_workload("poisson", rate=1, users=3, think_time=1),
     "users is not used by arrival 'poisson'"),
    (lambda: make_workload("local", users=2), "users is not used"),
    (lambda: make_workload("poisson", rate=1, prompt="zipf:3"), "'zipf:3' is not understood"),
    (lambda: parse_length("uniform:1"), "is not understood"),
    (lambda: parse_length("lognormal:a:b"), "not a number"),
    (lambda: parse_length(2.5), "must be a length distribution"),
    (lambda: parse_length("uniform:1.5:3"), "UniformLength.low must be a positive integer"),
])
def test_make_workload_errors(call, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        call()


# --- every ConfigError ------------------------------------------------------------------

nan, inf = math.nan, math.inf
POSITIVE = "must be a positive finite number"
RATE = "must be a rate of at least 1e-09 per second"


@pytest.mark.parametrize("call, message", [
    (lambda: Poisson(-1.0), "Poisson.rate must be a rate of at least 1e-09 per second, got -1.0"),
    (lambda: Poisson(0), f"Poisson.rate {RATE}, got 0"),
    (lambda: Poisson(nan), f"Poisson.rate {RATE}, got nan"),
    (lambda: Poisson(inf), f"Poisson.rate {RATE}, got inf"),
    (lambda: Poisson("2"), f"Poisson.rate {RATE}, got '2'"),
    (lambda: Poisson(True), f"Poisson.rate {RATE}, got True"),
    (lambda: Gamma(0, 1), f"Gamma.rate {RATE}, got 0"),
    (lambda: Gamma(1, 0), f"Gamma.cv {POSITIVE}, got 0"),
    (lambda: Gamma(1, nan), f"Gamma.cv {POSITIVE}, got nan"),
    (lambda: ConstantRate(-2), f"ConstantRate.rate {RATE}, got -2"),
    (lambda: ClosedLoop(0), "ClosedLoop.num_users must be a positive integer, got 0"),
    (lambda: ClosedLoop(1.5), "ClosedLoop.num_users must be a positive integer, got 1.5"),
    (lambda: ClosedLoop(1, -1), "ClosedLoop.think_time must be a finite number >= 0, got -1"),
    (lambda: ClosedLoop(1, nan), "ClosedLoop.think_time must be a finite number >= 0, got nan"),
    (lambda: ClosedLoop(1, think="poisson"), "ClosedLoop.think must be one of 'constant', "
                                             "'exponential', got 'poisson'"),
    (lambda: ConstantLength(0), "ConstantLength.n must be a positive integer, got 0"),
    (lambda: ConstantLength(-3), "ConstantLength.n must be a positive integer, got -3"),
    (lambda: ConstantLength(2.5), "ConstantLength.n must be a positive integer, got 2.5"),
    (lambda: ConstantLength(nan), "ConstantLength.n must be a positive integer, got nan"),
    (lambda: UniformLength(0, 5), "UniformLength.low must be a positive integer, got 0"),
    (lambda: UniformLength(1, None), "UniformLength.high must be a positive integer, got None"),
    (lambda: UniformLength(9, 3), "UniformLength.low must be <= high, got low=9, high=3"),
    (lambda: LogNormalLength(nan, 1), "LogNormalLength.mean must be a finite number >= 1"),
    (lambda: LogNormalLength(0.5, 1), "LogNormalLength.mean must be a finite number >= 1"),
    (lambda: LogNormalLength(10, -1), "LogNormalLength.cv must be a finite number >= 0, got -1"),
    (lambda: LogNormalLength(10, inf), "LogNormalLength.cv must be a finite number >= 0, got inf"),
    (lambda: LogNormalLength(10, 1, max=0), "LogNormalLength.max must be a positive integer"),
    (lambda: EmpiricalLength([]), "EmpiricalLength.samples must be a non-empty list"),
    (lambda: EmpiricalLength(5), "EmpiricalLength.samples must be a non-empty list"),
    (lambda: EmpiricalLength([4, 0]), r"EmpiricalLength.samples\[1\] must be an integer >= 1, "
                                      "got 0"),
    (lambda: EmpiricalLength([4, 2.5]), r"EmpiricalLength.samples\[1\] must be an integer"),
    (lambda: EmpiricalLength([nan]), r"EmpiricalLength.samples\[0\] must be an integer"),
    (lambda: WorkloadSpec(Poisson(1), ConstantLength(1), ConstantLength(1), 0),
     "WorkloadSpec.num_requests must be a positive integer, got 0"),
    (lambda: WorkloadSpec(Poisson(1), ConstantLength(1), ConstantLength(1), 5, max_new_tokens=0),
     "WorkloadSpec.max_new_tokens must be a positive integer, got 0"),
    (lambda: WorkloadSpec("poisson", ConstantLength(1), ConstantLength(1), 5),
     "WorkloadSpec.arrivals must be an object with sample"),
    (lambda: WorkloadSpec(Poisson(1), 128, ConstantLength(1), 5),
     "WorkloadSpec.prompt must be an object with sample and mean"),
    (lambda: WorkloadSpec(Poisson(1), ConstantLength(1), None, 5),
     "WorkloadSpec.output must be an object with sample and mean"),
    (lambda: load_trace("t.csv", time_scale=0), "load_trace.time_scale must be a positive"),
    (lambda: load_trace("t.csv", time_scale=nan), "load_trace.time_scale must be a positive"),
    (lambda: load_trace("t.csv", limit=0), "load_trace.limit must be a positive integer"),
    (lambda: load_trace("t.csv", max_new_tokens=-1), "load_trace.max_new_tokens must be"),
    (lambda: load_trace("t.parquet"), "load_trace.path must end in .csv"),
])
def test_config_errors_name_class_field_and_value(call, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        call()


# --- traces -----------------------------------------------------------------------------

AZURE_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def write(tmp_path, text, name="trace.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_azure_csv_with_seven_fractional_digits(tmp_path):
    path = write(tmp_path, AZURE_HEAD +
                 "2023-11-16 18:17:03.9799600,4808,10\n"
                 "2023-11-16 18:17:04.0319601,3180,8\n"
                 "2023-11-16 18:17:05,100,1\n"
                 "2023-11-16 18:17:05.5,100,2\n"
                 "2023-11-16 23:59:59.9999999,7,7\n"
                 "2023-11-17 00:00:00.0000001,9,9\n")
    w = load_trace(path)
    expected = [0.0, 0.0520001, 1.02004, 1.52004, 20576.0200399, 20576.0200401]
    np.testing.assert_allclose(w.arrival, expected, rtol=0, atol=1e-9)
    assert w.prompt_tokens.tolist() == [4808, 3180, 100, 100, 7, 9]
    assert w.output_tokens.tolist() == [10, 8, 1, 2, 7, 9]
    assert w.name == "trace.csv" and w.max_new_tokens == 10 and not w.is_closed_loop


def test_azure_timestamps_with_zone_and_t(tmp_path):
    path = write(tmp_path, AZURE_HEAD + "2023-11-16T10:00:00Z,1,1\n"
                 "2023-11-16 11:00:01.25+01:00,1,1\n")
    np.testing.assert_allclose(load_trace(path).arrival, [0.0, 1.25], atol=1e-9)


def test_plain_csv_sorted_stably_scaled_and_limited(tmp_path):
    path = write(tmp_path, "output_tokens,note,arrival,prompt_tokens\n"
                 "1,a,10.0,100\n"
                 "2,b,4.0,200\n"
                 "\n"
                 "3,c,10.0,300\n"
                 "4,d,12.5,400\n")
    w = load_trace(path)
    assert w.arrival.tolist() == [0.0, 6.0, 6.0, 8.5]
    assert w.prompt_tokens.tolist() == [200, 100, 300, 400]   # the tie at 10.0 keeps file order
    assert w.output_tokens.tolist() == [2, 1, 3, 4]
    assert load_trace(path, time_scale=0.5).arrival.tolist() == [0.0, 3.0, 3.0, 4.25]
    limited = load_trace(path, limit=2)   # the first two lines of the file, then sorted
    assert limited.prompt_tokens.tolist() == [200, 100] and limited.arrival.tolist() == [0, 6]
    capped = load_trace(path, max_new_tokens=2)
    assert capped.output_tokens.tolist() == [2, 1, 2, 2] and capped.max_new_tokens == 2


@pytest.mark.parametrize("suffix", [".jsonl", ".json-lines"])
def test_jsonl(tmp_path, suffix):
    rows = [{"arrival": 1.5, "prompt_tokens": 10, "output_tokens": 3, "extra": "x"},
            {"arrival": 0.5, "prompt_tokens": 20.0, "output_tokens": "4"}]
    path = write(tmp_path, "\n".join(map(json.dumps, rows)) + "\n\n", "t" + suffix)
    w = load_trace(path)
    assert w.arrival.tolist() == [0.0, 1.0] and w.prompt_tokens.tolist() == [20, 10]
    assert w.output_tokens.tolist() == [4, 3]


def test_jsonl_azure_scheme(tmp_path):
    rows = [{"TIMESTAMP": "2023-11-16 18:17:03.9799600", "ContextTokens": 5,
             "GeneratedTokens": 6},
            {"TIMESTAMP": "2023-11-16 18:17:04.0000000", "ContextTokens": 7,
             "GeneratedTokens": 8}]
    path = write(tmp_path, "\n".join(map(json.dumps, rows)), "t.jsonl")
    np.testing.assert_allclose(load_trace(path).arrival, [0.0, 0.02004], atol=1e-9)


def test_zero_generated_tokens_count_as_one(tmp_path):
    path = write(tmp_path, AZURE_HEAD + "2023-11-16 18:17:03,5,0\n2023-11-16 18:17:04,5,0\n"
                 "2023-11-16 18:17:05,5,3\n")
    with pytest.warns(UserWarning, match="2 request.s. with 0 output tokens counted as 1"):
        w = load_trace(path)
    assert w.output_tokens.tolist() == [1, 1, 3]


def test_no_warning_without_zero_outputs(tmp_path):
    path = write(tmp_path, AZURE_HEAD + "2023-11-16 18:17:03,5,2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_trace(path)


TS = "2023-11-16 18:17:03.9799600"
OK = f"{TS},10,5\n"
PLAIN_HEAD = "arrival,prompt_tokens,output_tokens\n"


@pytest.mark.parametrize("name, text, line, field, problem", [
    ("t.csv", "TIMESTAMP,ContextTokens\n" + f"{TS},1\n", 1, "GeneratedTokens", "is missing"),
    ("t.csv", "arrival,prompt_tokens\n1,2\n", 1, "output_tokens", "is missing"),
    ("t.csv", "a,b,c\n1,2,3\n", 1, None, "no known columns"),
    ("t.csv", AZURE_HEAD + OK + f"{TS},x,5\n", 3, "ContextTokens", "not an integer: 'x'"),
    ("t.csv", AZURE_HEAD + OK + f"{TS},10,12.5\n", 3, "GeneratedTokens", "not an integer"),
    ("t.csv", AZURE_HEAD + OK + f"{TS},,5\n", 3, "ContextTokens", "is empty"),
    ("t.csv", AZURE_HEAD + OK + f"{TS},0,5\n", 3, "ContextTokens", "must be >= 1 token, got 0"),
    ("t.csv", AZURE_HEAD + OK + f"{TS},10,-3\n", 3, "GeneratedTokens", "must be >= 1 token"),
    ("t.csv", AZURE_HEAD + OK + "yesterday,10,5\n", 3, "TIMESTAMP", "is not a timestamp"),
    ("t.csv", AZURE_HEAD + OK + "2023-11-16 18:17:03.12345678901,1,1\n", 3, "TIMESTAMP",
     "is not a timestamp"),
    ("t.csv", AZURE_HEAD + OK + "2023-02-30 18:17:03,10,5\n", 3, "TIMESTAMP", "impossible date"),
    ("t.csv", AZURE_HEAD + OK + "2023-11-16 25:17:03,10,5\n", 3, "TIMESTAMP",
     "impossible time of day"),
    ("t.csv", AZURE_HEAD + OK + f"{TS},10\n", 3, "GeneratedTokens", "has 2 fields, the header "
                                                                    "has 3"),
    ("t.csv", AZURE_HEAD + OK + f"{TS},10,5,7\n", 3, None, "has 4 fields, the header has 3"),
    ("t.csv", AZURE_HEAD + OK + "\n\n" + f"{TS},10,x\n", 5, "GeneratedTokens", "not an integer"),
    ("t.csv", PLAIN_HEAD + "0.5,1,1\nnan,1,1\n", 3, "arrival", "not a finite number"),
    ("t.csv", PLAIN_HEAD + "soon,1,1\n", 2, "arrival", "not a finite number"),
    ("t.csv", AZURE_HEAD, 1, None, "has a header but no requests"),
    ("t.csv", "", None, None, "is empty"),
    ("t.jsonl", '{"arrival": 0, "prompt_tokens": 1, "output_tokens": 1}\n{oops\n', 2, None,
     "is not valid JSON"),
    ("t.jsonl", "[1, 2, 3]\n", 1, None, "must be a JSON object"),
    ("t.jsonl", '\n{"arrival": 0, "prompt_tokens": 1}\n', 2, "output_tokens", "is missing"),
    ("t.jsonl", '{"arrival": 0, "prompt_tokens": 1, "output_tokens": 1}\n'
                '{"arrival": 1, "output_tokens": 1}\n', 2, "prompt_tokens", "is missing"),
    ("t.jsonl", '{"arrival": 0, "prompt_tokens": true, "output_tokens": 1}\n', 1,
     "prompt_tokens", "not an integer: True"),
    ("t.jsonl", '{"arrival": "later", "prompt_tokens": 1, "output_tokens": 1}\n', 1, "arrival",
     "not a finite number"),
    ("t.jsonl", '{"TIMESTAMP": 17, "ContextTokens": 1, "GeneratedTokens": 1}\n', 1,
     "TIMESTAMP", "is not a timestamp"),
    ("t.jsonl", "\n\n", None, None, "is empty"),
])
def test_trace_errors_name_line_and_field(tmp_path, name, text, line, field, problem):
    path = write(tmp_path, text, name)
    with pytest.raises(TraceError) as info:
        load_trace(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    assert problem in err.problem
    where = str(path) if line is None else f"{path}:{line}"
    assert str(err).startswith(where) and (field is None or repr(field) in str(err))


def test_missing_trace_file(tmp_path):
    with pytest.raises(TraceError, match="not found") as info:
        load_trace(tmp_path / "nope.csv")
    assert info.value.line is None
