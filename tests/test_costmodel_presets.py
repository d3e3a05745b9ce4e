"""Cost-model presets: parameter counts against published totals, lookup errors, file loading,
and the validation of user-given numbers."""

from __future__ import annotations

import json
import math

import attrs
import pytest

from batchlab.core import ConfigError
from batchlab.costmodel import (
    GPUS, MODELS, Efficiency, GPUSpec, get_deployment, get_gpu, get_model, get_runtime,
    list_gpus, list_models,
    load_efficiency, load_gpu, load_model, make_devices,
)

# (preset, published total, published active or None, relative tolerance)
PUBLISHED_PARAMS = [
    # Meta Llama 3 model card / config: 8.03B
    ("llama-3-8b", 8.03e9, None, 0.01),
    # Meta Llama 3 70B: 70.6B
    ("llama-3-70b", 70.6e9, None, 0.01),
    # Mixtral paper (arXiv 2401.04088): 46.7B total, 12.9B active per token
    ("mixtral-8x7b", 46.7e9, 12.9e9, 0.01),
    # Qwen3-30B-A3B model card: 30.5B total, 3.3B activated
    ("qwen3-30b-a3b", 30.5e9, 3.3e9, 0.03),
    # DeepSeek-V3 technical report (arXiv 2412.19437): 671B total, 37B activated
    ("deepseek-v3", 671e9, 37e9, 0.02),
    # OPT paper (Zhang et al. 2022): 13B (12.85B counted from the config)
    ("opt-13b", 12.85e9, None, 0.01),
]


@pytest.mark.parametrize("name,total,active,tol", PUBLISHED_PARAMS)
def test_parameter_counts_match_published_totals(name, total, active, tol):
    m = get_model(name)
    assert m.num_params == pytest.approx(total, rel=tol)
    if active is not None:
        assert m.num_active_params == pytest.approx(active, rel=tol)
    else:
        assert m.num_active_params == m.num_params


def test_deepseek_v3_shape():
    m = get_model("deepseek-v3")
    assert (m.num_layers, m.num_dense_layers, m.num_moe_layers) == (61, 3, 58)
    assert (m.num_experts, m.num_shared_experts, m.num_experts_per_tok) == (256, 1, 8)
    assert m.kv_values_per_token_layer == 512 + 64  # MLA latent + decoupled RoPE key
    assert m.weight_bytes == 1  # released in FP8


def test_every_gpu_preset_has_a_source_and_sane_numbers():
    for name, desc in list_gpus():
        g = get_gpu(name)
        assert g.source and desc
        assert 100e12 < g.bf16_flops < 2000e12
        assert 500e9 < g.memory_bandwidth < 6000e9
        assert 20 * 2**30 < g.memory_bytes < 150 * 2**30
        assert g.price_per_hour > 0
    assert {"h100", "h200", "h800", "a100-80gb", "a100-40gb", "rtx4090", "l40s"} <= set(GPUS)


def test_every_model_preset_is_listed_with_its_size():
    listed = dict(list_models())
    assert set(listed) == set(MODELS)
    assert "671.0B" in listed["deepseek-v3"] and "active" in listed["deepseek-v3"]
    for m in MODELS.values():
        assert m.source


def test_aliases_and_case():
    assert get_gpu("H100").name == "h100"
    assert get_gpu("A100").name == "a100-80gb"
    assert get_model("DeepSeek-V3").name == "deepseek-v3"
    assert get_model("mixtral").name == "mixtral-8x7b"


def test_unknown_presets_name_the_choices():
    with pytest.raises(ConfigError, match=r"unknown GPU preset 'b300'.*h100.*l40s"):
        get_gpu("b300")
    with pytest.raises(ConfigError, match=r"unknown model preset 'gpt-5'.*llama-3-8b.*deepseek-v3"):
        get_model("gpt-5")


