"""`Layout`: how one model replica is spread over GPUs (tensor, expert, pipeline parallel).

A cluster of `num_gpus` GPUs holds `dp` data-parallel replicas; each replica is one simulator
Device of `num_gpus / dp` GPUs. Inside a replica:
- `pp` pipeline stages, each a contiguous block of `S = num_gpus / (dp * pp)` GPUs holding a
  contiguous block of layers (split as evenly as layer counts allow);
- attention (and dense FFNs, shared experts) tensor-parallel over `tp` GPUs. When tp < S the
  stage runs S/tp attention groups side by side on different rows of the batch
  ("data-parallel attention", as SGLang serves DeepSeek-V3): this needs expert parallelism over
  the whole stage to bring the groups' tokens together for the experts;
- routed experts expert-parallel over `ep` GPUs (E/ep experts each); if ep < S each expert is
  further split tensor-parallel over S/ep GPUs. `redundant_experts=N` adds N copies of
  experts (EPLB, DeepSeek's expert-parallel load balancer), so E + N slots are spread over
  the ep GPUs: DeepSeek-V3's 256 experts + 32 copies fill EP144 and EP72 (2 and 4 a GPU).
Defaults: tp = S, ep = S for MoE models and 1 for dense ones.
"""

from __future__ import annotations

import attrs
import numpy as np

from batchlab.core import ConfigError

from .models import ModelConfig


def _divides(what: str, value: int, whole: int, whole_name: str, hint: str = "") -> None:
    if value < 1 or whole % value:
        raise ConfigError(f"{what}={value} must be >= 1 and divide {whole_name} ({whole}){hint}")


@attrs.frozen(slots=True)
class Layout:
    """The resolved parallel layout of one replica (GPU indices are cluster-wide)."""

    tp: int
    ep: int
    pp: int
    dp: int
    stage_gpus: tuple[tuple[int, ...], ...]
    stage_dense_layers: tuple[int, ...]
    stage_moe_layers: tuple[int, ...]
    expert_slots: int = 0  # routed experts + redundant copies (0 for dense models)

    @property
    def stage_size(self) -> int:
        return len(self.stage_gpus[0])

    @property
    def num_gpus(self) -> int:
        return self.stage_size * self.pp

    @property
    def attention_dp(self) -> int:
        """Attention groups per stage (1 unless data-parallel attention)."""
        return self.stage_size // self.tp

    @property
    def expert_tp(self) -> int:
        """GPUs each routed expert is split over."""
        return self.stage_size // self.ep

    def tp_group(self, stage: int) -> tuple[int, ...]:
        return self.stage_gpus[stage][: self.tp]


def resolve_layout(model: ModelConfig, num_gpus: int, *, tp=None, ep=None, pp=1, dp=1,
                   replica: int = 0, redundant_experts: int = 0) -> Layout:
    """Check a parallel configuration against the model and GPU count, and fill defaults."""
    if (isinstance(redundant_experts, bool) or not isinstance(redundant_experts, int)
            or redundant_experts < 0):
        raise ConfigError(f"redundant_experts must be a whole number >= 0, not "
                          f"{redundant_experts!r}")
    for name, v in (("num_gpus", num_gpus), ("pp", pp), ("dp", dp), ("tp", tp), ("ep", ep)):
        if v is None and name in ("tp", "ep"):
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a whole number >= 1, not {v!r}")
    _divides("dp", dp, num_gpus, "num_gpus", "; each data-parallel replica gets num_gpus/dp GPUs")
    per_replica = num_gpus // dp
    _divides("pp", pp, per_replica, "GPUs per replica (num_gpus/dp)")
    if pp > model.num_layers:
        raise ConfigError(f"pp={pp} exceeds the {model.num_layers} layers of {model.name}")
    stage = per_replica // pp
    tp_default = tp is None
    tp = stage if tp_default else tp
    _divides("tp", tp, stage, "GPUs per pipeline stage (num_gpus/(dp*pp))",
             "; set tp to the GPUs of a stage, or use dp for more replicas")
    if model.num_heads % tp:
        hint = ""
        if tp_default:  # the user never named tp: say where it came from
            hint = (f" (tp defaults to the {stage} GPUs of a stage"
                    + (f"; for data-parallel attention beside expert parallelism, as "
                       f"DeepSeek serves, set tp=1 and ep={stage})" if model.is_moe else
                       "; set tp, or use dp for more replicas)"))
        raise ConfigError(f"tp={tp} must divide the {model.num_heads} attention heads of "
                          f"{model.name}{hint}")
    if model.is_moe:
        ep = stage if ep is None else ep
        _divides("ep", ep, stage, "GPUs per pipeline stage (num_gpus/(dp*pp))")
        slots = model.num_experts + redundant_experts
        if redundant_experts and ep == 1:
            raise ConfigError(f"redundant_experts={redundant_experts} needs expert parallelism "
                              "(ep > 1): with ep=1 every GPU already holds every expert")
        if slots % ep:
            fits = [n for n in range(0, ep) if (model.num_experts + n) % ep == 0]
            raise ConfigError(
                f"ep={ep} cannot place the {model.num_experts} routed experts of {model.name}"
                f" + {redundant_experts} redundant ({slots} slots) evenly; use "
                f"redundant_experts={fits[0]} (EPLB copies), or an ep that divides {slots}")
    else:
        if redundant_experts:
            raise ConfigError(f"redundant_experts={redundant_experts} needs a mixture-of-experts"
                              f" model; {model.name} is dense")
        if ep not in (None, 1):
            raise ConfigError(f"ep={ep} needs a mixture-of-experts model; {model.name} is dense "
                              "(leave ep unset)")
        ep = 1
    if tp < stage and not (model.is_moe and ep == stage):
        raise ConfigError(
            f"tp={tp} leaves {stage // tp} attention groups per stage of {stage} GPUs; that "
            f"(data-parallel attention) needs a MoE model with ep={stage}. For independent "
            f"replicas use dp instead (e.g. dp={dp * stage // tp}, tp={tp})")
    base = replica * per_replica
    stage_gpus = tuple(tuple(range(base + s * stage, base + (s + 1) * stage)) for s in range(pp))
    layers = np.array_split(np.arange(model.num_layers), pp)
    dense = tuple(int((ls < model.num_dense_layers).sum()) for ls in layers)
    moe = tuple(len(ls) - d for ls, d in zip(layers, dense))
    return Layout(tp=tp, ep=ep, pp=pp, dp=dp, stage_gpus=stage_gpus,
                  stage_dense_layers=dense, stage_moe_layers=moe,
                  expert_slots=model.num_experts + redundant_experts if model.is_moe else 0)
