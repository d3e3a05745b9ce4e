"""Two-batch overlap: two micro-batches whose computation hides each other's communication.

DeepSeek's inference system splits a batch in two and runs one micro-batch's attention and
experts while the other's dispatch and combine are in flight (dual micro-batch overlap in
prefill, a five-stage pipeline of the same idea in decode: DeepSeek-V3/R1 Inference System
Overview, open-infra-index, 2025-03-01); SGLang calls it two-batch overlap (TBO; "Deploying
DeepSeek with PD Disaggregation and Large-scale Expert Parallelism", LMSYS blog, 2025-05-05).

Each MoE layer has four phases per micro-batch: attention a, dispatch d, experts e, combine c.
The compute stream runs a0 a1 e0 e1 while the network runs each micro-batch's dispatch under
the other's attention or experts and its combine likewise (DeepEP's documentation draws this
schedule, and warns that "the 4 parts of attention/dispatch/MoE/combine may not have the
exact same execution time"). A phase waits for the transfer it needs, so a layer takes

    max(a, d) + max(d, e) + max(e, c) + max(c, a)

for both micro-batches: 2(a + e) when computation covers every transfer, 2(d + c) when
communication covers every computation, more than either bound when they alternate (a long
combine under short experts is not hidden by a long attention's slack). DeepSeek's five-stage
decode pipeline splits attention to even the phases out; the model does not, so where the
phases are unequal it is pessimistic for that pipeline and exact for two-batch overlap.

Dense layers and the output head have no expert traffic to hide and run one micro-batch
after the other; one layer's worth that cannot overlap (the first computation before any
transfer exists, or the last combine) is added once. The SMs that communication kernels take
while they run (`sm_share`; DeepEP's high-throughput kernels run on SMs, its low-latency ones
receive through a hook and take none) slow the MoE layers' computation. The phases' and the
totals' transfer times are those of the transfers as they run overlapped (DeepEP's
high-throughput ones slower than alone: expert_comm.py). Splitting the batch
is not free: weights are read once per micro-batch and launches double, which the caller's
per-micro-batch figures already include. The exposed communication is what the step takes
beyond the computation; the rest of the communication is hidden.
"""

from __future__ import annotations

import attrs


@attrs.frozen(slots=True)
class Phases:
    """One micro-batch's seconds in one MoE layer, per phase, and the number of MoE layers."""

    num_layers: float
    attention: float            # compute and memory of the attention side
    experts: float              # compute and memory of the router, shared and routed experts
    attention_launches: float
    experts_launches: float
    dispatch: float             # with the all-reduce after attention, if tp > 1
    combine: float


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
                      ph: Phases, sm_share: float = 0.0) -> Overlapped:
    """Two micro-batches, each taking `compute` + `memory` + `launches` seconds of GPU work
    and `comm` seconds of communication in all, `ph` of it in the MoE layers' phases."""
    slow = 1.0 / (1.0 - sm_share) if comm > 0 else 1.0
    n = ph.num_layers
    a = slow * ph.attention + ph.attention_launches
    e = slow * ph.experts + ph.experts_launches
    d, c = ph.dispatch, ph.combine
    overlaps = min(a, d) + min(d, e) + min(e, c) + min(c, a)
    moe = n * (2.0 * (a + e + d + c) - overlaps)
    extra = (slow - 1.0) * n * (ph.attention + ph.experts)
    work = compute + memory + launches + extra           # one micro-batch's compute stream
    rest_work = work - n * (a + e)                        # dense layers and the head
    rest_comm = comm - n * (d + c)                        # their collectives, not hidden
    fill = min(min(work, comm) / max(n, 1.0), n * overlaps)
    duration = moe + 2.0 * (rest_work + rest_comm) + fill
    exposed = duration - 2.0 * work
    scale = 1.0 + extra / (compute + memory) if compute + memory > 0 else 1.0
    return Overlapped(duration=duration, compute=2.0 * scale * compute,
                      memory=2.0 * scale * memory, overhead=2.0 * launches,
                      exposed=exposed, hidden=2.0 * comm - exposed)
