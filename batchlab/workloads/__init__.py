"""Workloads: who sends what, when.

- `spec`: `Workload` (concrete arrays of arrivals, prompt and output lengths), `WorkloadSpec`
  (how to draw one, sampled with the run's seed) and `make_workload()` from plain names.
- `arrivals`: arrival processes (`Poisson`, `Gamma`, `ConstantRate`, `ClosedLoop`).
- `lengths`: length distributions (`ConstantLength`, `UniformLength`, `LogNormalLength`,
  `EmpiricalLength`).
- `traces`: `load_trace()` for CSV/JSONL request traces (Azure or plain columns).
- `pairs`: `TraceLengths`, a trace's (prompt, output) pairs for synthetic arrivals.

Everything a user needs is importable from `batchlab.workloads` directly.
"""

from .arrivals import ClosedLoop, ConstantRate, Gamma, Poisson
from .lengths import ConstantLength, EmpiricalLength, LogNormalLength, UniformLength
from .pairs import TraceLengths
from .spec import Workload, WorkloadSpec, make_workload, parse_length
from .traces import load_trace

__all__ = [
    "ClosedLoop", "ConstantLength", "ConstantRate", "EmpiricalLength", "Gamma",
    "LogNormalLength", "Poisson", "TraceLengths", "UniformLength", "Workload", "WorkloadSpec",
    "load_trace", "make_workload", "parse_length",
]
