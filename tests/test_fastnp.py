"""core.fastnp's C entry points give what the numpy functions they stand for give."""

import numpy as np

from batchlab.core import fastnp
from batchlab.core.fastnp import count_nonzero


def test_count_nonzero_is_numpys():
    rng = np.random.default_rng(3)
    for a in (rng.integers(0, 3, 350), rng.random(17) > 0.5, np.zeros(0, bool), np.array(2),
              rng.integers(0, 2, (4, 5)), [True, False, True], np.array([np.nan, 0.0])):
        got, want = count_nonzero(a), np.count_nonzero(a)
        assert got == want and type(got) is type(want)


def test_the_c_entry_point_is_used_where_numpy_has_it():
    """The fallback to the public function is for a numpy that moved its C entry point;
    where numpy 2 or 1.26 has it, that is what fastnp uses (else the speedup is gone)."""
    try:
        from numpy._core import multiarray
    except ImportError:
        from numpy.core import multiarray
    if hasattr(multiarray, "count_nonzero"):
        assert fastnp.count_nonzero is multiarray.count_nonzero
        assert fastnp.count_nonzero is not np.count_nonzero
