"""`AffineDevice`: a step time that is an affine function of the batch.

duration = fixed + per_token x (new tokens fed) + per_context_token x (tokens attended over)
KV migration to another device = kv_transfer_per_token x tokens moved

It is not a model of any particular GPU: it is the simplest device that still shows the
batching trade-off (the fixed part is amortised over the batch), so it serves tests,
teaching and policy development where a roofline cost model would be a distraction. Padded
batches pay for their padding. The defaults are of the order of a 7B dense model on one
A100-80GB (about 10 ms to read the weights per step, about 0.1 ms of compute per prompt token,
about 0.3 us to read one cached token's KV), rounded: use `batchlab.costmodel` for real presets.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from ..core import Batch, StepCost, StepResult
from ..core.step import COST_FIELDS
from ..core.errors import ConfigError


def _non_negative(instance, attribute, value):
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"AffineDevice.{attribute.name} must be a finite number >= 0, "
                          f"got {value!r}")


def _positive_int(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"AffineDevice.{attribute.name} must be a positive int, got {value!r}")


@attrs.frozen
class AffineDevice:
    name: str = "dev0"
    fixed: float = attrs.field(default=0.010, validator=_non_negative)
    per_token: float = attrs.field(default=1e-4, validator=_non_negative)
    per_context_token: float = attrs.field(default=3e-7, validator=_non_negative)
    kv_capacity_tokens: int = attrs.field(default=131_072, validator=_positive_int)
    price_per_hour: float | None = None
    # A teaching model stands for no GPU: per-GPU figures of its runs are NaN, not a made-up
    # "1 GPU" (give a count to compare it with GPU devices on a per-GPU basis).
    num_gpus: int = 0
    # About 0.5 MB of KV per token (7B, fp16) over a 50 GB/s link: 10 us per token.
    kv_transfer_per_token: float = attrs.field(default=1e-5, validator=_non_negative)

    def kv_transfer_time(self, num_tokens: int, to_device) -> float:
        return self.kv_transfer_per_token * num_tokens

    def step_time(self, batch: Batch) -> float:
        if batch.padded_len is None:
            fed, context = batch.num_tokens, batch.num_context_tokens
        else:
            # A padded prefill row feeds its padding; a padded decode row still feeds one
            # token, but attends over the padded length.
            new = batch.num_new_tokens
            fed = int(np.where(new > 1, batch.padded_len - batch.num_cached_tokens, 1).sum())
            context = batch.padded_len * batch.num_seqs
        return self.fixed + self.per_token * fed + self.per_context_token * context

    def run(self, batch: Batch) -> StepResult:
        duration = self.step_time(batch)
        # An affine model has no roofline: the fixed part is overhead, the rest compute.
        return StepResult(duration, StepCost(compute=duration - self.fixed, overhead=self.fixed,
                                             padded_tokens=batch.num_padded_tokens))


    def run_steps(self, batch: Batch, num_steps: int):
        """Steps 1..num_steps of a multi-step decode batch at once (see `Device`): the same
        floating-point operations as `run` on each step, element-wise."""
        if batch.padded_len is not None:
            return None
        rows = batch.num_seqs
        # Step j attends over the batch's context plus j - 1 more tokens per row (exact ints).
        context = batch.num_context_tokens + rows * np.arange(num_steps, dtype=np.int64)
        durations = (self.fixed + self.per_token * batch.num_tokens) \
            + self.per_context_token * context.astype(float)
        costs = np.zeros((num_steps, len(COST_FIELDS)))
        costs[:, 0] = durations - self.fixed
        costs[:, 3] = self.fixed
        return durations, costs

    def price_decodes(self, rows, context, micro_batches):
        """Decode steps given by their totals (see `Device`): rows fed and context tokens
        per step; the same floating-point operations as `run`, element-wise."""
        durations = (self.fixed + self.per_token * rows) \
            + self.per_context_token * context.astype(float)
        costs = np.zeros((len(context), len(COST_FIELDS)))
        costs[:, 0] = durations - self.fixed
        costs[:, 3] = self.fixed
        return durations, costs


def affine_devices(n: int = 1, **kw) -> list[AffineDevice]:
    """n identical affine devices named dev0, dev1, ..."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"number of devices must be a positive int, got {n!r}")
    return [AffineDevice(name=f"dev{i}", **kw) for i in range(n)]
