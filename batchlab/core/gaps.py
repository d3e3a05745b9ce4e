"""`GapHistogram`: inter-token latencies (ITL) of a whole run, in bounded memory.

ITL is the time since the same request's previous output token, for every output token after
a request's first (vLLM's benchmark_serving computes it over every token gap). A run of a
million requests has hundreds of millions of gaps, so they are not kept: each is booked into
a fixed, log-spaced histogram as the step that emits it completes.

Accuracy: bins are 1% wide (edges at MIN_GAP * 1.01**i), and a percentile is reported at its
bin's geometric centre, so it is within 0.5% of the exact nearest-rank percentile for gaps
between MIN_GAP (1 microsecond) and MIN_GAP * 1.01**NUM_BINS (about 9.8e3 s); a gap below
that range counts in the first bin, one above in the last. The
mean is exact (a running sum, up to float rounding). Memory: NUM_BINS int64 counts (19 kB).
"""

from __future__ import annotations

import math

import attrs
import numpy as np

MIN_GAP = 1e-6
GROWTH = 1.01
NUM_BINS = 2315  # MIN_GAP * GROWTH**NUM_BINS ~ 9.8e3 s
_INV_LOG = 1.0 / math.log(GROWTH)
_LOG_MIN = math.log(MIN_GAP)


def bin_of(gaps: np.ndarray) -> np.ndarray:
    """The bin of each gap (seconds), clipped to the histogram's range."""
    raw = (np.log(np.maximum(gaps, MIN_GAP)) - _LOG_MIN) * _INV_LOG  # gaps >= 0: no warning
    return np.minimum(raw.astype(np.int64), NUM_BINS - 1)


@attrs.define
class GapHistogram:
    """Counts of gaps per log-spaced bin, their number and their exact sum."""

    counts: np.ndarray = attrs.field(factory=lambda: np.zeros(NUM_BINS, dtype=np.int64))
    num_gaps: int = 0
    total: float = 0.0

    def add(self, gaps: np.ndarray) -> None:
        """Book each gap once."""
        n = gaps.size
        if n == 0:
            return
        # All equal: the common step, every row's previous token came in the same step
        # (count_nonzero of a comparison costs less than a min and a max on small arrays).
        if not np.count_nonzero(gaps != gaps[0]):
            self.counts[bin_of(gaps[:1])[0]] += n
        else:
            np.add.at(self.counts, bin_of(gaps), 1)
        self.num_gaps += n
        self.total += float(gaps.sum())

    def add_repeated(self, gaps: np.ndarray, times: int) -> None:
        """Book each gap `times` times (a multi-step stretch: every row sees each step)."""
        if gaps.size == 0 or times <= 0:
            return
        np.add.at(self.counts, bin_of(gaps), times)
        self.num_gaps += gaps.size * times
        self.total += float(gaps.sum()) * times

    def add_weighted(self, gaps: np.ndarray, times: np.ndarray) -> None:
        """Book gap i `times[i]` times (a stretch whose rows leave as they finish)."""
        if gaps.size == 0:
            return
        np.add.at(self.counts, bin_of(gaps), times)
        self.num_gaps += int(times.sum())
        self.total += float((gaps * times).sum())

    def copy(self) -> "GapHistogram":
        return GapHistogram(self.counts.copy(), self.num_gaps, self.total)

    def merge(self, other: "GapHistogram") -> None:
        self.counts += other.counts
        self.num_gaps += other.num_gaps
        self.total += other.total

    @property
    def mean(self) -> float:
        return self.total / self.num_gaps if self.num_gaps else math.nan

    def percentile(self, q: float) -> float:
        """The nearest-rank q-th percentile (0 < q <= 100), to 0.5% (see the module doc)."""
        if not self.num_gaps:
            return math.nan
        rank = max(1, math.ceil(q / 100.0 * self.num_gaps))
        b = int(np.searchsorted(np.cumsum(self.counts), rank))
        return MIN_GAP * GROWTH ** (b + 0.5)

    def check_valid(self) -> None:
        assert (self.counts >= 0).all(), "a negative gap count"
        assert int(self.counts.sum()) == self.num_gaps, "bins and num_gaps disagree"
