"""`ModelConfig`: the shape of a decoder-only transformer, and the parameter counts it implies.

One class covers dense models (Llama), mixture-of-experts models (Mixtral, Qwen3-MoE) and
DeepSeek-V3's multi-head latent attention (MLA). The fields follow the names of the models'
Hugging Face `config.json`, so a preset can be checked against its published config line by
line. Counting parameters from the shape (instead of quoting a total) is what lets tests hold
the presets to the published totals: a wrong field shows up as a wrong total.

Biases, rotary tables and DeepSeek-V3's multi-token-prediction module (not used to serve) are
left out; they are well under 0.1% of the weights of the presets.
"""

from __future__ import annotations

import attrs

from batchlab.core import ConfigError

from .checks import v_count, v_count0

_DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "fp32": 4}


def _v_dtype(instance, attribute, value):
    if value not in _DTYPE_BYTES:
        raise ConfigError(f"ModelConfig {instance.name!r}: field {attribute.name!r} is "
                          f"{value!r}; choose one of {', '.join(_DTYPE_BYTES)}")


def _v_attention(instance, attribute, value):
    if value not in ("gqa", "mla"):
        raise ConfigError(f"ModelConfig {instance.name!r}: field 'attention' is {value!r}; "
                          "use 'gqa' (multi-head/grouped-query) or 'mla' (latent attention)")


