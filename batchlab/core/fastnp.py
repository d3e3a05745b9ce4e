"""numpy's C entry points and constants for calls on the simulator's per-step path.

`np.count_nonzero` is a Python function (array-function dispatch, then an axis test) in
front of a C function; for a whole array it returns what the C function returns. Called a
dozen times a step on arrays of a few hundred rows, the wrapper was about 0.15 us of each
call's 0.25 us.

A Python scalar operand (`x + 1`, `x == 0`, `a[i] = True`) goes through numpy's weak-scalar
promotion (NEP 50) at every call: about 0.15 us more, on a few hundred rows, than a 0-d array
of the other operand's dtype, which gives the same values. The constants below are such
arrays, read-only; use one only where its dtype is the array's (an int64 constant with an
int8 or bool array would promote the result).
"""

from __future__ import annotations

import numpy as np

try:  # numpy 2
    from numpy._core.multiarray import count_nonzero
except ImportError:
    try:  # numpy 1.26
        from numpy.core.multiarray import count_nonzero
    except ImportError:  # a numpy that moved it again: the public function, a little slower
        from numpy import count_nonzero


def constant(value, dtype) -> np.ndarray:
    """A read-only 0-d array of `value` (see the module docstring)."""
    arr = np.array(value, dtype=dtype)
    arr.setflags(write=False)
    return arr


def int_sum(values: np.ndarray) -> int:
    """The exact sum of a 1-D int64 array as a Python int. A few dozen values (a running
    set's rows, a step's finished ones: most calls on the simulator's path) as a list's sum,
    without a reduction's setup (~0.4 us of ~0.6 at 15 values); more by np.add.reduce (what
    .sum calls, without its wrapper). The same ints either way (no overflow below 2**63)."""
    return sum(values.tolist()) if values.size <= 48 else int(np.add.reduce(values))


ZERO, ONE, MINUS_ONE = constant(0, np.int64), constant(1, np.int64), constant(-1, np.int64)
TRUE, FALSE = constant(True, bool), constant(False, bool)

__all__ = ["FALSE", "MINUS_ONE", "ONE", "TRUE", "ZERO", "constant", "count_nonzero", "int_sum"]
