"""Inter-token latency: every token gap of a run, booked into a bounded histogram."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchlab import AffineDevice, affine_devices, load_policy, simulate
from batchlab.core.gaps import MIN_GAP, NUM_BINS, GROWTH, GapHistogram, bin_of
from batchlab.studies.summary import format_summary
from batchlab.workloads import Workload, make_workload

_IN_RANGE = st.floats(MIN_GAP, MIN_GAP * GROWTH ** (NUM_BINS - 1))


@given(gaps=st.lists(_IN_RANGE, min_size=1, max_size=300), q=st.sampled_from([50, 90, 99]),
       split=st.integers(0, 300))
def test_percentiles_within_half_a_percent_of_the_exact_nearest_rank(gaps, q, split):
    gaps = np.array(gaps)
    hist = GapHistogram()
    hist.add(gaps[:split])  # booked in two parts, as steps come
    hist.add(gaps[split:])
    exact = np.sort(gaps)[max(1, math.ceil(q / 100 * gaps.size)) - 1]
    assert hist.percentile(q) == pytest.approx(exact, rel=0.005)
    assert hist.mean == pytest.approx(gaps.mean(), rel=1e-9)
    hist.check_valid()


def test_long_arrays_are_binned_in_pieces_as_in_one_pass():
    """bin_of works through more than BIN_CHUNK gaps a piece at a time (for speed): the same
    bins as the one-pass formula, edges, zeros and infinite gaps included."""
    from batchlab.core import gaps as G
    rng = np.random.default_rng(7)
    gaps = np.exp(rng.uniform(np.log(1e-8), np.log(1e11), 3 * G.BIN_CHUNK + 5))
    gaps[:4] = 0.0, np.inf, MIN_GAP, MIN_GAP * GROWTH ** (NUM_BINS - 1)
    one_pass = np.fmin((np.log(np.maximum(gaps, MIN_GAP)) - G._LOG_MIN) * G._INV_LOG,
                       NUM_BINS - 1).astype(np.int64)
    assert np.array_equal(G.bin_of(gaps), one_pass)
    assert np.array_equal(G.bin_of(gaps[:G.BIN_CHUNK]), one_pass[:G.BIN_CHUNK])


def test_flushes_into_kept_arrays_book_as_fresh_arrays_do(monkeypatch):
    """A flush bins into arrays the histogram keeps from the last one (speed): over many
    flushes of different sizes, weighted entries among them, the same counts, number, sum
    and longest gap as flushes into fresh arrays (SCRATCH 0), bit for bit."""
    from batchlab.core import gaps as G
    rng = np.random.default_rng(11)
    entries = []
    for i in range(700):
        gaps = rng.lognormal(-3, 2, int(rng.integers(1, 400)))
        times = 1 if i % 5 else (int(rng.integers(0, 4)) if i % 2 else
                                 rng.integers(0, 3, gaps.size))
        entries.append((gaps, times))

    def booked():
        hist = GapHistogram()
        for gaps, times in entries:
            if isinstance(times, int):
                hist.add_repeated(gaps, times)
            else:
                hist.add_weighted(gaps, times)
        return hist

    kept = booked()
    assert kept._scratch is not None  # flushed at least once, into kept arrays
    kept.flush()
    assert kept._scratch is None  # a finished histogram keeps none
    monkeypatch.setattr(G, "SCRATCH", 0)
    fresh = booked().flush()
    assert np.array_equal(kept.counts, fresh.counts)
    assert (kept.num_gaps, kept.total, kept.max) == (fresh.num_gaps, fresh.total, fresh.max)


def test_repeated_gaps_count_as_many():
    hist = GapHistogram()
    hist.add_repeated(np.array([0.01, 0.02]), 3)
    assert hist.num_gaps == 6 and hist.mean == pytest.approx(0.015)
    assert hist.percentile(50) == pytest.approx(0.01, rel=0.005)
    assert hist.percentile(51) == pytest.approx(0.02, rel=0.005)


def test_long_and_out_of_range_gaps():
    """Gaps of days are binned like any other; beyond the bins (or infinite) they count in
    the last bin, whose percentile is the longest gap, never a figure below it."""
    hist = GapHistogram()
    hist.add(np.array([0.01, 1e6, 2e6]))
    assert hist.percentile(100) == pytest.approx(2e6, rel=0.005)
    assert hist.percentile(50) == pytest.approx(1e6, rel=0.005)
    beyond = GapHistogram()
    beyond.add(np.array([0.01, 5e12]))
    assert beyond.percentile(100) == 5e12 and beyond.max == 5e12
    inf = GapHistogram()
    inf.add(np.array([0.02, math.inf]))  # used to wrap to a negative bin: IndexError
    assert inf.percentile(100) == math.inf and inf.percentile(50) == pytest.approx(0.02, rel=0.005)
    inf.check_valid()
    merged = hist.copy()
    merged.merge(beyond)
    assert merged.max == 5e12 and merged.num_gaps == 5


@pytest.mark.parametrize("policy", ["continuous", "fixed-window"])
def test_a_window_past_any_run_is_refused(policy):
    """window=1e308 overflowed the clock (1e308 + a step is 1e308) and crashed the ITL
    histogram; durations are capped at core.limits.MAX_SECONDS like every other time."""
    from batchlab.core.errors import ConfigError
    with pytest.raises(ConfigError, match="window must be a duration from 0 to 1e\\+09"):
        load_policy(policy, window=1e308)
    assert load_policy(policy, window=1e9).window == 1e9


@pytest.mark.parametrize("max_num_steps", [1, 64])
def test_every_token_after_the_first_is_one_gap_and_the_gaps_add_up(max_num_steps):
    """A request's gaps telescope to finish - first token, whatever preemptions did."""
    spec = make_workload("poisson", rate=30.0, num_requests=200, prompt="uniform:50:400",
                         output="uniform:1:200")
    result = simulate(load_policy("continuous", max_num_steps=max_num_steps), spec,
                      affine_devices(2, kv_capacity_tokens=4000), seed=4)
    fin = result.finished
    assert result.summary()["preemptions"] > 0
    assert result.itl.num_gaps == int((fin["output_tokens"] - 1).sum())
    span = float((fin["finish"] - fin["first_token"]).sum())
    assert result.itl.total == pytest.approx(span, rel=1e-9)
    s = result.summary()
    assert s["itl_mean_s"] == pytest.approx(span / result.itl.num_gaps, rel=1e-9)
    assert s["itl_p50_s"] <= s["itl_p90_s"] <= s["itl_p99_s"]
    # The mean ITL weighs every gap; TPOT averages requests: close, not equal.
    assert s["itl_mean_s"] == pytest.approx(s["tpot_mean_s"], rel=0.5)


