"""Synthetic workloads: length distributions and arrival processes against their analytic
moments, seeded determinism of specs, the closed-loop layout, make_workload and parse_length,
and every configuration error. The trace loader is in test_workloads_traces.py.

Statistical checks use fixed seeds and tolerances of a few standard errors computed from the
distribution itself, so they are deterministic and would still pass for almost any seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchlab.core.errors import ConfigError
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
