"""The batch validator every engine applies before a batch runs.

A policy is somebody's code, often a plugin; the engine trusts none of it. Each rule has a
short name that appears in the `PolicyError`, so a policy author sees at once which promise
was broken, by which request, on which device.

The check runs on every step of every simulation, so it is split in two: a fast path of a
few whole-batch numpy reductions that a good batch passes, and a diagnosis that runs only when
the fast path fails and finds the first broken rule to name.
"""

from __future__ import annotations

import numpy as np

from .batch import Batch
from .errors import PolicyError
from .fastnp import ONE, ZERO, constant, count_nonzero
from .limits import is_int
from .table import FINISHED, PENDING, STATUS_NAMES, WAITING, RequestTable, home_constant

_WAITING = constant(WAITING, np.int8)  # the status column's dtype (fastnp: no scalar)


def check_batch(batch, device, device_index: int, table: RequestTable, policy: str) -> tuple:
    """Raise PolicyError if `batch` may not run on `device` given the engine's table.

    Returns the rows' table entries it read, (generated, prompt + generated, cached), for
    `RequestTable.launch` to take instead of reading them again."""
    if not isinstance(batch, Batch) or batch.num_seqs == 0:
        _diagnose(batch, device, device_index, table, policy)
    ids, new, cached = batch.request_ids, batch.num_new_tokens, batch.num_cached_tokens
    # Each request once, and every id known: rows in increasing id order (a policy that
    # keeps arrival order, as most do: ids count up with arrivals) show both without a sort.
    if count_nonzero(ids[1:] <= ids[:-1]):
        ordered = np.sort(ids)
        distinct = not count_nonzero(ordered[1:] == ordered[:-1])
    else:
        ordered, distinct = ids, True
    if ordered.item(0) < 0 or ordered.item(-1) >= table.size:  # item(): Python ints
        _diagnose(batch, device, device_index, table, policy)
    fresh = cached == ZERO
    before, have = table.generated[ids], table.cached[ids]
    known = table.prompt[ids] + before  # tokens that exist: prompt + output
    # One element-wise conjunction and one reduction: this runs on every simulated step.
    # Waiting and not in flight: one comparison of the two masks (True > False only).
    # cached <= known - new: cached + new <= known without the sum, which could wrap around
    # int64 (known - new cannot: known >= 0 and new >= 1), and so new <= known, cached being
    # 0 or the table's (>= 0). A multi-step batch's rows must emit at step 1, cached + new =
    # known (`_can_repeat`): its equality checks both in the one comparison.
    multi = batch.num_steps != 1
    good = (((table.status[ids] == _WAITING) > table.in_flight[ids]) & (new >= ONE)
            & (fresh | ((cached == have) & (table.home[ids] == home_constant(device_index))))
            & ((cached == known - new) if multi else (cached <= known - new)))
    # count_nonzero is several times faster than .all()/.any() on small arrays.
    # A whole number first (one type test for a Python int): a str or None would raise a
    # bare TypeError below, and a float would be priced as a fraction of a micro-batch.
    micro = batch.num_micro_batches
    ok = (count_nonzero(good) == len(good) and distinct
          and (type(micro) is int or is_int(micro)) and 1 <= micro <= batch.num_seqs)
    if batch.padded_len is None:
        need = batch.num_context_tokens  # the rows' cached + new, summed by the Batch once
    else:
        ok = ok and is_int(batch.padded_len) and batch.padded_len >= (cached + new).max()
        need = batch.padded_len * batch.num_seqs
    if multi:
        ok = ok and _repeatable(batch)  # the rows' part is in `good`
        need += (batch.num_steps - 1) * batch.num_seqs if ok else 0  # memory at the last step
    if not ok or need > device.kv_capacity_tokens:
        _diagnose(batch, device, device_index, table, policy)
    return before, known, have


def _can_repeat(batch: Batch, table: RequestTable) -> bool:
    """A multi-step batch is one whose every row emits a token at its first step (cached +
    new = prompt + generated: a decode, or a prefill chunk completing what the row knows);
    the later steps decode every row, so they emit too."""
    if not _repeatable(batch):
        return False
    ids = batch.request_ids
    known = table.prompt[ids] + table.generated[ids]
    return not count_nonzero(batch.num_cached_tokens + batch.num_new_tokens != known)


def _repeatable(batch: Batch) -> bool:
    """The batch's own part of `_can_repeat`: num_steps a whole number >= 1, drop_finished
    true or false, nothing padded."""
    k = batch.num_steps
    if not (type(k) is int or is_int(k)) or k < 1:
        return False
    return isinstance(batch.drop_finished, (bool, np.bool_)) and batch.padded_len is None