def test_gaps_of_a_small_run_by_hand():
    """Step times 10 ms + 1 ms per token fed. r0 (10-token prompt) prefills alone [0, 20 ms];
    r1 arrives meanwhile and prefills beside r0's decode [20, 41 ms]; both decode
    [41, 53 ms]; r1 decodes alone [53, 64 ms]. Gaps: r0 21 and 12 ms, r1 12 and 11 ms."""
    dev = AffineDevice(fixed=0.01, per_token=0.001, per_context_token=0.0)
    wl = Workload([0.0, 0.005], [10, 10], [3, 3])
    for steps in (1, 64):
        r = simulate(load_policy("continuous", max_num_steps=steps), wl, [dev])
        assert r.itl.num_gaps == 4
        assert r.itl.mean == pytest.approx((0.021 + 0.012 + 0.012 + 0.011) / 4)
        assert r.itl.percentile(25) == pytest.approx(0.011, rel=0.005)
        assert r.itl.percentile(75) == pytest.approx(0.012, rel=0.005)
        assert r.itl.percentile(100) == pytest.approx(0.021, rel=0.005)


def test_cli_summary_shows_itl():
    spec = make_workload("poisson", rate=2.0, num_requests=20)
    text = format_summary(simulate("continuous", spec, affine_devices(1)).summary())
    assert "ITL p99" in text and "ITL mean" in text


def test_a_run_without_token_gaps_reports_nan():
    r = simulate("continuous", Workload([0.0], [10], [1]), affine_devices(1))
    s = r.summary()
    assert r.itl.num_gaps == 0
    assert all(math.isnan(s[k]) for k in ("itl_mean_s", "itl_p50_s", "itl_p90_s", "itl_p99_s"))


