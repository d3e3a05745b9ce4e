"""Batching must not change what a model says: every policy, run on a TorchDevice by the
wall-clock engine, produces for each request exactly the tokens (and, within float32
tolerance, the logits) that the request gets when run alone on a fresh device.

Solo reference: feed the whole prompt in one step, then decode one token per step.
Tolerance: logits within atol=1e-4, rtol=0 (float32; batched matmuls sum in another order).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import batchlab  # noqa: E402
from batchlab.core import Batch  # noqa: E402
from batchlab.core.errors import ConfigError  # noqa: E402
from batchlab.workloads import Workload  # noqa: E402
from batchlab.backends.torch.device import TorchDevice, torch_devices  # noqa: E402
from batchlab.engines.wallclock import run_wallclock  # noqa: E402

ATOL = 1e-4
CAPACITY = 4096

# Small settings so that a 12-request workload exercises each policy's batching.
POLICY_PARAMS = {
    "continuous": dict(block_size=4),
    "bucketing": dict(min_len=16, max_len=64, block_size=4, max_wait=0.01),
    "fixed-window": dict(max_batch=4, window=0.01, block_size=4),
    "adaptive-window": dict(max_batch=4, window=0.01, block_size=4),
    "disaggregated": dict(block_size=4, max_num_batched_tokens=32),
}
SKIP = {
    "pd-disaggregated": "needs two or more devices and KV migrations between them, which "
                        "run_wallclock does not support yet",
}


@pytest.fixture(autouse=True)
def one_thread():
    # The machines that run this suite are shared: a second intra-op thread fighting for a
    # busy core makes tiny steps several times slower, and adds nothing to a correctness test.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_workload(n=12, seed=1) -> Workload:
    rng = np.random.default_rng(seed)
    return Workload(np.sort(rng.uniform(0, 0.05, n)), rng.integers(5, 41, n),
                    rng.integers(3, 13, n), name="torch-small")


@functools.lru_cache(maxsize=None)
def solo(config: str, rid: int, prompt: int, output: int, device: str = "cpu"):
    """(tokens, logits) of request `rid` run alone: whole prompt, then one token a step."""
    dev = TorchDevice("solo", config, CAPACITY, device=device, record_logits=True)
    dev.register(rid, prompt)
    dev.run(Batch([rid], [prompt], [0]))
    for i in range(output - 1):
        dev.run(Batch([rid], [1], [prompt + i]))
    return dev.history.generated(rid), torch.stack(dev.logits[rid])


def check_against_solo(result, devices, workload, config: str) -> None:
    assert (result.records["status"] == 2).all(), "every request must finish"
    history = devices[0].history
    for rid in range(workload.num_requests):
        prompt, output = int(workload.prompt_tokens[rid]), int(workload.output_tokens[rid])
        tokens, logits = solo(config, rid, prompt, output)
        assert history.generated(rid) == tokens, f"request {rid}: tokens differ from solo"
        # Logits of each generated token, from whichever device emitted it.
        got = {}
        for dev in devices:
            for i, row in enumerate(dev.logits.get(rid, [])):
                got.setdefault(rid, []).append(row)
        mine = torch.stack(got[rid])
        assert mine.shape == logits.shape, f"request {rid}: {mine.shape} vs {logits.shape}"
        torch.testing.assert_close(mine, logits, atol=ATOL, rtol=0)


def run_policy(name, params, config="tiny-dense", capacity=CAPACITY, n_devices=1,
               workload=None):
    workload = workload or small_workload()
    devices = torch_devices(n_devices, config, capacity, device="cpu", record_logits=True)
    result = run_wallclock(batchlab.load_policy(name, **params), workload, devices)
    check_against_solo(result, devices, workload, config)
    return result


def _policy_names():
    return [info.name for info in batchlab.available_policies(include_broken=False)]


@pytest.mark.parametrize("name", _policy_names())
def test_policy_matches_solo(name):
    if name in SKIP:
        pytest.skip(SKIP[name])
    run_policy(name, POLICY_PARAMS.get(name, {}))


def test_chunked_prefill_matches_solo():
    result = run_policy("continuous", dict(block_size=4, max_num_batched_tokens=16))
    # Prompts up to 40 tokens under a 16-token budget: prefill must have been chunked.
    assert result.devices["steps"][0] > result.records["output_tokens"].max()


def test_preemption_and_recompute_match_solo():
    # 12 requests of up to 52 tokens each, all at once, in 120 KV tokens: continuous admits
    # several, their decodes outgrow memory, and it must preempt (whatever the step times).
    wl = small_workload()
    wl = Workload(np.zeros(wl.num_requests), wl.prompt_tokens, wl.output_tokens)
    result = run_policy("continuous", dict(block_size=4), capacity=120, workload=wl)
    assert result.records["preemptions"].sum() > 0
    assert result.summary()["preemptions"] > 0


def test_moe_matches_solo():
    result = run_policy("continuous", dict(block_size=4, max_num_batched_tokens=24),
                        config="tiny-moe")
    assert result.devices["experts_touched"][0] > 0


def test_padded_batches_match_solo():
    result = run_policy("bucketing", POLICY_PARAMS["bucketing"])
    assert result.devices["padded_tokens"][0] > 0


def test_micro_batches_match_solo():
    run_policy("continuous", dict(block_size=4, num_micro_batches=2))


def test_two_devices_share_history():
    # Requests spread over two devices; each emits its tokens into the shared history.
    run_policy("continuous", dict(block_size=4), n_devices=2)


def test_chunked_prefill_equals_whole_prefill_on_device():
    whole = TorchDevice("a", "tiny-dense", CAPACITY, device="cpu", record_logits=True)
    parts = TorchDevice("b", "tiny-dense", CAPACITY, device="cpu", record_logits=True)
    for dev in (whole, parts):
        dev.register(7, 30)
    whole.run(Batch([7], [30], [0]))
    for start, n in ((0, 11), (11, 1), (12, 18)):
        parts.run(Batch([7], [n], [start]))
    assert whole.history.generated(7) == parts.history.generated(7)
    assert set(parts.last_logits) == {7}
    torch.testing.assert_close(parts.logits[7][0], whole.logits[7][0], atol=ATOL, rtol=0)


def test_recompute_from_zero_drops_the_cache():
    dev = TorchDevice("a", "tiny-dense", CAPACITY, device="cpu", record_logits=True)
    dev.register(0, 10)
    dev.run(Batch([0], [10], [0]))
    dev.run(Batch([0], [1], [10]))
    assert dev.cached_tokens(0) == 11
    dev.run(Batch([0], [12], [0]))          # recompute prompt + 2 generated tokens
    assert dev.cached_tokens(0) == 12
    tokens, _ = solo("tiny-dense", 0, 10, 3)
    assert dev.history.generated(0) == tokens
    dev.free(0)
    assert dev.cached_tokens(0) == 0


def test_unregistered_request_is_a_clear_error():
    dev = TorchDevice("a", "tiny-dense", CAPACITY, device="cpu")
    with pytest.raises(ConfigError, match="never registered"):
        dev.run(Batch([3], [4], [0]))


def test_kv_migrations_are_refused():
    devices = torch_devices(2, "tiny-dense", CAPACITY, device="cpu")
    with pytest.raises(ConfigError, match="migrations"):
        run_wallclock(batchlab.load_policy("pd-disaggregated"), small_workload(4), devices)


def test_realtime_waits_for_arrivals():
    wl = Workload([0.0, 0.15], [8, 8], [2, 2])
    dev = TorchDevice("dev0", "tiny-dense", CAPACITY, device="cpu")
    result = run_wallclock("continuous", wl, [dev], realtime=True)
    assert result.wall_time >= 0.15
    assert result.records["first_scheduled"][1] >= 0.15


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("config", ["tiny-dense", "tiny-moe"])
def test_cuda_matches_cpu(config):
    wl = small_workload()
    devices = torch_devices(1, config, CAPACITY, device="cuda", record_logits=True)
    result = run_wallclock(batchlab.load_policy("continuous", block_size=4,
                                                max_num_batched_tokens=16), wl, devices)
    assert (result.records["status"] == 2).all()
    for rid in range(wl.num_requests):
        tokens, logits = solo(config, rid, int(wl.prompt_tokens[rid]),
                              int(wl.output_tokens[rid]))
        assert devices[0].history.generated(rid) == tokens, f"request {rid}"
        # GPU kernels (TF32 is off by default for matmuls) differ from the CPU's order.
        torch.testing.assert_close(torch.stack(devices[0].logits[rid]), logits,
                                   atol=1e-3, rtol=0)


@pytest.mark.parametrize("padded_len", [None, 48])
def test_mixed_decode_and_prefill_step_matches_solo(padded_len):
    # Decode rows and a prefill row attend in separate groups; the result must not care.
    dev = TorchDevice("a", "tiny-dense", CAPACITY, device="cpu", record_logits=True)
    for rid, prompt in ((0, 12), (1, 20), (2, 30)):
        dev.register(rid, prompt)
    dev.run(Batch([0, 1], [12, 20], [0, 0]))
    dev.run(Batch([0, 1, 2], [1, 1, 30], [12, 20, 0], padded_len=padded_len))
    dev.run(Batch([0, 1, 2], [1, 1, 1], [13, 21, 30]))
    for rid, prompt in ((0, 12), (1, 20), (2, 30)):
        n = len(dev.history.generated(rid))
        tokens, logits = solo("tiny-dense", rid, prompt, n)
        assert dev.history.generated(rid) == tokens
        torch.testing.assert_close(torch.stack(dev.logits[rid]), logits, atol=ATOL, rtol=0)
