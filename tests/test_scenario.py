"""scenario: one flat description of a run, shared by the CLI, sweeps and compare."""

from __future__ import annotations

import pytest

from batchlab import ConfigError
from batchlab.studies import scenario
from batchlab.costmodel import DisaggregatedDevice, make_devices


def test_unknown_setting_is_named():
    with pytest.raises(ConfigError, match="unknown run setting 'rte'"):
        scenario.check_keys({"rte": 3})


def test_disaggregated_pools_build_one_two_pool_device():
    devices = scenario.build_devices({"model": "deepseek-v3", "gpu": "h200",
                                      "attention_gpus": 8, "ffn_gpus": 8})
    assert len(devices) == 1 and isinstance(devices[0], DisaggregatedDevice)
    with pytest.raises(ConfigError, match="attention_gpus and ffn_gpus"):
        scenario.build_devices({"model": "deepseek-v3", "gpu": "h200", "attention_gpus": 8})
    with pytest.raises(ConfigError, match="instead of gpus"):
        scenario.build_devices({"model": "deepseek-v3", "gpu": "h200", "attention_gpus": 8,
                                "ffn_gpus": 8, "gpus": 16})
    with pytest.raises(ConfigError, match="attention_gpus needs a model"):
        scenario.build_devices({"attention_gpus": 8})


def test_cost_model_kv_transfer_crosses_the_network_at_the_nics_rate():
    a, b = make_devices("llama-3-70b", "h200", 4, dp=2)
    # 80 layers x K and V x 8 KV heads x 128 dims x 2 bytes = 327,680 bytes per token.
    assert a.kv_bytes_per_token == 80 * 2 * 8 * 128 * 2
    bandwidth = 2 * a.gpu.network_bandwidth         # two GPUs send their shards in parallel
    expected = a.gpu.network_latency + 1000 * a.kv_bytes_per_token / bandwidth
    assert a.kv_transfer_time(1000, b) == pytest.approx(expected)
    assert a.kv_transfer_time(2000, b) > a.kv_transfer_time(1000, b)


def test_pd_disaggregation_runs_on_cost_model_replicas():
    result = scenario.run({"policy": "pd-disaggregated", "model": "llama-3-8b", "gpu": "h100",
                           "gpus": 2, "dp": 2, "rate": 4.0, "requests": 60})
    summary = result.summary()
    assert summary["num_finished"] == 60 and summary["kv_transfers"] > 0


def test_efficiency_profile_slows_or_speeds_the_cost_model(tmp_path):
    profile = tmp_path / "eff.toml"
    profile.write_text("[efficiency]\ncompute = 0.35\nmemory = 0.4\n")
    base = {"model": "llama-3-8b", "gpu": "h100", "rate": 2.0, "requests": 30}
    slow = scenario.run({**base, "efficiency": str(profile)}).summary()["tpot_p50_s"]
    fast = scenario.run(base).summary()["tpot_p50_s"]
    assert slow > 1.5 * fast
