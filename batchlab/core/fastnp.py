"""numpy's C entry points for calls on the simulator's per-step path.

`np.count_nonzero` is a Python function (array-function dispatch, then an axis test) in
front of a C function; for a whole array it returns what the C function returns. Called a
dozen times a step on arrays of a few hundred rows, the wrapper was about 0.15 us of each
call's 0.25 us.
"""

from __future__ import annotations

try:  # numpy 2
    from numpy._core.multiarray import count_nonzero
except ImportError:
    try:  # numpy 1.26
        from numpy.core.multiarray import count_nonzero
    except ImportError:  # a numpy that moved it again: the public function, a little slower
        from numpy import count_nonzero

__all__ = ["count_nonzero"]
