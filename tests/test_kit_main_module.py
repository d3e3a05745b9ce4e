"""The conformance kit on a policy class defined in __main__ (a script, a notebook,
`python -c`), and `batchlab.testing` reached from a plain `import batchlab`.

A fresh process cannot import a __main__ class, so the cross-process determinism check must
be skipped with a warning that says why and how to get it, not fail with the child's
AttributeError as if the policy were at fault.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, warnings
import batchlab
from batchlab.policies.continuous import ContinuousBatching

class ShortestJobFirst(ContinuousBatching):
    pass

assert "hypothesis" not in sys.modules, "import batchlab imported hypothesis"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    batchlab.testing.check_determinism(ShortestJobFirst)
for w in caught:
    print("WARNING", w.message)
"""


def test_a_main_class_skips_the_cross_process_check_with_a_warning_that_says_how():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    warnings = [line for line in done.stdout.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, done.stdout
    assert "'ShortestJobFirst' is defined in __main__" in warnings[0]
    assert "define it in a module" in warnings[0]


def test_testing_is_an_attribute_of_batchlab_after_a_plain_import():
    import batchlab
    assert batchlab.testing.check_policy is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        batchlab.nope


def test_testing_without_the_kit_extra_is_an_attribute_error():
    """hasattr/getattr with a default must answer, not raise, where hypothesis is missing."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "import batchlab\n"
            "assert not hasattr(batchlab, 'testing')\n"
            "assert getattr(batchlab, 'testing', None) is None\n"
            "try:\n    batchlab.testing\nexcept AttributeError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install 'batchlab[kit]'" in done.stdout
