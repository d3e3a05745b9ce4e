"""`Efficiency`: how far below its datasheet peak real software runs, and fixed overheads.

A roofline with 100% efficiency is a lower bound nobody reaches. These factors turn it into an
estimate. The defaults are honest round numbers, not fitted to the figures the tests check:

- compute 0.7: large bf16 GEMMs reach 70-80% of dense peak in cuBLAS/CUTLASS; kipply's
  "Transformer Inference Arithmetic" profiled 0.72 for the MLP GEMMs of a 13B model on an
  A100 (and 0.54 for attention projections).
- memory 0.8: streaming kernels reach 80-90% of HBM peak; decode GEMVs and paged-attention
  kernels somewhat less.
- communication 0.75: NCCL bus bandwidth is typically 70-85% of the link rate.
- overlapped_communication 1/1.32: the share of their speed alone that DeepEP's
  high-throughput (prefill) dispatch and combine keep under two-batch overlap. Unlike the
  others it is fitted, to SGLang's ablation of overlap (see expert_comm.py for the source
  and the check); 1 turns the slowdown off. Decode's low-latency transfers are never slowed.
- step_overhead 0.3 ms: per step, host-side scheduling, input preparation and sampling that a
  CUDA-graph runtime does not hide.
- kernel_overhead 4 us: per op, per layer, per micro-batch: the launch gap and tail of the
  op's GEMM or attention kernel plus the small kernels that ride along with it (rotary
  embedding, activation, residual add, KV-cache write), a few us each even under CUDA graphs.
  It is what makes many tiny kernels slow at small batch.
- measured_kernels true: where a kernel library publishes what its kernels reach at an op's
  exact shapes on the GPU (DeepGEMM's FP8 GEMMs at DeepSeek-V3's shapes and FlashMLA's
  decode attention, on H800/H100; see kernels.py), those rates replace the efficiencies for
  that op; false keeps the plain roofline.

A calibrated profile (fitted to measurements by a later tool) replaces them wholesale:
`Efficiency.from_dict(...)` or `load_efficiency(path)`.
"""

from __future__ import annotations

import attrs

from batchlab.core import ConfigError

from .checks import v_bool, v_fraction, v_non_negative


@attrs.frozen(slots=True)
class Efficiency:
    """Achieved share of peak, per resource, and fixed costs in seconds."""

    name: str = "default"
    compute: float = attrs.field(default=0.7, validator=v_fraction)
    memory: float = attrs.field(default=0.8, validator=v_fraction)
    communication: float = attrs.field(default=0.75, validator=v_fraction)
    step_overhead: float = attrs.field(default=3e-4, validator=v_non_negative)
    kernel_overhead: float = attrs.field(default=4e-6, validator=v_non_negative)
    measured_kernels: bool = attrs.field(default=True, validator=v_bool)
    # after the others: positional construction (calibrate's) keeps its meaning
    overlapped_communication: float = attrs.field(default=1 / 1.32, validator=v_fraction)

    @classmethod
    def from_dict(cls, values: dict, name: str = "profile") -> "Efficiency":
        """Build from a mapping (a TOML/JSON table); unknown keys are an error, not ignored."""
        if not isinstance(values, dict):
            raise ConfigError(f"efficiency profile {name!r} must be a table of numbers, "
                              f"not {type(values).__name__}")
        known = {a.name for a in attrs.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"efficiency profile {name!r}: unknown field(s) "
                              f"{', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        return cls(**{"name": name, **values})


DEFAULT_EFFICIENCY = Efficiency()
