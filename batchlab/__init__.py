"""batchlab: pluggable batching and scheduling policies for LLM inference serving.

    import batchlab
    result = batchlab.simulate(batchlab.load_policy("fixed-window", window=0.02),
                               workload, batchlab.affine_devices(2), seed=0)
    print(result.summary())
"""

from importlib.metadata import PackageNotFoundError, version

from .backends.affine import AffineDevice, affine_devices
from .engines.simulator import simulate
from .core import (Batch, BatchlabError, ConfigError, KVBlockManager, Plan, PolicyError,
                   Request, Scheduler, StepCost, StepResult, TraceError)
from .policies.discovery import available_policies, load_policy
from .engines.result import Result
from .workloads import Workload

try:
    __version__ = version("batchlab")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"



def __getattr__(name):
    # `batchlab.testing.check_policy(...)` after a plain `import batchlab`, as the docs write
    # it, without importing hypothesis (which the kit needs) for everyone who imports batchlab.
    if name == "testing":
        import importlib
        try:
            return importlib.import_module(".testing", __name__)
        except ImportError as exc:
            # An AttributeError, so hasattr() and getattr(..., default) answer instead of
            # raising where the kit's extra (hypothesis) is not installed; it says why.
            raise AttributeError(f"batchlab.testing is not available: {exc}") from exc
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AffineDevice", "Batch", "BatchlabError", "ConfigError", "KVBlockManager", "Plan",
    "PolicyError", "Request", "Result", "Scheduler", "StepCost", "StepResult", "TraceError",
    "Workload", "affine_devices", "available_policies", "load_policy", "simulate",
]
