"""GPU specifications: `GPUSpec` and the built-in presets, each with its published source.

All figures are SI: FLOP/s, bytes, bytes/s (one direction of a link), seconds, USD per
GPU-hour. Peak FLOP/s are *dense* tensor-core figures (datasheets also print a 2x "with
sparsity" number, which no LLM kernel reaches). Memory sizes are what `nvidia-smi` reports as
the total, in MiB, because that is what serving engines can allocate from.

Prices are indicative on-demand rental prices per GPU-hour (public cloud price lists,
2024-2025, rounded); they move month to month, so pass `price_per_hour=` to override.
"""

from __future__ import annotations

import attrs

from .checks import v_count, v_non_negative, v_positive
from .lookup import find_preset

TERA = 1e12
GB = 1e9  # bandwidths are quoted in decimal GB/s
MIB = 2**20


@attrs.frozen(slots=True)
class GPUSpec:
    """One accelerator model.

    bf16_flops: dense BF16 tensor-core peak, FLOP/s.
    fp8_flops: dense FP8 peak, FLOP/s; 0 where the chip has no FP8 tensor cores (then FP8
        weights are up-cast and run at the BF16 rate).
    memory_bandwidth: HBM/GDDR bandwidth, bytes/s.  memory_bytes: device memory, bytes.
    link_bandwidth, link_latency: scale-up link of one GPU (NVLink to the NVSwitch, or PCIe to
        the host), bytes/s per direction, and seconds per hop.
    network_bandwidth, network_latency: scale-out NIC of one GPU (InfiniBand/Ethernet), bytes/s
        per direction, and seconds per hop.
    gpus_per_node: GPUs in one server (the NVLink/PCIe domain).
    price_per_hour: USD per GPU-hour (indicative; override it).
    num_sms: streaming multiprocessors (0 = unknown); communication kernels that run on SMs
        (DeepEP's high-throughput mode) take a share of them from the computation they overlap.
    """

    name: str
    description: str
    bf16_flops: float = attrs.field(validator=v_positive)
    fp8_flops: float = attrs.field(validator=v_non_negative)
    memory_bandwidth: float = attrs.field(validator=v_positive)
    memory_bytes: float = attrs.field(validator=v_positive)
    link_bandwidth: float = attrs.field(validator=v_positive)
    link_latency: float = attrs.field(validator=v_non_negative)
    network_bandwidth: float = attrs.field(validator=v_positive)
    network_latency: float = attrs.field(validator=v_non_negative)
    gpus_per_node: int = attrs.field(validator=v_count)
    price_per_hour: float = attrs.field(validator=v_non_negative)
    link_kind: str = "nvlink"
    source: str = ""
    num_sms: int = attrs.field(default=0, validator=v_non_negative)

    def matmul_flops(self, weight_dtype: str) -> float:
        """Peak rate of a weight GEMM: FP8 weights use FP8 tensor cores where the chip has them."""
        if weight_dtype == "fp8" and self.fp8_flops > 0:
            return self.fp8_flops
        return self.bf16_flops


def _h(name, desc, bf16, fp8, bw, mem_mib, link, net, price, source, *, node=8,
       link_kind="nvlink", link_lat=0.5e-6, net_lat=2.5e-6, sms=0) -> GPUSpec:
    return GPUSpec(
        name=name, description=desc, bf16_flops=bf16 * TERA, fp8_flops=fp8 * TERA,
        memory_bandwidth=bw * GB, memory_bytes=mem_mib * MIB, link_bandwidth=link * GB,
        link_latency=link_lat, network_bandwidth=net * GB, network_latency=net_lat,
        gpus_per_node=node, price_per_hour=price, link_kind=link_kind, source=source,
        num_sms=sms,
    )


