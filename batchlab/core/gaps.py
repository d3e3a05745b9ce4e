"""`GapHistogram`: inter-token latencies (ITL) of a whole run, in bounded memory.

ITL is the time since the same request's previous output token, for every output token after
a request's first (vLLM's benchmark_serving computes it over every token gap). A run of a
million requests has hundreds of millions of gaps, so they are not kept: each is booked into
a fixed, log-spaced histogram as the step that emits it completes.

Accuracy: bins are 1% wide (edges at MIN_GAP * 1.01**i), and a percentile is reported at its
bin's geometric centre, so it is within 0.5% of the exact nearest-rank percentile for gaps
between MIN_GAP (1 microsecond) and MIN_GAP * 1.01**(NUM_BINS - 1) (about 1e10 s, beyond any
run: simulated times are at most `core.limits.MAX_SECONDS`, 1e9 s, apart); a gap below that
range counts in the first bin, one above (or an infinite one) in the last, and a percentile
that falls in the last bin is reported as the longest gap seen, so no percentile is ever
shown below the gaps it stands for. The mean is exact (a running sum, up to float rounding;
so it may differ in its last bits between single-step and multi-step runs of one workload,
whose records are identical: a gap a stretch books k times is added as gap x k).
Memory: NUM_BINS int64 counts (30 kB), plus up to MAX_PENDING gaps and MAX_SAME repeated
gaps not binned yet (see `GapHistogram`).
"""

from __future__ import annotations

import math

import attrs
import numpy as np

MIN_GAP = 1e-6
GROWTH = 1.01
NUM_BINS = 3703  # MIN_GAP * GROWTH**NUM_BINS ~ 1e10 s
_INV_LOG = 1.0 / math.log(GROWTH)
_LOG_MIN = math.log(MIN_GAP)


# Gaps binned per pass: a pass over a longer array makes temporaries that fall out of cache
# (and are mapped afresh each time), which made binning 65,536 gaps about 4x slower.
BIN_CHUNK = 1 << 14


def bin_of(gaps: np.ndarray, out: np.ndarray | None = None,
           work: np.ndarray | None = None) -> np.ndarray:
    """The bin of each gap (seconds), clipped to the histogram's range.
    out: an int64 array of gaps.size for the bins; work: a float64 array of at least
    min(gaps.size, BIN_CHUNK) elements to compute in. Given, nothing is allocated (a
    histogram reuses its own: fresh arrays of this size are mapped afresh at every flush)."""
    if gaps.ndim != 1:
        return bin_of(gaps.reshape(-1)).reshape(gaps.shape)
    n = gaps.size
    if out is None:
        out = np.empty(n, dtype=np.int64)
    if work is None:
        work = np.empty(min(n, BIN_CHUNK))
    for i in range(0, n, BIN_CHUNK):  # element-wise: the same bins in pieces, in place
        part = work[:min(BIN_CHUNK, n - i)]
        np.maximum(gaps[i:i + BIN_CHUNK], MIN_GAP, out=part)  # gaps >= 0: no warning in log
        np.log(part, out=part)
        part -= _LOG_MIN
        part *= _INV_LOG
        # Clipped before the cast: an infinite gap must land in the last bin, not wrap around.
        np.fmin(part, NUM_BINS - 1, out=part)
        out[i:i + part.size] = part  # truncated to int64, as astype would
    return out


# Gaps held before they are binned: binning in bulk costs a few numpy calls per batch of
# gaps instead of per step (the simulator books gaps at every step it completes).
MAX_PENDING = 1 << 16
# Most gaps a flush bins in the histogram's kept arrays: what is held once an entry of up to
# BIN_CHUNK gaps (a step's rows) brings it to MAX_PENDING.
SCRATCH = MAX_PENDING + BIN_CHUNK
# Repeated gaps (`add_same`: one value, a count) held as Python numbers (about 60 bytes an
# entry) before they join the pending gaps as one weighted entry; at most BIN_CHUNK, so that
# entry still fits the kept arrays (SCRATCH) beside up to MAX_PENDING others.
MAX_SAME = BIN_CHUNK
_FLOAT64 = np.dtype(np.float64)
_EXACT_FLOAT = 1 << 53  # integers below it are exact as float64, and so are their sums


