#!/usr/bin/env bash
# The torch backend's checks that need a GPU, in one go: the torch tests with CUDA present
# (the CUDA correctness tests: CUDA tokens must equal CPU tokens), the batching curve on the
# GPU, `batchlab calibrate` on the GPU (fit + simulator-vs-real fidelity), the affine fidelity
# benchmark, the GEMM rates the cost model's efficiencies stand for, and the backend at
# Llama-3-8B's layer shapes against the cost model. Run from the repository root on a
# machine with CUDA and torch, batchlab installed (`pip install -e .`; offline, add --no-deps
# --no-build-isolation --no-index); about three minutes on one GPU.
#
#   benchmarks/gpu_check.sh [OUTDIR]      # OUTDIR (default gpu-check/) gets the profile, JSON
#
# PYTHON names the interpreter (default python3). Each part has its own time limit, and a
# failing part does not stop the others; the script exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${1:-gpu-check}
mkdir -p "$OUT_DIR"
$PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA here: nothing to check")' || exit 1
# Policies are found by their entry points: batchlab on PYTHONPATH alone finds none.
$PY -c 'import sys, batchlab; sys.exit(0 if batchlab.available_policies() else
  "batchlab is not installed (its policies are found by entry points): pip install -e . first")' || exit 1
$PY - <<'PY'
import torch
p = torch.cuda.get_device_properties(0)
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0),
      f"({p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB)")
PY
failed=()
part() {  # part NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo; echo "== $name"; local t0=$SECONDS
  timeout "$limit" "$@"; local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || failed+=("$name")
}
# -rs shows skip reasons: a CUDA test that skips here is a failure of this check.
part "torch tests, CUDA present" 120 $PY -m pytest -q -rs -p no:cacheprovider -o addopts= \
    tests/test_torch_correctness.py tests/test_torch_wallclock.py tests/test_torch_calibrate.py
part "batching curve (cuda)" 90 $PY benchmarks/backend_batching.py --device cuda \
    --max-batch 256 --repeats 10 --configs tiny-dense,small-dense,small-moe
part "batchlab calibrate (cuda)" 120 $PY -c 'import sys; from batchlab.cli import main; sys.exit(main())' \
    calibrate --device cuda --out "$OUT_DIR/calibration.toml" --json "$OUT_DIR/calibration.json"
part "affine fidelity (cuda)" 60 $PY benchmarks/backend_fidelity.py --device cuda \
    --config small-dense --policy continuous
part "GEMM rates" 90 $PY benchmarks/gemm_rates.py --json "$OUT_DIR/gemm_rates.json"
part "Llama-3-8B layer shapes vs the cost model" 180 $PY benchmarks/gpu_model_check.py \
    --prefills 512,2048 --json "$OUT_DIR/gpu_model_check.json"
echo
if [ ${#failed[@]} -gt 0 ]; then echo "FAILED: ${failed[*]}"; exit 1; fi
echo "all parts passed"