# SM counts: H100/H800 SXM5 132 (H100 datasheet; H200 and H800 share the die and its count),
# A100 108 (A100 datasheet), RTX 4090 128 and L40S 142 (Ada whitepaper, L40S datasheet).
# Latencies are assumptions, not datasheet figures: 0.5 us per NVLink hop (GPU->NVSwitch), so
# an 8-GPU ring all-reduce of a small message costs 2*7*1 us = 14 us, the order NCCL reports
# for small messages on one HGX node; 1 us per PCIe hop; 2.5 us per InfiniBand hop.
_PRESETS = [
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 1,979 TFLOPS with sparsity -> 989.4
    # dense; FP8 3,958 sparse -> 1,979 dense; 80 GB HBM3 at 3.35 TB/s; NVLink 900 GB/s total
    # (450 GB/s per direction). DGX H100: 8x ConnectX-7 400 Gb/s (50 GB/s) per GPU.
    _h("h100", "NVIDIA H100 SXM5 80GB (HGX/DGX H100 node, NVLink 4, NDR InfiniBand)",
       989.4, 1979.0, 3350, 81559, 450, 50, 2.99,
       "NVIDIA H100 datasheet; DGX H100 user guide", sms=132),
    # NVIDIA H200 datasheet (SXM): same compute as H100; 141 GB HBM3e at 4.8 TB/s;
    # NVLink 900 GB/s total.
    _h("h200", "NVIDIA H200 SXM 141GB (HGX H200 node, NVLink 4, NDR InfiniBand)",
       989.4, 1979.0, 4800, 143771, 450, 50, 3.79,
       "NVIDIA H200 datasheet", sms=132),
    # H800 SXM: the export variant of the H100 with NVLink cut to 400 GB/s total (200 per
    # direction); compute and HBM3 as H100. DeepSeek-V3 technical report (arXiv 2412.19437,
    # sec. 3.1/3.2): 8 GPUs per node on NVLink+NVSwitch, InfiniBand 50 GB/s per GPU, and it
    # prices an H800 at $2 per GPU-hour.
    _h("h800", "NVIDIA H800 SXM5 80GB (export H100: NVLink 400 GB/s, as used for DeepSeek-V3)",
       989.4, 1979.0, 3350, 81559, 200, 50, 2.00,
       "NVIDIA H800 product brief; DeepSeek-V3 technical report sec. 3", sms=132),
    # NVIDIA A100 datasheet: BF16 312 TFLOPS dense (624 sparse); 80GB HBM2e 2,039 GB/s;
    # NVLink 3 600 GB/s total (300 per direction). DGX A100: 8x HDR 200 Gb/s (25 GB/s) per GPU.
    # No FP8 tensor cores.
    _h("a100-80gb", "NVIDIA A100 SXM4 80GB (HGX A100 node, NVLink 3, HDR InfiniBand)",
       312.0, 0.0, 2039, 81920, 300, 25, 1.79,
       "NVIDIA A100 datasheet; DGX A100 user guide", sms=108),
    _h("a100-40gb", "NVIDIA A100 SXM4 40GB (HGX A100 node, NVLink 3, HDR InfiniBand)",
       312.0, 0.0, 1555, 40960, 300, 25, 1.29,
       "NVIDIA A100 datasheet", sms=108),
    # NVIDIA Ada GPU architecture whitepaper, RTX 4090: BF16 tensor (FP32 accumulate) 165.2
    # TFLOPS dense, FP8 330.3 dense (FP32 accumulate); 24 GB GDDR6X at 1,008 GB/s. No NVLink:
    # GPUs talk over PCIe 4.0 x16 (~32 GB/s per direction). 25 Gb/s Ethernet per GPU assumed.
    _h("rtx4090", "NVIDIA GeForce RTX 4090 24GB (PCIe 4.0 box, no NVLink)",
       165.2, 330.3, 1008, 24564, 32, 3.125, 0.69,
       "NVIDIA Ada Lovelace architecture whitepaper (RTX 4090)",
       link_kind="pcie", link_lat=1e-6, net_lat=5e-6, sms=128),
    # NVIDIA L40S datasheet: BF16 362.05 TFLOPS dense (733 sparse), FP8 733 dense; 48 GB GDDR6
    # at 864 GB/s; PCIe 4.0 x16, no NVLink. 100 Gb/s (12.5 GB/s) per GPU assumed.
    _h("l40s", "NVIDIA L40S 48GB (PCIe 4.0 server, no NVLink)",
       362.05, 733.0, 864, 46068, 32, 12.5, 0.86,
       "NVIDIA L40S datasheet",
       link_kind="pcie", link_lat=1e-6, net_lat=5e-6, sms=142),
]

GPUS: dict[str, GPUSpec] = {g.name: g for g in _PRESETS}
_ALIASES = {"h100-sxm": "h100", "h100-80gb": "h100", "h200-sxm": "h200", "a100": "a100-80gb",
            "a100-80g": "a100-80gb", "a100-40g": "a100-40gb", "4090": "rtx4090",
            "rtx-4090": "rtx4090"}


def get_gpu(name: str | GPUSpec) -> GPUSpec:
    """The preset called `name` (see `lookup.py`; a few aliases such as 'a100' work)."""
    return find_preset("GPU preset", name, GPUS, GPUSpec, _ALIASES,
                       "(or load your own with batchlab.costmodel.load_gpu(path))")


def list_gpus() -> list[tuple[str, str]]:
    """(name, one-line description) of every GPU preset."""
    return [(g.name, g.description) for g in _PRESETS]