@attrs.frozen(slots=True)
class ModelConfig:
    """A decoder-only transformer.

    attention: "gqa" (MHA, GQA and MQA) or "mla" (DeepSeek latent attention; then the
        q_lora_rank/kv_lora_rank/qk_*_head_dim/v_head_dim fields apply).
    ffn_matrices: 3 for gated FFNs (SwiGLU: gate, up, down), 2 for plain ones (GELU).
    num_experts: routed experts per MoE layer (0 = dense model); num_experts_per_tok: top-k;
        num_shared_experts: always-on experts of moe_intermediate_size each;
        first_k_dense: leading layers that keep a dense FFN of intermediate_size.
    weight_dtype / kv_dtype / act_dtype: storage of weights, KV cache and activations.
    """

    name: str
    description: str = ""
    source: str = ""
    vocab_size: int = attrs.field(default=32000, validator=v_count)
    hidden_size: int = attrs.field(default=4096, validator=v_count)
    num_layers: int = attrs.field(default=32, validator=v_count)
    num_heads: int = attrs.field(default=32, validator=v_count)
    num_kv_heads: int = attrs.field(default=32, validator=v_count)
    head_dim: int = attrs.field(default=128, validator=v_count)
    intermediate_size: int = attrs.field(default=11008, validator=v_count0)
    ffn_matrices: int = attrs.field(default=3, validator=v_count)
    tie_word_embeddings: bool = False
    qk_norm: bool = False
    attention: str = attrs.field(default="gqa", validator=_v_attention)
    q_lora_rank: int = attrs.field(default=0, validator=v_count0)
    kv_lora_rank: int = attrs.field(default=0, validator=v_count0)
    qk_nope_head_dim: int = attrs.field(default=0, validator=v_count0)
    qk_rope_head_dim: int = attrs.field(default=0, validator=v_count0)
    v_head_dim: int = attrs.field(default=0, validator=v_count0)
    num_experts: int = attrs.field(default=0, validator=v_count0)
    num_experts_per_tok: int = attrs.field(default=0, validator=v_count0)
    moe_intermediate_size: int = attrs.field(default=0, validator=v_count0)
    num_shared_experts: int = attrs.field(default=0, validator=v_count0)
    first_k_dense: int = attrs.field(default=0, validator=v_count0)
    weight_dtype: str = attrs.field(default="bf16", validator=_v_dtype)
    kv_dtype: str = attrs.field(default="bf16", validator=_v_dtype)
    act_dtype: str = attrs.field(default="bf16", validator=_v_dtype)

    def __attrs_post_init__(self):
        def bad(msg):
            raise ConfigError(f"ModelConfig {self.name!r}: {msg}")

        if self.num_heads % self.num_kv_heads:
            bad(f"num_heads {self.num_heads} is not a multiple of num_kv_heads "
                f"{self.num_kv_heads}")
        if self.is_moe:
            if not 1 <= self.num_experts_per_tok <= self.num_experts:
                bad(f"num_experts_per_tok {self.num_experts_per_tok} must be in "
                    f"1..num_experts ({self.num_experts})")
            if self.moe_intermediate_size < 1:
                bad("a MoE model needs moe_intermediate_size >= 1")
            if self.first_k_dense > self.num_layers:
                bad(f"first_k_dense {self.first_k_dense} exceeds num_layers {self.num_layers}")
        if self.num_dense_layers and self.intermediate_size < 1:
            bad("dense FFN layers need intermediate_size >= 1")
        if self.attention == "mla" and min(self.kv_lora_rank, self.qk_nope_head_dim,
                                           self.qk_rope_head_dim, self.v_head_dim) < 1:
            bad("MLA needs kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim and v_head_dim "
                ">= 1")

    # ---- derived shape -------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.first_k_dense if self.is_moe else 0

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    @property
    def weight_bytes(self) -> int:
        return _DTYPE_BYTES[self.weight_dtype]

    @property
    def kv_bytes(self) -> int:
        return _DTYPE_BYTES[self.kv_dtype]

    @property
    def act_bytes(self) -> int:
        return _DTYPE_BYTES[self.act_dtype]

    @property
    def kv_values_per_token_layer(self) -> int:
        """Values cached per token per layer: K and V of every KV head, or MLA's latent+rope."""
        if self.attention == "mla":
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token occupies across all layers (unsharded)."""
        return self.kv_values_per_token_layer * self.kv_bytes * self.num_layers

    # ---- parameter counts ----------------------------------------------------------------
    @property
    def attention_params(self) -> int:
        """Per layer: projections and the attention-side norms (input norm, q/k or MLA norms)."""
        h = self.hidden_size
        if self.attention == "mla":
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * self.num_heads * qk
            else:
                q = h * self.num_heads * qk
            kv = (h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
                  + self.kv_lora_rank * self.num_heads * (self.qk_nope_head_dim + self.v_head_dim))
            o = self.num_heads * self.v_head_dim * h
            return q + kv + o + h
        qkv = h * (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        o = self.num_heads * self.head_dim * h
        return qkv + o + h + (2 * self.head_dim if self.qk_norm else 0)

    @property
    def dense_ffn_params(self) -> int:
        """Per dense layer: FFN matrices and the post-attention norm."""
        return self.ffn_matrices * self.hidden_size * self.intermediate_size + self.hidden_size

    @property
    def expert_params(self) -> int:
        """One routed (or shared) expert."""
        return self.ffn_matrices * self.hidden_size * self.moe_intermediate_size

    @property
    def moe_fixed_params(self) -> int:
        """Per MoE layer, besides the routed experts: router, shared experts, norm."""
        return (self.num_experts * self.hidden_size + self.num_shared_experts * self.expert_params
                + self.hidden_size)

    @property
    def embedding_params(self) -> int:
        """Input embedding, final norm and (if untied) the output head."""
        e = self.vocab_size * self.hidden_size
        return e * (1 if self.tie_word_embeddings else 2) + self.hidden_size

    @property
    def num_params(self) -> int:
        """All weights."""
        return (self.num_layers * self.attention_params
                + self.num_dense_layers * self.dense_ffn_params
                + self.num_moe_layers * (self.moe_fixed_params
                                         + self.num_experts * self.expert_params)
                + self.embedding_params)

    @property
    def num_active_params(self) -> int:
        """Weights one token uses: all but the routed experts it is not sent to."""
        unused = self.num_experts - self.num_experts_per_tok
        return self.num_params - self.num_moe_layers * unused * self.expert_params

    def describe(self) -> str:
        active = (f", {self.num_active_params / 1e9:.1f}B active" if self.is_moe else "")
        return f"{self.name}: {self.num_params / 1e9:.1f}B params{active}"
