"""`Batch`: what one forward step runs on one device.

A batch is a set of rows, one per sequence: the request id, the number of new tokens the
step feeds (a prefill chunk, or 1 for a decode) and the number of tokens already in that
sequence's KV cache. Rows are numpy arrays so that engines, validators and cost models can
work on a whole batch without a Python loop per sequence. A batch is built fresh each step and
never mutated: its arrays are read-only.

Token bookkeeping, shared by every engine: a sequence is its prompt followed by the tokens it
has generated. A step that brings the cache to `cached + new >= prompt_tokens` yields one output
token; a recompute after preemption starts again from `cached = 0`.
"""

from __future__ import annotations

import attrs
import numpy as np

from .fastnp import int_sum


def _int_array(values) -> np.ndarray:
    if type(values) is np.ndarray and values.dtype == np.int64 and values.ndim == 1:
        arr = values.copy()  # what policies pass: the same fresh copy, without np.array's work
    else:
        arr = np.array(values, copy=True).reshape(-1)
        if arr.dtype != np.int64:
            arr = _whole_array(arr)
    arr.setflags(write=False)  # cheaper than setting arr.flags.writeable (no flags object)
    return arr


def _whole_array(arr: np.ndarray) -> np.ndarray:
    """`arr` as int64, if its values are whole numbers: a float id or token count (0.7,
    nan) would otherwise be truncated to another request, or to a count, without a word."""
    kind = arr.dtype.kind
    if kind == "b" or kind in "fc":
        bad = arr if kind == "b" else arr[~(np.isfinite(arr) & (arr == np.trunc(arr)))]
        if bad.size:
            raise ValueError("Batch rows hold whole numbers (request ids, token counts), "
                             f"got {bad[0].item()!r}")
    return arr.astype(np.int64)


@attrs.frozen(slots=True)
class Batch:
    """One step's work for one device.

    request_ids, num_new_tokens, num_cached_tokens: equal-length int64 arrays, one row per
        sequence.
    padded_len: if set, every row is padded to this many tokens of (cached + new), as static
        shape backends do with length buckets; the padding costs compute and memory.
    num_micro_batches: how many micro-batches the step is split into (pipelines,
        attention/FFN disaggregation); 1 means none.
    num_steps: a multi-step plan (vLLM's multi-step scheduling is the precedent): the batch
        may run for up to this many steps: the first as planned, each later one feeding
        every row one more token on top of the last (a decode). Only for batches whose every
        row emits a token at the first step: decodes, and prefill chunks that complete what
        the row knows (the engine checks it). The engine may stop earlier, at the first
        event that matters (an arrival, a request finishing, a wake-up, another device's
        step); the StepResult's `num_steps` says how many ran, and the policy hears their
        net effect in one `update`. Engines that run one step at a time always run 1.
        Default 1: one step.
    drop_finished: with num_steps > 1, a row that reaches its last token leaves the batch
        and the other rows run on (micro-batches capped at the rows left), instead of the
        finish ending the steps. A policy sets it where a finish would change none of its
        next decisions but the batch's rows (nothing waits for the freed room); `update`
        then hears every finish at once, a finished row's `num_generated` saying how far
        it got. Default False: the first finish ends the steps.
    """

    request_ids: np.ndarray = attrs.field(converter=_int_array)
    num_new_tokens: np.ndarray = attrs.field(converter=_int_array)
    num_cached_tokens: np.ndarray = attrs.field(converter=_int_array)
    padded_len: int | None = None
    num_micro_batches: int = 1
    num_steps: int = 1
    drop_finished: bool = False
    # Totals every consumer asks for, summed once (engines read them several times a step).
    num_tokens: int = attrs.field(init=False, eq=False, repr=False)
    num_context_tokens: int = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self):
        n = len(self.request_ids)
        if len(self.num_new_tokens) != n or len(self.num_cached_tokens) != n:
            raise ValueError(
                "Batch arrays differ in length: "
                f"request_ids={n}, num_new_tokens={len(self.num_new_tokens)}, "
                f"num_cached_tokens={len(self.num_cached_tokens)}"
            )
        new, cached = int_sum(self.num_new_tokens), int_sum(self.num_cached_tokens)
        # num_tokens: new tokens fed through the model this step (without padding).
        object.__setattr__(self, "num_tokens", new)
        # num_context_tokens: tokens the rows attend over after the step (cached + new).
        object.__setattr__(self, "num_context_tokens", new + cached)

    @classmethod
    def decode(cls, request_ids, num_cached_tokens, **kw) -> "Batch":
        """A batch of pure decodes: one new token per sequence."""
        ids = _int_array(request_ids)
        return cls(ids, np.ones(len(ids), dtype=np.int64), num_cached_tokens, **kw)

    @property
    def num_seqs(self) -> int:
        return len(self.request_ids)

    @property
    def num_padded_tokens(self) -> int:
        """Padding rows carry: padded_len * rows minus the real (cached + new) tokens."""
        if self.padded_len is None:
            return 0
        return int(self.padded_len * self.num_seqs - self.num_context_tokens)

    @property
    def num_prefill_seqs(self) -> int:
        """Rows that feed more than one token (prefill chunks or recomputes)."""
        return int((self.num_new_tokens > 1).sum())

    def __eq__(self, other):  # arrays compare element-wise, so attrs' __eq__ would not do
        if not isinstance(other, Batch):
            return NotImplemented
        return (
            np.array_equal(self.request_ids, other.request_ids)
            and np.array_equal(self.num_new_tokens, other.num_new_tokens)
            and np.array_equal(self.num_cached_tokens, other.num_cached_tokens)
            and self.padded_len == other.padded_len
            and self.num_micro_batches == other.num_micro_batches
            and self.num_steps == other.num_steps
            and self.drop_finished == other.drop_finished
        )

    __hash__ = None
