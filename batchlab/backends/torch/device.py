"""`TorchDevice`: a batchlab Device that really runs each Batch through a TinyTransformer.

It keeps a KV cache per request (per layer K and V tensors) and, in a `TokenHistory`, every
request's tokens: the prompt, drawn deterministically from (prompt_seed, request id, prompt
length), followed by the tokens generated so far. Several devices of one run share a
history, so a request preempted on one device can be recomputed on another.

Token semantics are those of `batchlab.core.RequestTable`: a row feeds tokens
[cached, cached + new) of its sequence; cached == 0 drops whatever cache the device held for
the request (recompute after preemption); a row that ends at the current end of the sequence
(cached + new == prompt + generated so far, which implies it is past the prompt) emits one
token, the greedy argmax of the logits at its last position, appended to the history.

The engine must call `register(request_id, prompt_tokens)` when a request arrives and
`free(request_id)` when it is gone; `run_wallclock` does both.

Duration is measured wall time (with a CUDA synchronise on the GPU). Micro-batches run one
after another; padding (`Batch.padded_len`) is fed through the model (matmuls and attention)
and its outputs dropped, so a padded batch costs what a static-shape backend pays.
"""

from __future__ import annotations

import time

import attrs
import numpy as np
import torch

from ...core import Batch, StepCost, StepResult
from ...core.errors import ConfigError
from .config import TransformerConfig, get_config
from .model import TinyConfig, TinyTransformer, pack

__all__ = ["TinyConfig", "TransformerConfig", "TokenHistory", "TorchDevice", "prompt_ids",
           "torch_devices"]


@attrs.define
class TokenHistory:
    """Each request's token ids: prompt then generated tokens. Shared by a run's devices."""

    vocab: int
    prompt_seed: int = 0
    tokens: dict = attrs.field(factory=dict)        # request id -> list[int]
    prompt_len: dict = attrs.field(factory=dict)    # request id -> int

    def register(self, rid: int, prompt_tokens: int) -> None:
        rid, prompt_tokens = int(rid), int(prompt_tokens)
        if self.prompt_len.get(rid) == prompt_tokens:
            return   # already known (another device of the run registered it)
        self.prompt_len[rid] = prompt_tokens
        self.tokens[rid] = prompt_ids(self.prompt_seed, rid, prompt_tokens, self.vocab)

    def generated(self, rid: int) -> list[int]:
        return self.tokens[rid][self.prompt_len[rid]:]


def prompt_ids(prompt_seed: int, rid: int, prompt_tokens: int, vocab: int) -> list[int]:
    """The prompt of request `rid`: the same ids for the same (seed, id, length) anywhere."""
    key = (int(prompt_seed) * 1_000_003 + int(rid)) * 1_000_033 + int(prompt_tokens)
    gen = torch.Generator().manual_seed(key % (2**63 - 1))
    return torch.randint(vocab, (prompt_tokens,), generator=gen).tolist()