def _diagnose(batch, device, device_index: int, table: RequestTable, policy: str) -> None:
    """Find the first broken rule and raise a PolicyError that names it."""

    def fail(rule, detail):
        raise PolicyError(policy, rule, f"{detail} (device {device.name!r})")

    if not isinstance(batch, Batch):
        fail("batch-type", f"planned a {type(batch).__name__}, not a batchlab Batch")
    if batch.num_seqs == 0:
        fail("empty", "planned a batch with no rows; leave the device out of the plan instead")
    ids, new, cached = batch.request_ids, batch.num_new_tokens, batch.num_cached_tokens

    unknown = (ids < 0) | (ids >= table.size)
    if unknown.any():
        fail("known", f"request {int(ids[unknown][0])} was never added")
    status = table.status[ids]
    if (status == PENDING).any():
        fail("known", f"request {int(ids[status == PENDING][0])} has not arrived yet")
    closed = status >= FINISHED
    if closed.any():
        rid = int(ids[closed][0])
        fail("closed", f"request {rid} is already {STATUS_NAMES[int(table.status[rid])]}")
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        fail("unique", f"request {int(values[counts > 1][0])} appears more than once")
    busy = table.in_flight[ids]
    if busy.any():
        fail("in-flight", f"request {int(ids[busy][0])} is still running in another batch")

    if (new < 1).any():
        bad = int(np.argmax(new < 1))
        fail("tokens", f"request {int(ids[bad])} feeds {int(new[bad])} new tokens; must be >= 1")
    if (cached < 0).any():
        bad = int(np.argmax(cached < 0))
        fail("tokens", f"request {int(ids[bad])} claims {int(cached[bad])} cached tokens")
    have = table.cached[ids]
    mismatch = (cached != have) & (cached != 0)
    if mismatch.any():
        bad = int(np.argmax(mismatch))
        fail("cache", f"request {int(ids[bad])} claims {int(cached[bad])} cached tokens but "
                      f"{int(have[bad])} are cached; continue from {int(have[bad])} or "
                      "recompute from 0")
    moved = (cached > 0) & (table.home[ids] != device_index)
    if moved.any():
        bad = int(np.argmax(moved))
        fail("cache", f"request {int(ids[bad])} continues from a KV cache that lives on "
                      "another device; recompute it from 0 instead")
    limit = table.prompt[ids] + table.generated[ids]
    huge = new > limit  # first: cached + new could wrap around int64 and pass the next rule
    if huge.any():
        bad = int(np.argmax(huge))
        fail("tokens", f"request {int(ids[bad])} feeds {int(new[bad])} new tokens but only "
                       f"{int(limit[bad])} exist (prompt + generated so far)")
    over = cached + new > limit
    if over.any():
        bad = int(np.argmax(over))
        fail("tokens", f"request {int(ids[bad])} feeds up to token {int(cached[bad] + new[bad])} "
                       f"but only {int(limit[bad])} exist (prompt + generated so far)")

    lengths = cached + new
    if batch.num_steps != 1 and not _can_repeat(batch, table):
        short = np.flatnonzero(lengths != limit)
        if not isinstance(batch.drop_finished, (bool, np.bool_)):
            why = f"drop_finished={batch.drop_finished!r} is not true or false"
        elif short.size:
            r = short[0]
            why = (f"request {int(ids[r])} feeds up to token {int(lengths[r])} of the "
                   f"{int(limit[r])} that exist, so it emits nothing at the first step")
        elif batch.padded_len is not None:
            why = "a padded batch cannot repeat"
        else:
            why = "num_steps must be a whole number >= 1"
        fail("multi-step", f"num_steps={batch.num_steps!r}: {why}. A batch may run several "
                           "steps only if every row emits a token at the first (cached + new = "
                           "prompt + generated: a decode, or a prefill chunk that completes "
                           "the prompt) and nothing is padded; plan num_steps=1 otherwise")
    if batch.padded_len is not None:
        if not is_int(batch.padded_len):
            fail("padding", f"padded_len={batch.padded_len!r} is not a whole number of tokens")
        if batch.padded_len < int(lengths.max()):
            fail("padding", f"padded_len {batch.padded_len} is shorter than a row "
                            f"({int(lengths.max())} tokens)")
        need = batch.padded_len * batch.num_seqs
    else:
        need = int(lengths.sum()) + (batch.num_steps - 1) * batch.num_seqs
    if need > device.kv_capacity_tokens:
        at = f" at its last step (num_steps={batch.num_steps})" if batch.num_steps != 1 else ""
        fail("memory", f"batch needs {need} KV tokens{at} but the device holds "
                       f"{device.kv_capacity_tokens}")
    micro = batch.num_micro_batches
    if not (is_int(micro) and 1 <= micro <= batch.num_seqs):
        fail("micro-batches", f"num_micro_batches={micro!r} must be a whole number between 1 "
                              f"and the number of rows ({batch.num_seqs})")
    raise AssertionError("check_batch's fast path and its diagnosis disagree")  # a bug of ours
