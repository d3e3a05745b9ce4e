"""The torch backend's model configurations: `TransformerConfig` (a Llama-shaped dense or MoE
transformer small enough for a CPU), its presets ("tiny-dense", "small-moe", ...), loading
one from a name, dict or file (`get_config`), and picking the torch device (`pick_device`).
"""

from __future__ import annotations

import attrs
import torch

from ...core.errors import ConfigError
from ...costmodel.loading import read_table

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64}
_COSTMODEL_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp32"}


def _count(minimum: int):
    def check(instance, attribute, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"TransformerConfig {instance.name!r}: field {attribute.name!r} "
                              f"must be an int >= {minimum}, got {value!r}")
    return check


def _dtype(instance, attribute, value):
    if value not in _DTYPES:
        raise ConfigError(f"TransformerConfig {instance.name!r}: field 'dtype' is {value!r}; "
                          f"choose one of {', '.join(_DTYPES)}")


@attrs.frozen(slots=True)
class TransformerConfig:
    """The shape of the model (and the seed of its weights).

    head_dim: 0 means hidden_size // num_heads. num_experts: 0 for a dense FFN of
    intermediate_size; else E routed experts of moe_intermediate_size (0: intermediate_size),
    num_experts_per_tok of them per token.
    """

    name: str = "tiny-dense"
    vocab_size: int = attrs.field(default=256, validator=_count(2))
    hidden_size: int = attrs.field(default=64, validator=_count(1))
    num_layers: int = attrs.field(default=2, validator=_count(1))
    num_heads: int = attrs.field(default=4, validator=_count(1))
    num_kv_heads: int = attrs.field(default=2, validator=_count(1))
    head_dim: int = attrs.field(default=0, validator=_count(0))
    intermediate_size: int = attrs.field(default=128, validator=_count(1))
    num_experts: int = attrs.field(default=0, validator=_count(0))
    num_experts_per_tok: int = attrs.field(default=2, validator=_count(1))
    moe_intermediate_size: int = attrs.field(default=0, validator=_count(0))
    rope_theta: float = 10000.0
    seed: int = attrs.field(default=0, validator=_count(0))
    dtype: str = attrs.field(default="float32", validator=_dtype)

    def __attrs_post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"TransformerConfig {self.name!r}: num_heads {self.num_heads} is "
                              f"not a multiple of num_kv_heads {self.num_kv_heads}")
        if not self.head_dim and self.hidden_size % self.num_heads:
            raise ConfigError(f"TransformerConfig {self.name!r}: hidden_size "
                              f"{self.hidden_size} is not a multiple of num_heads "
                              f"{self.num_heads}; give head_dim")
        if self.dim % 2:
            raise ConfigError(f"TransformerConfig {self.name!r}: head_dim {self.dim} must be "
                              "even (rotary embedding)")
        if self.is_moe and self.num_experts_per_tok > self.num_experts:
            raise ConfigError(f"TransformerConfig {self.name!r}: num_experts_per_tok "
                              f"{self.num_experts_per_tok} exceeds num_experts "
                              f"{self.num_experts}")

    @property
    def dim(self) -> int:
        """Per-head dimension."""
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def q_per_kv(self) -> int:
        """Query heads that share one KV head (grouped-query attention; 1: multi-head)."""
        return self.num_heads // self.num_kv_heads

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def expert_size(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    def to_model_config(self):
        """The same shape as a cost-model `ModelConfig` (for calibration and simulation)."""
        from ...costmodel import ModelConfig
        dt = _COSTMODEL_DTYPE[self.dtype]
        return ModelConfig(
            name=self.name, description=f"torch {self.name} ({self.dtype})",
            source="batchlab.backends.torch.model", vocab_size=self.vocab_size,
            hidden_size=self.hidden_size, num_layers=self.num_layers, num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads, head_dim=self.dim,
            intermediate_size=0 if self.is_moe else self.intermediate_size,
            num_experts=self.num_experts,
            num_experts_per_tok=self.num_experts_per_tok if self.is_moe else 0,
            moe_intermediate_size=self.expert_size if self.is_moe else 0,
            weight_dtype=dt, kv_dtype=dt, act_dtype=dt)


PRESETS = {
    # For tests: a step takes about a millisecond on one CPU core.
    "tiny-dense": TransformerConfig("tiny-dense"),
    "tiny-moe": TransformerConfig("tiny-moe", num_experts=8, num_experts_per_tok=2,
                                  moe_intermediate_size=64),
    # For benchmarks and calibration: big enough that weights and matmuls, not Python,
    # dominate a step at small batch (about 24M parameters, 96 MB in float32).
    "small-dense": TransformerConfig("small-dense", vocab_size=4096, hidden_size=512,
                                     num_layers=6, num_heads=8, num_kv_heads=2,
                                     intermediate_size=1536),
    "small-moe": TransformerConfig("small-moe", vocab_size=4096, hidden_size=512,
                                   num_layers=6, num_heads=8, num_kv_heads=2,
                                   intermediate_size=1536, num_experts=8,
                                   num_experts_per_tok=2, moe_intermediate_size=768),
}


def get_config(spec) -> TransformerConfig:
    """A TransformerConfig from a preset name, a dict of fields, a .toml/.json file (fields at
    top level or in a [torch_model] table) or a TransformerConfig."""
    if isinstance(spec, TransformerConfig):
        return spec
    if isinstance(spec, dict):
        table = dict(spec)
        base = table.pop("base", None)
        known = {a.name for a in attrs.fields(TransformerConfig)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"torch model config: unknown field(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        if base is not None:
            return attrs.evolve(get_config(base), **table)
        return TransformerConfig(**table)
    text = str(spec)
    if text.endswith((".toml", ".json")):
        # the cost model's reader: a [torch_model] table, or fields at top level
        table = read_table(text, "torch_model")
        try:
            return get_config(table)
        except ConfigError as exc:  # it named the default name ('tiny-dense'), not the file
            raise ConfigError(f"{text}: {exc}") from None
    if text not in PRESETS:
        raise ConfigError(f"unknown torch model {text!r}; presets: {', '.join(PRESETS)} "
                          "(or a .toml/.json file of TransformerConfig fields)")
    return PRESETS[text]


def pick_device(device: str | None = None) -> torch.device:
    """"cuda" when available and not told otherwise, else "cpu"."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"torch device {device!r} asked for, but CUDA is not available here")
    try:
        picked = torch.device(device)
    except (RuntimeError, TypeError):   # torch's own words list two dozen device types
        raise ConfigError(f"unknown torch device {device!r}; use cpu, cuda or cuda:N") from None
    if picked.type == "cuda" and picked.index is not None and \
            picked.index >= torch.cuda.device_count():
        raise ConfigError(f"torch device {device!r} asked for, but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s), cuda:0 upwards")
    return picked
