"""`CostModelDevice`: one model replica on a set of GPUs, as a simulator `Device`.

It predicts each step's duration with a `StepModel` and reports the attributes the simulator's
summary needs: `kv_capacity_tokens` (real memory left for the KV cache), `num_gpus`,
`price_per_hour` (USD per hour for all its GPUs), and `peak_flops` / `peak_bandwidth` (FLOP/s
and bytes/s of all its GPUs together), so that
    MFU = sum(cost.flops) / (busy time x peak_flops),
    bandwidth utilisation = sum(cost.bytes) / (busy time x peak_bandwidth),
    expert utilisation = mean(cost.experts_touched) / num_experts.
"""

from __future__ import annotations

import attrs
import numpy as np

from batchlab.core import Batch, StepCost, StepResult

from .decode import DecodePricer
from .memory import MemoryPlan, kv_bytes_per_token_layer_gpu
from .step import PartTimes, StepModel

# A device's result leaves the per-row fields to the engine: empty, read-only arrays shared
# by every result (StepResult's defaults, without making a fresh array per step).
_NO_ROWS = np.zeros(0, dtype=bool)
_NO_COUNTS = np.zeros(0, dtype=np.int64)
_NO_ROWS.setflags(write=False)
_NO_COUNTS.setflags(write=False)


@attrs.define(eq=False)
class CostModelDevice:
    """A Device whose steps take the time the roofline cost model predicts."""

    name: str
    step_model: StepModel = attrs.field(repr=False)
    memory: MemoryPlan = attrs.field(repr=False)
    price_per_hour: float
    kv_capacity_tokens: int = attrs.field(init=False)
    num_gpus: int = attrs.field(init=False)
    peak_flops: float = attrs.field(init=False)
    peak_bandwidth: float = attrs.field(init=False)
    # The decode fast path (decode.py), or None where it does not apply.
    _decode: DecodePricer | None = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self):
        self._decode = DecodePricer.for_model(self.step_model)
        self.kv_capacity_tokens = self.memory.kv_capacity_tokens
        self.num_gpus = self.step_model.layout.num_gpus
        self.peak_flops = self.step_model.peak_flops
        self.peak_bandwidth = self.step_model.peak_bandwidth

    @property
    def model(self):
        return self.step_model.model

    @property
    def gpu(self):
        return self.step_model.gpu

    @property
    def num_experts(self) -> int:
        """Routed experts per MoE layer (0 for dense models), for expert utilisation."""
        return self.step_model.model.num_experts

    def _single_decode(self, batch: Batch) -> bool:
        """Whether the decode pricer prices `batch` (`run` and `price_step`): one unpadded
        decode step of a model it applies to, the same bits as `run_steps`."""
        return (self._decode is not None and batch.num_tokens == batch.num_seqs > 0
                and batch.padded_len is None)

    def run(self, batch: Batch) -> StepResult:
        if self._single_decode(batch):
            duration, row = self._decode.price_one(batch)
            return StepResult(duration, StepCost(*row), _NO_ROWS, _NO_ROWS, _NO_COUNTS)
        duration, cost = self.step_model.cost(batch)
        return StepResult(duration, cost, _NO_ROWS, _NO_ROWS, _NO_COUNTS)

    def price_step(self, batch: Batch):
        """`run` as (duration, cost row in `COST_FIELDS` order; see `Device`): the same
        values, without the StepResult and StepCost a simulator stretch would only read back
        into a row (~2 us a stretch that leads with a prefill step). None where the model
        overlaps micro-batches: its StepCost carries `communication_hidden`, which a row has
        no column for (the engine then calls `run`)."""
        if self.step_model.overlap:
            return None
        if self._single_decode(batch):
            return self._decode.price_one(batch)
        return self.step_model.cost_as_row(batch)

    def run_steps(self, batch: Batch, num_steps: int):
        """Steps 1..num_steps of a multi-step decode batch in one call (see `Device`), or
        None where the decode fast path does not apply (the engine then calls `run`)."""
        if self._decode is None or batch.padded_len is not None:
            return None
        return self._decode.price(batch, num_steps)

    def price_decodes(self, rows, context, micro_batches):
        """Decode steps given by their totals (see `Device`), or None where the fast path
        does not apply."""
        if self._decode is None:
            return None
        return self._decode.price_totals(rows, context, micro_batches)

    @property
    def kv_bytes_per_token(self) -> float:
        """Bytes of KV cache one token takes over all layers (the whole replica)."""
        m = self.step_model.model
        return kv_bytes_per_token_layer_gpu(m, 1) * m.num_layers

    def kv_transfer_time(self, num_tokens: int, to_device) -> float:
        """Seconds to send num_tokens tokens of KV cache to another replica.

        Replicas are taken to sit in different servers (dp replicas, prefill/decode pools), so
        the cache crosses the scale-out network: each GPU sends its shard through its own NIC,
        in parallel, and the slower side's NICs bound the transfer; plus one network hop.
        """
        gpus = self.num_gpus
        other = getattr(to_device, "num_gpus", gpus)
        other_gpu = getattr(to_device, "gpu", self.gpu)
        bandwidth = min(gpus * self.gpu.network_bandwidth,
                        other * getattr(other_gpu, "network_bandwidth",
                                        self.gpu.network_bandwidth))
        return self.gpu.network_latency + num_tokens * self.kv_bytes_per_token / bandwidth

    def part_times(self, batch: Batch) -> PartTimes:
        """Attention-side and FFN-side time of one pass (for disaggregated devices)."""
        return self.step_model.part_times(batch)

    def explain(self, batch: Batch) -> dict[str, float]:
        """Seconds per op for one pass of `batch`: where a step's time goes."""
        return self.step_model.explain(batch)

    def describe(self) -> str:
        lay, m = self.step_model.layout, self.step_model.model
        return (f"{self.name}: {m.name} on {self.num_gpus} x {self.gpu.name} "
                f"(tp={lay.tp}, ep={lay.ep}, pp={lay.pp}), KV capacity "
                f"{self.kv_capacity_tokens:,} tokens, ${self.price_per_hour:.2f}/h")