@attrs.define
class GapHistogram:
    """Counts of gaps per log-spaced bin, their number and their exact sum.

    Gaps are booked lazily: `add` keeps a reference to the array (callers pass fresh
    arrays and never change them) and bins what it holds once MAX_PENDING gaps wait or a
    figure is read, so memory stays bounded and the figures are the same."""

    _counts: np.ndarray = attrs.field(factory=lambda: np.zeros(NUM_BINS, dtype=np.int64))
    _num_gaps: int = 0
    _total: float = 0.0
    _max: float = 0.0  # the longest gap: what a percentile in the open-ended last bin reports
    _pending: list = attrs.field(factory=list, repr=False)  # (gaps, times each)
    _num_pending: int = attrs.field(default=0, repr=False)
    # (gaps, bins, work, times) arrays a flush of up to SCRATCH gaps works in, made at the
    # first flush and dropped by `flush()`; None: none yet.
    _scratch: tuple | None = attrs.field(default=None, init=False, repr=False, eq=False)
    # `add_same` entries not binned yet: the gaps and how many times each is booked.
    _same: list = attrs.field(factory=list, init=False, repr=False, eq=False)
    _same_times: list = attrs.field(factory=list, init=False, repr=False, eq=False)

    def add(self, gaps: np.ndarray) -> None:
        """Book each gap once."""
        self._hold(gaps, 1)

    def add_repeated(self, gaps: np.ndarray, times: int) -> None:
        """Book each gap `times` times (a multi-step stretch: every row sees each step)."""
        if times > 0:
            self._hold(gaps, times)

    def add_same(self, gap: float, times: int) -> None:
        """Book one gap `times` times: the rows of a step that all emitted their previous
        token at one time (most steps of a continuous batch), one value to bin instead of
        one per row. The same counts, number and longest gap as `add` of `times` copies;
        the sum adds gap x times (the same up to float rounding)."""
        if times > 0:
            self._same.append(gap)
            self._same_times.append(times)
            if len(self._same) >= MAX_SAME:
                self._hold_same()

    def add_weighted(self, gaps: np.ndarray, times: np.ndarray) -> None:
        """Book gap i `times[i]` times (a stretch whose rows leave as they finish)."""
        self._hold(gaps, times)

    def _hold(self, gaps: np.ndarray, times) -> None:
        if gaps.size:
            self._pending.append((gaps, times))
            self._num_pending += gaps.size
            if self._num_pending >= MAX_PENDING:
                self._flush()

    def flush(self) -> "GapHistogram":
        """Bin the gaps held back so far (a finished run's histogram keeps no pending
        arrays nor scratch: it is smaller to keep and to send between processes); returns
        itself."""
        self._flush()
        self._scratch = None
        return self

    def _hold_same(self) -> None:
        """The `add_same` entries as one weighted entry (gap i booked times[i] times), binned
        with the others by `_flush`."""
        gaps = np.array(self._same, dtype=np.float64)
        times = np.array(self._same_times, dtype=np.int64)
        self._same.clear()
        self._same_times.clear()
        self._hold(gaps, times)

    def _flush(self) -> None:
        if self._same:
            self._hold_same()  # flushes itself when it brings the held gaps to MAX_PENDING
        if not self._pending:
            return
        pending, n = self._pending, self._num_pending
        arrays = [g for g, _ in pending]
        # The usual flush (float64 gaps, as engines book them): into arrays kept from the
        # last one. Other dtypes, or a very long entry: arrays of their own, as before
        # (`is`: cheaper than ==; an equal dtype that is another object takes that path).
        kept = n <= SCRATCH and all(g.dtype is _FLOAT64 for g in arrays)
        if kept:
            if self._scratch is None:
                self._scratch = (np.empty(SCRATCH), np.empty(SCRATCH, dtype=np.int64),
                                 np.empty(BIN_CHUNK), np.empty(SCRATCH, dtype=np.int64))
            into, into_bins, work, _ = self._scratch
            gaps = np.concatenate(arrays, out=into[:n])
            bins = bin_of(gaps, into_bins[:n], work)
        else:
            gaps = np.concatenate(arrays)
            bins = bin_of(gaps)
        # Most entries are booked once (single steps): their weight array is never built.
        weighted = [(i, t) for i, (_, t) in enumerate(pending)
                    if not (isinstance(t, int) and t == 1)]
        if not weighted:
            self._counts += np.bincount(bins, minlength=NUM_BINS)
            self._max = max(self._max, float(np.fmax.reduce(gaps)))
            self._num_gaps += gaps.size
            self._total += float(gaps.sum())  # the same sum as gaps x 1, bit for bit
        else:
            if kept:  # the kept array: a fresh one is mapped afresh at every flush
                times = self._scratch[3][:n]
                times.fill(1)
            else:
                times = np.ones(gaps.size, dtype=np.int64)
            starts = np.cumsum([0] + [g.size for g, _ in pending])
            for i, t in weighted:
                times[starts[i]:starts[i + 1]] = t
            booked_times = int(times.sum())
            if booked_times < _EXACT_FLOAT:  # bincount sums weights as float64: exact here
                self._counts += np.bincount(bins, weights=times,
                                            minlength=NUM_BINS).astype(np.int64)
            else:  # weights that large (none an engine books): integer sums, slower
                np.add.at(self._counts, bins, times)
            booked = gaps[times > 0]  # a gap booked 0 times (a weight of 0) is not a gap
            if booked.size:
                self._max = max(self._max, float(np.fmax.reduce(booked)))
            self._num_gaps += booked_times
            self._total += float((gaps * times).sum())
        pending.clear()
        self._num_pending = 0

    @property
    def counts(self) -> np.ndarray:
        self._flush()
        return self._counts

    @property
    def num_gaps(self) -> int:
        self._flush()
        return self._num_gaps

    @property
    def total(self) -> float:
        self._flush()
        return self._total

    def copy(self) -> "GapHistogram":
        self._flush()
        return GapHistogram(self._counts.copy(), self._num_gaps, self._total, self._max)

    def merge(self, other: "GapHistogram") -> None:
        self._flush()
        self._counts += other.counts
        self._num_gaps += other.num_gaps
        self._total += other.total
        self._max = max(self._max, other.max)

    @property
    def max(self) -> float:
        """The longest gap booked (0 with none)."""
        self._flush()
        return self._max

    @property
    def mean(self) -> float:
        return self.total / self.num_gaps if self.num_gaps else math.nan

    def percentile(self, q: float) -> float:
        """The nearest-rank q-th percentile (0 < q <= 100), to 0.5% (see the module doc)."""
        if not self.num_gaps:
            return math.nan
        rank = max(1, math.ceil(q / 100.0 * self.num_gaps))
        b = int(np.searchsorted(np.cumsum(self.counts), rank))
        if b >= NUM_BINS - 1:  # the last bin has no upper edge: its gaps are at most the max
            return self._max
        return MIN_GAP * GROWTH ** (b + 0.5)

    def check_valid(self) -> None:
        assert (self.counts >= 0).all(), "a negative gap count"
        assert int(self.counts.sum()) == self.num_gaps, "bins and num_gaps disagree"
