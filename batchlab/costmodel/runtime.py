"""Runtime profiles: the fixed costs a serving engine adds to every step and every kernel.

The roofline prices the GPU's work; what the host does between steps (scheduling, building
the next step's inputs, sampling bookkeeping) and the gaps between kernels depend on the
engine, not on the model. A `RuntimeProfile` names a pair of them; `make_devices(...,
runtime="eager")` puts its two numbers into the efficiency profile in place of that
profile's own `step_overhead` and `kernel_overhead` (compute, memory and communication
efficiencies are kept). `batchlab calibrate` fits the same two numbers from measurements, so
a calibrated profile is the runtime of the engine it measured.

| profile | step | per op | what it stands for |
| --- | --- | --- | --- |
| cuda-graph | 0.3 ms | 4 us | CUDA-graph replay (vLLM V1, SGLang): the default `Efficiency` |
| eager | 3.8 ms | 10 us | no CUDA graphs, host scheduling and input preparation every step between GPU steps, as vLLM V0 (<= 0.5) |
| overlap-scheduler | 0 | 4 us | CUDA graphs, and the host prepares step n+1 while the GPU runs step n (SGLang's overlap scheduler, vLLM V1's async scheduling) |

Sources: "eager" step: vLLM's v0.6.0 performance update (blog.vllm.ai, 2024-09-05) profiled
Llama-3-8B on one H100 in v0.5.3: 38% of the time on the GPU, 29% in scheduling (including
gathering results), 33% in the API server; with GPU steps of ~5 ms for that model (vLLM V1
blog, 2025-01-24), scheduling alone is 29/38 x 5 ms = 3.8 ms a step (the API server, which
also shares the host, is left out). "eager" per op: 10 us is an order-of-magnitude assumption
for an op of the cost model (a GEMM or attention kernel plus the small kernels riding with
it) dispatched by eager PyTorch, each launch a few us of host time (framework overhead, as
discussed in H. He, "Making Deep Learning Go Brrrr From First Principles", 2022); no
published per-op figure was found. "overlap-scheduler": SGLang v0.4 (LMSYS blog, 2024-12-04,
"zero-overhead batch scheduler") runs the host's work for the next step during the current
one, which hides it while it is shorter than a GPU step (the model assumes it is).
"""

from __future__ import annotations

import attrs

from .efficiency import Efficiency
from .lookup import find_preset


@attrs.frozen(slots=True)
class RuntimeProfile:
    """Per-step host overhead and per-op kernel overhead of a serving engine (seconds)."""

    name: str
    step_overhead: float
    kernel_overhead: float
    description: str = ""


RUNTIMES: dict[str, RuntimeProfile] = {r.name: r for r in [
    RuntimeProfile("cuda-graph", 3e-4, 4e-6,
                   "CUDA-graph replay, host work between steps (vLLM V1, SGLang): default"),
    RuntimeProfile("eager", 3.8e-3, 10e-6,
                   "eager kernels, host scheduling and input preparation every step "
                   "(vLLM V0 <= 0.5)"),
    RuntimeProfile("overlap-scheduler", 0.0, 4e-6,
                   "CUDA graphs, host work for the next step hidden under this one "
                   "(SGLang overlap scheduler)"),
]}


def get_runtime(name) -> RuntimeProfile:
    """The runtime profile called `name` (see `lookup.py`), or a RuntimeProfile itself."""
    return find_preset("runtime profile", name, RUNTIMES, RuntimeProfile)


def list_runtimes() -> list[tuple[str, str]]:
    """(name, one-line description) of every runtime profile."""
    return [(r.name, r.description) for r in RUNTIMES.values()]


def apply_runtime(efficiency: Efficiency, runtime) -> Efficiency:
    """`efficiency` with the fixed costs of `runtime` (None keeps the profile's own)."""
    if runtime is None:
        return efficiency
    r = get_runtime(runtime)
    return attrs.evolve(efficiency, step_overhead=r.step_overhead,
                        kernel_overhead=r.kernel_overhead)
