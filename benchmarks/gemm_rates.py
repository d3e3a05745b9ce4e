"""What GEMMs reach on this GPU at the shapes the cost model prices: TFLOP/s against M.

The cost model prices a GEMM at `peak x Efficiency.compute` unless a published kernel table
(`batchlab/costmodel/kernels.py`) gives the rate at the op's shape. This script measures the
rate on the GPU it runs on, through torch (cuBLAS/cuBLASLt), so the default efficiency and the
published tables can be checked against a real device:

- BF16 at Llama-3-8B's tp=1 shapes (the dense models the default efficiency serves);
- FP8 (e4m3, per-tensor scales, `torch._scaled_mm`) and BF16 at DeepSeek-V3's tp=1 shapes, the
  ones DeepGEMM publishes for H800 (`kernels.NORMAL`). torch's FP8 GEMM is cuBLASLt with one
  scale per tensor, not DeepGEMM's fine-grained (1x128 / 128x128) scaling: a different kernel
  at the same shapes, so a cross-check, not a replacement.

Each point is the median of `--repeats` timed replays (CUDA events) of a CUDA graph of at least
16 launches, after warm-up, over weights several times the L2 in total, rotated so a launch
does not find its weights in L2; timed one launch at a time from Python, a small GEMM would
measure the host's launch overhead instead of the kernel.

    python benchmarks/gemm_rates.py --json rates.json     # needs CUDA
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

# (name, N, K): N output features, K input features of one GPU's GEMM.
LLAMA3_8B = [  # config.json of meta-llama/Meta-Llama-3-8B: hidden 4096, 32 q / 8 kv heads of
    # 128, intermediate 14336, vocab 128256
    ("llama-3-8b qkv", 6144, 4096), ("llama-3-8b o_proj", 4096, 4096),
    ("llama-3-8b gate+up", 28672, 4096), ("llama-3-8b down", 4096, 14336),
    ("llama-3-8b lm_head", 128256, 4096),
]
DEEPSEEK_V3 = [  # the (N, K) pairs of kernels.NORMAL (DeepGEMM README, 2025-02-26)
    ("dsv3 q_a+kv_a", 2112, 7168), ("dsv3 q_b", 24576, 1536), ("dsv3 kv_b", 32768, 512),
    ("dsv3 o_proj", 7168, 16384), ("dsv3 expert gate+up", 4096, 7168),
    ("dsv3 expert down", 7168, 2048),
]
MS = (64, 128, 256, 512, 1024, 4096)


def _graph_seconds(calls, repeats: int) -> float:
    """Median seconds per call of `calls` (a list of GEMM launches) replayed as one CUDA graph:
    the host's launch overhead (tens of microseconds a torch call, longer than a small GEMM)
    stays out of the figure, as it does in a CUDA-graph serving runtime."""
    for call in calls:  # warm-up: cuBLAS picks its kernels and workspaces outside the capture
        call()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / len(calls))
    return statistics.median(times)


def measure(n: int, k: int, m: int, dtype: str, repeats: int, l2_bytes: int) -> float:
    """Seconds one (m x k) @ (k x n) GEMM takes."""
    dev = "cuda"
    elem = 1 if dtype == "fp8" else 2
    copies = max(2, -(-4 * l2_bytes // (n * k * elem)))  # weights rotated past the L2
    launches = max(16, copies)
    if dtype == "bf16":
        ws = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        calls = [lambda w=ws[i % copies]: a @ w.t() for i in range(launches)]
    else:
        f8 = torch.float8_e4m3fn
        ws = [torch.randn(n, k, device=dev).to(f8) for _ in range(copies)]
        a = torch.randn(m, k, device=dev).to(f8)
        one = torch.ones((), device=dev, dtype=torch.float32)
        # column-major second operand, as cuBLASLt's FP8 GEMM requires
        calls = [lambda w=ws[i % copies]: torch._scaled_mm(a, w.t(), scale_a=one, scale_b=one,
                                                           out_dtype=torch.bfloat16)
                 for i in range(launches)]
    seconds = _graph_seconds(calls, repeats)
    del calls, ws
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", metavar="FILE", help="also write every point as JSON")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gemm_rates.py: no CUDA device here; nothing to measure", file=sys.stderr)
        return 1
    props = torch.cuda.get_device_properties(0)
    l2 = int(getattr(props, "L2_cache_size", 50 << 20))
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"{props.multi_processor_count} SMs, L2 {l2 >> 20} MiB")
    plan = [(name, n, k, "bf16") for name, n, k in LLAMA3_8B]
    plan += [(name, n, k, dt) for name, n, k in DEEPSEEK_V3 for dt in ("fp8", "bf16")]
    points = []
    print(f"{'GEMM':<22} {'N':>6} {'K':>6} {'dtype':>5} " + " ".join(f"{'M=' + str(m):>7}"
                                                                    for m in MS))
    for name, n, k, dtype in plan:
        row = []
        for m in MS:
            try:
                seconds = measure(n, k, m, dtype, args.repeats, l2)
            except RuntimeError as exc:  # an FP8 GEMM this torch/GPU does not offer
                print(f"{name} {dtype} M={m}: {str(exc).splitlines()[0]}")
                seconds = float("nan")
            tflops = 2.0 * m * n * k / seconds / 1e12
            row.append(tflops)
            elem = 1 if dtype == "fp8" else 2
            points.append({"gemm": name, "n": n, "k": k, "dtype": dtype, "m": m,
                           "seconds": seconds, "tflops": tflops,
                           "operand_gb_per_s": (m * k + n * k) * elem / seconds / 1e9})
        print(f"{name:<22} {n:>6} {k:>6} {dtype:>5} " + " ".join(f"{t:>7.0f}" for t in row))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                       "repeats": args.repeats, "points": points}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
