"""Two-batch overlap: two micro-batches whose computation hides each other's communication.

DeepSeek's inference system splits a batch in two and runs one micro-batch's attention and
experts while the other's dispatch and combine are in flight (dual micro-batch overlap in
prefill, a five-stage pipeline of the same idea in decode: DeepSeek-V3/R1 Inference System
Overview, open-infra-index, 2025-03-01); SGLang calls it two-batch overlap (TBO; "Deploying
DeepSeek with PD Disaggregation and Large-scale Expert Parallelism", LMSYS blog, 2025-05-05).

With per-micro-batch computation C (compute, memory and launches) and communication X over L
layers, the GPU's compute stream has 2C of work and the network 2X; in steady state each
hides the other, so a step takes

    max(2C', 2X) + min(C', X) / L

where the last term is the one layer's worth that cannot overlap (the first micro-batch's
first computation before any communication exists, or the last combine after the last
computation), and C' is C slowed by the SMs communication kernels take while they run
(DeepEP's high-throughput kernels run on SMs; its low-latency ones receive through a hook and
take none). Splitting the batch is not free: weights are read once per micro-batch and
launches double, which the caller's per-micro-batch C already includes. The exposed
communication is what the step takes beyond the computation; the rest of 2X is hidden.
"""

from __future__ import annotations

import attrs


@attrs.frozen(slots=True)
class Overlapped:
    """A step of two overlapped micro-batches: duration and where it went (seconds)."""

    duration: float
    compute: float
    memory: float
    overhead: float
    exposed: float   # communication the computation did not hide
    hidden: float    # communication that ran under computation


def two_batch_overlap(compute: float, memory: float, launches: float, comm: float,
                      num_layers: float, sm_share: float = 0.0) -> Overlapped:
    """Two micro-batches, each taking `compute` + `memory` + `launches` seconds of GPU work
    and `comm` seconds of communication over `num_layers` layers; `sm_share` of the SMs go
    to communication kernels while computation runs beside them."""
    slow = 1.0 / (1.0 - sm_share) if comm > 0 else 1.0
    c_work = slow * (compute + memory)
    c = c_work + launches
    fill = min(c, comm) / max(num_layers, 1.0)
    duration = max(2.0 * c, 2.0 * comm) + fill
    exposed = duration - 2.0 * c
    return Overlapped(duration=duration, compute=2.0 * slow * compute,
                      memory=2.0 * slow * memory, overhead=2.0 * launches,
                      exposed=exposed, hidden=2.0 * comm - exposed)
