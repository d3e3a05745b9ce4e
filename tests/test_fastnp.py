"""core.fastnp's C entry points give what the numpy functions they stand for give."""

import numpy as np

from batchlab.core.fastnp import count_nonzero


def test_count_nonzero_is_numpys():
    rng = np.random.default_rng(3)
    for a in (rng.integers(0, 3, 350), rng.random(17) > 0.5, np.zeros(0, bool), np.array(2),
              rng.integers(0, 2, (4, 5)), [True, False, True], np.array([np.nan, 0.0])):
        got, want = count_nonzero(a), np.count_nonzero(a)
        assert got == want and type(got) is type(want)
