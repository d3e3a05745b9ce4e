#!/usr/bin/env bash
# The torch backend's checks that need a GPU: the CUDA correctness tests (CUDA tokens must
# equal CPU tokens) and the batching curve on the GPU. Run from the repository root on a
# machine with CUDA and torch installed; takes about a minute on one GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA here: nothing to check")'
python - <<'PY'
import torch
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
PY
# -rs shows skip reasons: a CUDA test that skips here is a failure of this check.
python -m pytest -q -rs -p no:cacheprovider tests/test_torch_correctness.py -k cuda
python benchmarks/backend_batching.py --device cuda --max-batch 256 --repeats 10 \
    --configs tiny-dense,small-dense,small-moe