@given(entries=st.lists(st.tuples(st.lists(_IN_RANGE, min_size=1, max_size=20),
                                  st.sampled_from(["once", "repeated", "weighted", "same"]),
                                  st.integers(1, 9)), min_size=1, max_size=30))
def test_mixed_entries_count_as_each_gap_booked_by_hand(entries):
    """Entries booked once, repeated (a stretch: every row sees a step), weighted (rows
    leaving) and one gap many times (rows that last emitted together) are spread to per-gap
    weights when binned: the counts, number and maximum those gaps give one by one, and the
    sum of gap x weight (the one-gap entries are summed apart: up to float rounding)."""
    hist, by_hand = GapHistogram(), []
    for gaps, how, k in entries:
        gaps = np.array(gaps)
        if how == "once":
            hist.add(gaps)
            weights = np.ones(gaps.size, dtype=np.int64)
        elif how == "same":
            gaps = gaps[:1]
            hist.add_same(float(gaps[0]), k)
            weights = np.array([k])
        elif how == "repeated":
            hist.add_repeated(gaps, k)
            weights = np.full(gaps.size, k)
        else:
            weights = np.arange(gaps.size) % k + 1
            hist.add_weighted(gaps, weights)
        by_hand.append((gaps, weights))
    gaps = np.concatenate([g for g, _ in by_hand])
    weights = np.concatenate([w for _, w in by_hand])
    counts = np.zeros(NUM_BINS, dtype=np.int64)
    np.add.at(counts, bin_of(gaps), weights)
    assert np.array_equal(hist.counts, counts) and hist.num_gaps == int(weights.sum())
    assert hist.max == gaps.max()
    if any(how == "same" for _, how, _ in entries):
        assert hist.total == pytest.approx(float((gaps * weights).sum()), rel=1e-12)
    else:
        assert hist.total == float((gaps * weights).sum())


def test_rows_that_last_emitted_together_book_one_gap_as_many(monkeypatch):
    """A step whose rows all emitted their previous token at one time books that one gap
    as many times (`add_same`): the records, counts, number and longest gap of booking every
    row's gap, the sum up to rounding; and a histogram holding many such entries flushes
    them (MAX_SAME) without losing any."""
    from batchlab.core import gaps as G
    spec = make_workload("poisson", rate=30.0, num_requests=300, prompt="uniform:50:400",
                         output="uniform:1:200")

    def run():
        return simulate(load_policy("continuous"), spec,
                        affine_devices(1, kv_capacity_tokens=6000), seed=5)

    monkeypatch.setattr(G, "MAX_SAME", 7)
    calls = []
    add_same = GapHistogram.add_same
    monkeypatch.setattr(GapHistogram, "add_same",
                        lambda self, gap, times: (calls.append(times), add_same(self, gap, times)))
    one = run()
    assert len(calls) > 100 and max(calls) > 1  # the one-gap path ran, on many rows at once
    monkeypatch.setattr(GapHistogram, "add_same",
                        lambda self, gap, times: self.add(np.full(times, gap)))
    every = run()
    assert all(np.array_equal(one.records[f], every.records[f], equal_nan=True)
               for f in ("first_token", "finish", "max_tbt"))
    assert np.array_equal(one.itl.counts, every.itl.counts)
    assert (one.itl.num_gaps, one.itl.max) == (every.itl.num_gaps, every.itl.max)
    assert one.itl.total == pytest.approx(every.itl.total, rel=1e-12)


def test_a_gap_booked_zero_times_is_not_the_longest():
    hist = GapHistogram()
    hist.add_weighted(np.array([0.01, 5e12]), np.array([3, 0]))
    assert hist.num_gaps == 3 and hist.max == 0.01


def test_weights_beyond_float_precision_count_exactly():
    """Weighted counts are summed as float64 while that is exact; a flush whose weights sum
    to 2**53 or more takes integer sums (no engine books that many, a caller may)."""
    hist = GapHistogram()
    hist.add_repeated(np.array([0.01, 0.01]), 2**53 + 1)
    assert int(hist.counts.sum()) == hist.num_gaps == 2**54 + 2
