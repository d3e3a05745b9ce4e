"""Built-in model presets, each from its published `config.json` or paper.

`tests/test_costmodel_presets.py` checks that the parameter counts these shapes imply match
the published totals, so a mistyped field cannot hide here.
"""

from __future__ import annotations

from .lookup import find_preset
from .models import ModelConfig

_PRESETS = [
    # meta-llama/Meta-Llama-3-8B config.json; Meta's model card gives 8B (8.03B) parameters.
    ModelConfig(
        name="llama-3-8b", description="Meta Llama 3 8B, dense, GQA 32q/8kv heads",
        source="huggingface.co/meta-llama/Meta-Llama-3-8B config.json (8.03B params)",
        vocab_size=128256, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8,
        head_dim=128, intermediate_size=14336),
    # meta-llama/Meta-Llama-3-70B config.json; 70.6B parameters.
    ModelConfig(
        name="llama-3-70b", description="Meta Llama 3 70B, dense, GQA 64q/8kv heads",
        source="huggingface.co/meta-llama/Meta-Llama-3-70B config.json (70.6B params)",
        vocab_size=128256, hidden_size=8192, num_layers=80, num_heads=64, num_kv_heads=8,
        head_dim=128, intermediate_size=28672),
    # mistralai/Mixtral-8x7B-v0.1 config.json; Mistral AI, "Mixtral of experts" (2023):
    # 46.7B total parameters, 12.9B used per token.
    ModelConfig(
        name="mixtral-8x7b", description="Mistral Mixtral 8x7B, MoE 8 experts top-2",
        source="huggingface.co/mistralai/Mixtral-8x7B-v0.1 config.json; Mixtral paper "
               "(arXiv 2401.04088): 46.7B total, 12.9B active",
        vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8,
        head_dim=128, intermediate_size=0, num_experts=8, num_experts_per_tok=2,
        moe_intermediate_size=14336),
    # Qwen/Qwen3-30B-A3B config.json; model card: 30.5B total, 3.3B activated, 48 layers,
    # 32 q / 4 kv heads, 128 experts with 8 activated.
    ModelConfig(
        name="qwen3-30b-a3b", description="Qwen3 30B-A3B, MoE 128 experts top-8, GQA 32q/4kv",
        source="huggingface.co/Qwen/Qwen3-30B-A3B config.json and model card "
               "(30.5B total, 3.3B active)",
        vocab_size=151936, hidden_size=2048, num_layers=48, num_heads=32, num_kv_heads=4,
        head_dim=128, intermediate_size=0, qk_norm=True, num_experts=128,
        num_experts_per_tok=8, moe_intermediate_size=768),
    # deepseek-ai/DeepSeek-V3 config.json; technical report (arXiv 2412.19437): 671B total,
    # 37B activated per token; 61 layers, the first 3 dense; 1 shared + 256 routed experts,
    # top-8; MLA with a 512-dim latent plus 64-dim decoupled RoPE key cached per token.
    # Weights are released in FP8 (sec. 3.3), which is how it fits on one 8-GPU H200 node.
    ModelConfig(
        name="deepseek-v3", description="DeepSeek-V3 671B, MoE 256+1 experts top-8, MLA, FP8",
        source="huggingface.co/deepseek-ai/DeepSeek-V3 config.json; DeepSeek-V3 technical "
               "report (arXiv 2412.19437): 671B total, 37B active",
        vocab_size=129280, hidden_size=7168, num_layers=61, num_heads=128, num_kv_heads=128,
        head_dim=128, intermediate_size=18432, attention="mla", q_lora_rank=1536,
        kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
        num_experts=256, num_experts_per_tok=8, moe_intermediate_size=2048,
        num_shared_experts=1, first_k_dense=3, weight_dtype="fp8"),
    # facebook/opt-13b config.json (Zhang et al. 2022, "OPT"): 40 layers, d=5120, 40 heads,
    # FFN 20480 with GELU. This is the 13B shape of kipply's "Transformer Inference
    # Arithmetic" FasterTransformer benchmark that the cost-model tests check against.
    ModelConfig(
        name="opt-13b", description="Meta OPT 13B, dense, MHA 40 heads, GELU FFN (fp16)",
        source="huggingface.co/facebook/opt-13b config.json (12.9B params)",
        vocab_size=50272, hidden_size=5120, num_layers=40, num_heads=40, num_kv_heads=40,
        head_dim=128, intermediate_size=20480, ffn_matrices=2, tie_word_embeddings=True,
        weight_dtype="fp16", kv_dtype="fp16", act_dtype="fp16"),
]

MODELS: dict[str, ModelConfig] = {m.name: m for m in _PRESETS}
_ALIASES = {"llama3-8b": "llama-3-8b", "llama-3.1-8b": "llama-3-8b", "llama3-70b": "llama-3-70b",
            "llama-3.1-70b": "llama-3-70b", "mixtral": "mixtral-8x7b", "deepseek": "deepseek-v3",
            "deepseekv3": "deepseek-v3", "deepseek-r1": "deepseek-v3", "qwen3-30b": "qwen3-30b-a3b",
            "qwen3-moe": "qwen3-30b-a3b", "gpt-13b": "opt-13b"}


def get_model(name: str | ModelConfig) -> ModelConfig:
    """The preset called `name` (see `lookup.py`; a few aliases such as 'mixtral' work)."""
    return find_preset("model preset", name, MODELS, ModelConfig, _ALIASES,
                       "(or load your own with batchlab.costmodel.load_model(path))")


def list_models() -> list[tuple[str, str]]:
    """(name, one-line description with parameter counts) of every model preset."""
    return [(m.name, f"{m.description} ({m.describe().split(': ', 1)[1]})") for m in _PRESETS]
