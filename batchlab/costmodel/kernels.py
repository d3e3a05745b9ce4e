"""Published kernel measurements: what real GEMM kernels reach at given shapes.

The roofline prices every GEMM at one compute efficiency (`Efficiency.compute`, 0.7 of peak by
default). Where a kernel library publishes what its GEMMs reach on a GPU at an op's exact
shapes, the model uses that instead: an op whose every GEMM has a measured curve takes

    compute time = FLOPs x sum over its GEMMs of (FLOP share / achieved FLOP/s at M)

with M the tokens one GPU feeds the op (tokens per expert for grouped expert GEMMs), the
achieved rate interpolated linearly in log M between the published points and held flat
outside them; the op is still at least as slow as its memory roofline. The published points
at small M are memory-bound themselves (the table gives their GB/s too), so the measured time
there is what the kernel took, weights and all.

One table so far: DeepGEMM's FP8 GEMMs with fine-grained scaling on H800 SXM, CUDA 12.8
(github.com/deepseek-ai/DeepGEMM README at its release, 2025-02-26), at DeepSeek-V3's shapes:
(N, K) = output x input features of one GPU's GEMM with tensor parallelism 1, as DeepSeek
serves it (data-parallel attention, expert parallelism). H100 SXM has the same SMs, clocks
and HBM3 bandwidth (3.35 TB/s) as H800, so the table serves both. Grouped GEMMs run the
routed experts: the contiguous layout in prefill (tokens of every expert in one tensor), the
masked layout in decode (CUDA graphs, token counts unknown to the host).

And one kernel measured as a whole: FlashMLA, DeepSeek's MLA decoding kernel, "up to 3000
GB/s in memory-bound configuration and 580 TFLOPS in computation-bound configuration on H800
SXM5" (github.com/deepseek-ai/FlashMLA README at release, 2025-02-24; BF16 KV cache). Those
two rates replace the roofline's for the attention of decode rows over their cached keys
(the absorbed projections around it are GEMMs the roofline keeps).
"""

from __future__ import annotations

import numpy as np

from .ops import CD, QD

MEASURED_GPUS = ("h800", "h100")
TERA = 1e12
FLASHMLA_FLOPS, FLASHMLA_BYTES = 580 * TERA, 3000e9  # FlashMLA README, H800 SXM5

# DeepGEMM README (2025-02-26), "Normal GEMMs for dense models": M -> TFLOPS, per (N, K)
NORMAL = {
    (2112, 7168): {64: 206, 128: 352, 4096: 1058},   # q_a + kv_a down-projections, fused
    (24576, 1536): {64: 289, 128: 535, 4096: 990},   # q_b up-projection (128 heads x 192)
    (32768, 512): {64: 219, 128: 358, 4096: 590},    # kv_b up-projection (128 x (128+128))
    (7168, 16384): {64: 336, 128: 645, 4096: 1358},  # o_proj (128 heads x 128)
    (4096, 7168): {64: 287, 128: 533, 4096: 1304},   # shared expert gate + up
    (7168, 2048): {64: 295, 128: 510, 4096: 1025},   # shared expert down
}
# "Grouped GEMMs for MoE models (contiguous layout)": M per group -> TFLOPS
CONTIGUOUS = {
    (4096, 7168): {4096: 1288, 8192: 1297},
    (7168, 2048): {4096: 1093, 8192: 1099},
}
# "Grouped GEMMs for MoE models (masked layout)": M per group -> TFLOPS
MASKED = {
    (4096, 7168): {256: 932, 512: 1040, 1024: 1233},
    (7168, 2048): {256: 815, 512: 916, 1024: 925},
}


class Curve:
    """Seconds per FLOP of an op made of GEMMs with measured rates, as a function of M."""

    def __init__(self, parts):
        # parts: (FLOP share, {M: TFLOPS}) per GEMM
        self._parts = [(share, np.log([float(m) for m in sorted(points)]),
                        np.array([points[m] * TERA for m in sorted(points)], float))
                       for share, points in parts]

    def seconds_per_flop(self, m):
        """At M tokens (a float, or an array of them)."""
        log_m = np.log(np.maximum(m, 1.0))
        total = 0.0
        for share, xs, rates in self._parts:
            total = total + share / np.interp(log_m, xs, rates)
        return total if isinstance(total, np.ndarray) else float(total)


def _curve(table, gemms) -> Curve | None:
    """The op's curve if every one of its GEMMs is in `table`, else None."""
    if not gemms or any(tuple(g) not in table for g in gemms):
        return None
    flops = [n * k for n, k in gemms]
    whole = float(sum(flops))
    return Curve([(f / whole, table[tuple(g)]) for f, g in zip(flops, gemms)])


def op_curve(gpu_name: str, weight_dtype: str, gemms) -> Curve | None:
    """Measured curve of a dense-layer op made of `gemms` ((N, K) each), or None."""
    if gpu_name not in MEASURED_GPUS or weight_dtype != "fp8":
        return None
    return _curve(NORMAL, gemms)


def expert_curves(gpu_name: str, weight_dtype: str, gemms):
    """(prefill, decode) curves of the routed experts' grouped GEMMs, or (None, None)."""
    if gpu_name not in MEASURED_GPUS or weight_dtype != "fp8":
        return None, None
    return _curve(CONTIGUOUS, gemms), _curve(MASKED, gemms)


class MeasuredKernels:
    """The measured curves that apply to one model on one GPU (per op, and for the routed
    experts); with none, the roofline's figures pass through unchanged."""

    def __init__(self, op_list, experts, gpu, model, eff, expert_compute=0.0, table=None):
        """`table`: the step model's op table (compute-time rows, memory-time rows, FLOPs,
        bytes; ops x features), whose MLA decode attention takes FlashMLA's rates here."""
        on = eff.measured_kernels
        name, dtype = gpu.name, model.weight_dtype
        self._ops = [(i, c) for i, o in enumerate(op_list) if on
                     and (c := op_curve(name, dtype, o.gemms)) is not None]
        self.measured = bool(self._ops)  # whether `apply` changes anything
        self._prefill = self._decode = None
        if on and experts is not None:
            self._prefill, self._decode = expert_curves(name, dtype, experts.gemms)
            self._flops = experts.flops_per_assignment
        self._default = expert_compute  # the roofline's seconds per assignment
        if (on and table is not None and name in MEASURED_GPUS and model.attention == "mla"
                and model.kv_dtype == "bf16"):
            i, n = [o.name for o in op_list].index("attention"), len(op_list)
            table[i, QD] *= op_list[i].peak * eff.compute / FLASHMLA_FLOPS  # per pair
            table[n + i, CD] *= gpu.memory_bandwidth * eff.memory / FLASHMLA_BYTES  # per key

    def apply(self, out, tokens: float) -> None:
        """Replace the compute-time row of `out` (ops x [compute s, memory s, FLOPs, bytes])
        for the measured ops, at `tokens` per GPU."""
        for i, curve in self._ops:
            out[0, i] = out[2, i] * curve.seconds_per_flop(tokens)

    def expert_seconds(self, routed, is_decode: bool):
        """Compute seconds of one (token, expert) assignment on the busiest rank of a
        `Router.route` result, at its tokens per expert (arrays for sampled routing)."""
        curve = self._decode if is_decode else self._prefill
        if curve is None:
            return self._default
        per_expert = routed.rank_load / np.maximum(routed.rank_touched, 1.0)
        return self._flops * curve.seconds_per_flop(per_expert)