class TorchDevice:
    """A Device that executes batches on a TinyTransformer (CUDA when present, else CPU).

    config: a TransformerConfig, a preset name ("tiny-dense", "tiny-moe", "small-dense",
        "small-moe"), a dict of fields or a .toml/.json file (see `batchlab.backends.torch.config.get_config`).
    seed: the weights' seed; None keeps the config's own.
    history: a TokenHistory shared with the run's other devices (`torch_devices` does that).
    record_logits: keep the logits of every emitted token in `self.logits[request_id]`
        (CPU float32 tensors), for correctness tests.
    """

    def __init__(self, name: str, config, kv_capacity_tokens: int, *,
                 device: str | None = None, seed: int | None = None, prompt_seed: int = 0,
                 history: TokenHistory | None = None, record_logits: bool = False):
        if isinstance(kv_capacity_tokens, bool) or not isinstance(kv_capacity_tokens, int) \
                or kv_capacity_tokens < 1:
            raise ConfigError(f"TorchDevice {name!r}: kv_capacity_tokens must be a positive "
                              f"int, got {kv_capacity_tokens!r}")
        config = get_config(config)
        if seed is not None:
            config = attrs.evolve(config, seed=int(seed))
        self.name, self.config = name, config
        self.kv_capacity_tokens = kv_capacity_tokens
        self.model = TinyTransformer(config, device)
        self.device = self.model.device
        self.pool = self.model.new_pool()
        if history is None:
            history = TokenHistory(config.vocab_size, prompt_seed)
        elif history.vocab != config.vocab_size:
            raise ConfigError(f"TorchDevice {name!r}: shared history has vocab "
                              f"{history.vocab}, config has {config.vocab_size}")
        self.history = history
        self.num_experts = config.num_experts
        self.record_logits = record_logits
        self.logits: dict[int, list] = {}

    # -- engine hooks ----------------------------------------------------------------------
    def register(self, request_id: int, prompt_tokens: int) -> None:
        """A request arrived: make its prompt known (idempotent across a run's devices)."""
        self.history.register(request_id, prompt_tokens)

    def free(self, request_id: int) -> None:
        """Drop the request's KV cache here (its token history stays readable)."""
        self.pool.release(int(request_id))

    @property
    def last_logits(self) -> dict:
        """request id -> logits of the last token it emitted here (needs record_logits)."""
        return {rid: rows[-1] for rid, rows in self.logits.items() if rows}

    def cached_tokens(self, request_id: int) -> int:
        return self.pool.length.get(int(request_id), 0)

    # -- a step ----------------------------------------------------------------------------
    def run(self, batch: Batch) -> StepResult:
        tokens_out = np.full(batch.num_seqs, -1, dtype=np.int64)
        self._sync()
        start = time.perf_counter()
        touched = fed = 0.0
        for rows in np.array_split(np.arange(batch.num_seqs), batch.num_micro_batches):
            n_fed, n_touched = self._run_rows(batch, rows, tokens_out)
            fed += n_fed
            touched += n_touched
        self._sync()
        duration = time.perf_counter() - start
        touched /= batch.num_micro_batches
        k = self.config.num_experts_per_tok if self.config.is_moe else 0
        cost = StepCost(compute=duration, flops=2.0 * self._active_params() * fed,
                        experts_touched=touched,
                        tokens_per_expert=fed * k / touched if touched else 0.0,
                        padded_tokens=batch.num_padded_tokens)
        return StepResult(duration, cost, tokens=tokens_out)

    def _active_params(self) -> int:
        c = self.config
        total = self.model.num_params - c.vocab_size * c.hidden_size   # embedding: a lookup
        if c.is_moe:   # only top-k of the experts' weights touch a token
            per_expert = 3 * c.hidden_size * c.expert_size * c.num_layers
            total -= per_expert * (c.num_experts - c.num_experts_per_tok)
        return total

    def _run_rows(self, batch: Batch, rows: np.ndarray, tokens_out: np.ndarray):
        ids = batch.request_ids[rows]
        cached = batch.num_cached_tokens[rows]
        new = batch.num_new_tokens[rows]
        if batch.padded_len is None:
            fed = new
        else:   # a padded prefill feeds its padding; a padded decode still feeds one token
            fed = np.where(new > 1, batch.padded_len - cached, 1)
        feed, slots = [], []
        for rid, c, n, f in zip(ids.tolist(), cached.tolist(), new.tolist(), fed.tolist()):
            seq = self.history.tokens.get(rid)
            if seq is None:
                raise ConfigError(f"TorchDevice {self.name!r}: request {rid} was never "
                                  "registered; the engine must call register() on arrival")
            if c == 0:
                self.pool.release(rid)   # recompute: whatever was cached is stale
            have = self.pool.length.get(rid, 0)
            if have != c or c + n > len(seq):
                raise ConfigError(f"TorchDevice {self.name!r}: request {rid} feeds tokens "
                                  f"[{c}, {c + n}) but {have} are cached here and "
                                  f"{len(seq)} exist")
            feed.extend(seq[c:c + n])
            feed.extend([0] * (f - n))
            slots.append(self.pool.slot(rid))
        key_len = int((cached + fed).max())
        packed = pack(np.asarray(feed, dtype=np.int64), cached, new, fed,
                      np.asarray(slots, dtype=np.int64), key_len, self.device,
                      q_per_kv=self.model.config.q_per_kv)
        logits, touched = self.model.forward(packed, self.pool)
        ends = cached + new
        emit = []
        for i, (rid, end) in enumerate(zip(ids.tolist(), ends.tolist())):
            self.pool.length[rid] = end
            if end == len(self.history.tokens[rid]):
                emit.append(i)
        if emit:
            chosen = logits[emit]
            picked = chosen.argmax(dim=-1).tolist()
            kept = chosen.float().cpu() if self.record_logits else None
            for j, (i, token) in enumerate(zip(emit, picked)):
                rid = int(ids[i])
                self.history.tokens[rid].append(int(token))
                tokens_out[rows[i]] = token
                if kept is not None:
                    self.logits.setdefault(rid, []).append(kept[j])
        return int(fed.sum()), touched

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def torch_devices(n: int, config, kv_capacity_tokens: int, **kw) -> list:
    """n TorchDevices named dev0, dev1, ... with the same weights and one shared history."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"number of devices must be a positive int, got {n!r}")
    config = get_config(config)
    history = kw.pop("history", None) or TokenHistory(config.vocab_size,
                                                      kw.get("prompt_seed", 0))
    return [TorchDevice(f"dev{i}", config, kv_capacity_tokens, history=history, **kw)
            for i in range(n)]