@pytest.mark.parametrize("kind,find,name,expected", [
    ("GPU preset", get_gpu, " H100_SXM ", "h100"),
    ("model preset", get_model, "DeepSeek V3", "deepseek-v3"),
    ("runtime profile", get_runtime, "CUDA_graph", "cuda-graph"),
    ("deployment", get_deployment, "deepseek_v3_production", "deepseek-v3-production"),
])
def test_every_kind_of_preset_is_found_by_one_rule(kind, find, name, expected):
    # case, spaces and '_' for '-' aside, alike for the four kinds (lookup.py): before, a
    # runtime profile or deployment spelt with '_' was unknown where a GPU's was found
    assert find(name).name == expected
    assert find(find(expected)) is find(expected)  # a preset object passes through
    with pytest.raises(ConfigError, match=rf"^{kind} must be a preset name or a \w+, not 3$"):
        find(3)
    with pytest.raises(ConfigError, match=rf"^unknown {kind} 'nope'; choose one of .*{expected}"):
        find("nope")


@pytest.mark.parametrize("field,value", [
    ("memory_bandwidth", 0), ("memory_bandwidth", -1.0), ("bf16_flops", math.nan),
    ("link_bandwidth", math.inf), ("link_latency", -1e-6), ("price_per_hour", -2.0),
    ("gpus_per_node", 2.5), ("memory_bytes", "80GB"),
])
def test_bad_gpu_numbers_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        load_gpu({"base": "h100", field: value})


@pytest.mark.parametrize("field,value", [
    ("compute", 0), ("memory", 1.5), ("communication", math.nan), ("step_overhead", -1),
    ("compute", "fast"),
])
def test_bad_efficiencies_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        Efficiency(**{field: value})
    with pytest.raises(ConfigError, match=field):
        make_devices("llama-3-8b", "h100", efficiency={field: value})


def test_bad_model_fields():
    with pytest.raises(ConfigError, match="num_layers"):
        load_model({"base": "llama-3-8b", "num_layers": 0})
    with pytest.raises(ConfigError, match="num_kv_heads"):
        load_model({"base": "llama-3-8b", "num_kv_heads": 7})
    with pytest.raises(ConfigError, match="unknown model field.*'layers'"):
        load_model({"base": "llama-3-8b", "layers": 3})
    with pytest.raises(ConfigError, match="attention"):
        load_model({"base": "llama-3-8b", "attention": "linear"})


def test_gpu_from_toml_with_base_and_units(tmp_path):
    path = tmp_path / "gpu.toml"
    path.write_text('[gpu]\nbase = "h100"\nname = "h100-cheap"\nprice_per_hour = 1.5\n'
                    'memory_bandwidth_gb_s = 3000\n')
    g = load_gpu(path)
    assert (g.name, g.price_per_hour, g.memory_bandwidth) == ("h100-cheap", 1.5, 3000e9)
    assert g.bf16_flops == get_gpu("h100").bf16_flops
    dev = make_devices("llama-3-8b", str(path))[0]
    assert dev.price_per_hour == 1.5 and dev.name == "h100-cheapx1-0"


def test_model_and_efficiency_from_json(tmp_path):
    path = tmp_path / "setup.json"
    path.write_text(json.dumps({
        "model": {"name": "tiny", "vocab_size": 1000, "hidden_size": 256, "num_layers": 4,
                  "num_heads": 4, "num_kv_heads": 2, "head_dim": 64, "intermediate_size": 512},
        "efficiency": {"compute": 0.5, "memory": 0.6},
    }))
    m = load_model(path)
    assert m.name == "tiny" and m.num_params > 0
    e = load_efficiency(path)
    assert (e.compute, e.memory, e.communication) == (0.5, 0.6, Efficiency().communication)
    dev = make_devices(str(path), "rtx4090", efficiency=str(path))[0]
    assert dev.step_model.efficiency.compute == 0.5


def test_file_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_gpu(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[gpu\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_gpu(bad)
    with pytest.raises(ConfigError, match="needs a 'name'"):
        load_gpu({"bf16_flops": 1e14})
    with pytest.raises(ConfigError, match="incomplete GPU"):
        load_gpu({"name": "x", "bf16_flops": 1e14})


def test_gpuspec_is_a_frozen_value():
    """Assigning a field raises attrs' frozen error (not any error) and changes nothing: a
    preset shared by every device cannot be edited in place by one caller."""
    g = get_gpu("h200")
    assert isinstance(g, GPUSpec)
    before = g.memory_bandwidth
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        g.memory_bandwidth = 1.0
    assert get_gpu("h200").memory_bandwidth == before != 1.0
