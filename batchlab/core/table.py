"""`RequestTable`: an engine's per-request state, as numpy arrays indexed by request id.

Every engine (the simulator, the wall-clock torch engine, the serving front) keeps the same
facts about each request: when it arrived, how far its prompt and output have got, where its
KV cache lives, and its true output length, which only the engine sees. Keeping them in one
class means the batch validator and the token bookkeeping are written once, and a step is
booked with a few vectorised operations instead of a Python loop over sequences.

Request ids are dense: workloads number requests 0..N-1 and a serving front counts up. The
arrays are growable (their length is a capacity, doubled when full, so registering one
request at a time costs amortised O(1)); entries past `size` are unused.

Inter-token latencies are booked as steps complete into `itl`, a bounded histogram
(`core.gaps`), since a long run has too many token gaps to keep.
"""

from __future__ import annotations

import attrs
import numpy as np

from .batch import Batch
from .fastnp import FALSE, MINUS_ONE, ONE, TRUE, ZERO, constant, count_nonzero
from .gaps import GapHistogram

# Request states.
PENDING, WAITING, FINISHED, REJECTED, ABORTED = 0, 1, 2, 3, 4
STATUS_NAMES = {PENDING: "pending", WAITING: "waiting", FINISHED: "finished",
                REJECTED: "rejected", ABORTED: "aborted"}
_FINISHED = constant(FINISHED, np.int8)  # the status column's dtype (fastnp: no scalar)
_HOMES: dict = {}  # device index -> home_constant's array of it


def home_constant(device_index) -> np.ndarray:
    """A device index as an int64 0-d array: the home column's dtype (fastnp: no scalar)."""
    home = _HOMES.get(device_index)
    if home is None:
        home = _HOMES[device_index] = constant(device_index, np.int64)
    return home


RECORD_DTYPE = np.dtype([
    ("id", np.int64),
    ("arrival", np.float64),
    ("first_scheduled", np.float64),
    ("first_token", np.float64),
    ("finish", np.float64),
    ("prompt_tokens", np.int64),
    ("output_tokens", np.int64),
    ("preemptions", np.int64),
    ("max_tbt", np.float64),
    ("status", np.int8),
])
"""Per-request records. Times are seconds since the start of the run; NaN where an event never
happened (a rejected request has no first token). output_tokens is what the request produced;
max_tbt is the longest time between two of its consecutive output tokens (its worst decode
stall; NaN with fewer than two tokens)."""


@attrs.define
class RequestTable:
    """Per-request arrays; grows as requests are registered."""

    size: int = 0
    arrival: np.ndarray = attrs.field(factory=lambda: np.zeros(0))
    first_scheduled: np.ndarray = attrs.field(factory=lambda: np.zeros(0))
    first_token: np.ndarray = attrs.field(factory=lambda: np.zeros(0))
    last_token: np.ndarray = attrs.field(factory=lambda: np.zeros(0))
    max_tbt: np.ndarray = attrs.field(factory=lambda: np.zeros(0))
    finish: np.ndarray = attrs.field(factory=lambda: np.zeros(0))
    prompt: np.ndarray = attrs.field(factory=lambda: np.zeros(0, np.int64))
    output: np.ndarray = attrs.field(factory=lambda: np.zeros(0, np.int64))  # true length
    cached: np.ndarray = attrs.field(factory=lambda: np.zeros(0, np.int64))
    generated: np.ndarray = attrs.field(factory=lambda: np.zeros(0, np.int64))
    preemptions: np.ndarray = attrs.field(factory=lambda: np.zeros(0, np.int64))
    home: np.ndarray = attrs.field(factory=lambda: np.zeros(0, np.int64))  # device index, -1
    status: np.ndarray = attrs.field(factory=lambda: np.zeros(0, np.int8))
    in_flight: np.ndarray = attrs.field(factory=lambda: np.zeros(0, bool))
    num_finished: int = 0
    num_closed: int = 0  # finished + rejected + aborted
    itl: GapHistogram = attrs.field(factory=GapHistogram)  # every token gap of the run
    # Batches launched with the rows' entries `check_batch` read, by id(batch): (the batch,
    # its rows' generated, prompt + generated), for `complete` to take instead of reading
    # them again (in flight, a row's entries change only there). The entry holds the batch,
    # so no other object takes its id while it lives; complete, complete_steps or lose ends it.
    _seen: dict = attrs.field(factory=dict, init=False, repr=False, eq=False)

    @classmethod
    def for_requests(cls, prompt_tokens, output_tokens) -> "RequestTable":
        table = cls()
        table.register(prompt_tokens, output_tokens)
        return table

    _FIELDS = (
        ("arrival", np.nan, float), ("first_scheduled", np.nan, float),
        ("first_token", np.nan, float), ("last_token", np.nan, float),
        ("max_tbt", np.nan, float), ("finish", np.nan, float),
        ("prompt", 0, np.int64), ("output", 0, np.int64), ("cached", 0, np.int64),
        ("generated", 0, np.int64), ("preemptions", 0, np.int64), ("home", -1, np.int64),
        ("status", PENDING, np.int8), ("in_flight", False, bool),
    )

    def register(self, prompt_tokens, output_tokens) -> np.ndarray:
        """Add requests with the next ids; returns their ids."""
        prompt = np.asarray(prompt_tokens, dtype=np.int64).reshape(-1)
        output = np.asarray(output_tokens, dtype=np.int64).reshape(-1)
        n, start = len(prompt), self.size
        end = start + n
        if end > len(self.prompt):  # grow to twice what is needed: amortised O(1) per request
            capacity = max(end, 2 * len(self.prompt), 16) if start else end
            for name, fill, dtype in self._FIELDS:
                grown = np.full(capacity, fill, dtype=dtype)
                grown[:start] = getattr(self, name)[:start]
                setattr(self, name, grown)
        self.prompt[start:end] = prompt
        self.output[start:end] = output
        self.size = end
        return np.arange(start, end)

    # -- lifecycle ------------------------------------------------------------------------
    def arrive(self, rid: int, now: float) -> None:
        self.arrival[rid] = now
        self.status[rid] = WAITING

    def close(self, rid: int, status: int, now: float) -> None:
        """Reject or abort a request that is not in flight."""
        if self.status[rid] in (FINISHED, REJECTED, ABORTED):
            return
        self.status[rid] = status
        self.finish[rid] = now if status == ABORTED else np.nan
        self.cached[rid] = 0
        self.home[rid] = -1
        self.num_closed += 1

    def launch(self, batch: Batch, device_index: int, now: float, seen=None) -> None:
        """Book a validated batch as started on a device at `now`.
        seen: what `check_batch` returned for it, if the caller has it."""
        idx = batch.request_ids
        num_cached = count_nonzero(batch.num_cached_tokens)
        # Validated, a row continues from the tokens cached or recomputes from 0: rows that
        # never ran and rows restarted are among those from 0 (most steps: few or none).
        if num_cached < idx.size:
            have = self.cached[idx] if seen is None else seen[2]
            num_have = count_nonzero(have)
            if num_have != num_cached:  # restarted: the cached rows beyond the batch's
                restarted = (batch.num_cached_tokens == ZERO) & (have > ZERO)
                self.preemptions[idx[restarted]] += 1
            if num_have < idx.size:  # a row with a cache was scheduled before: only others are new
                # fmin: a row never scheduled (NaN) takes `now`, the others keep their time
                # (no later than now), in one pass instead of finding the new rows first
                # (isnan, count, index: about 0.5 us more a launch).
                self.first_scheduled[idx] = np.fmin(self.first_scheduled[idx], now)
        if seen is not None:
            self._seen[id(batch)] = (batch, seen[0], seen[1])
        self.in_flight[idx] = TRUE
        self.home[idx] = home_constant(device_index)

    def complete(self, batch: Batch, end: float):
        """Book a batch as finished at `end`; returns (emitted, finished, num_generated) per row.

        A row emits a token when it brings the cache past the prompt to a length it has not
        reached before (a recompute after preemption re-emits nothing until it catches up).
        """
        idx = batch.request_ids
        new_cached = batch.num_cached_tokens + batch.num_new_tokens
        seen = self._seen.pop(id(batch), None)
        if seen is None:
            before = self.generated[idx]
            known = self.prompt[idx] + before
        else:
            _, before, known = seen
        emitted = new_cached >= known  # a length not reached before
        every = count_nonzero(emitted) == emitted.size  # most steps: no mask to apply
        if every:
            generated = before + ONE
            first = before == ZERO
            num_first = count_nonzero(first)
            later = idx[~first] if num_first else idx  # no row's first token: no gather
        else:
            generated = before + emitted
            first = emitted & (before == 0)
            num_first = count_nonzero(first)
            later = idx[emitted & (before > 0)]
        if num_first:
            self.first_token[idx[first]] = end
        if later.size:
            last = self.last_token[later]
            since = last[0, ...]  # 0-d: a cheaper operand than a numpy scalar (complete_steps)
            if count_nonzero(last != since):
                gaps = end - last
                self.itl.add(gaps)
            else:  # every row's previous token came at one time (most steps): one gap
                gaps = end - float(since)
                self.itl.add_same(gaps, later.size)
            # fmax: NaN (no gap yet) loses against any real gap.
            self.max_tbt[later] = np.fmax(self.max_tbt[later], gaps)
        self.last_token[idx if every else idx[emitted]] = end
        self.generated[idx] = generated
        self.cached[idx] = new_cached
        self.in_flight[idx] = FALSE
        finished = generated >= self.output[idx]
        if count_nonzero(finished):
            done = idx[finished]
            self.finish[done] = end
            self.status[done] = _FINISHED
            self.cached[done] = ZERO
            self.home[done] = MINUS_ONE
            self.num_finished += done.size
            self.num_closed += done.size
        return emitted, finished, generated

    def complete_steps(self, batch: Batch, ends: np.ndarray, row_steps=None, step_rows=None):
        """Book `len(ends)` steps of a multi-step batch, ending at `ends`: the same records as
        `complete` once per step. Every row emits one token per step (the engine checked that
        at launch): step 1 is the batch as planned, the later ones decode.
        row_steps: per row, how many of the steps it ran (a row of a `drop_finished` batch
        leaves at its last token); None: every row ran them all.
        step_rows: with row_steps, the rows in each step, if the caller has counted them
        (the simulator's stretch has); else they are counted here."""
        idx = batch.request_ids
        j = len(ends)
        seen = self._seen.pop(id(batch), None)
        if seen is None:
            before = self.generated[idx]
            fed = batch.num_cached_tokens + batch.num_new_tokens
        else:  # at step 1 every row fed what it knew (validated): its prompt + generated
            _, before, fed = seen
        generated = before + (j if row_steps is None else row_steps)
        # Step 1's end as a 0-d view: as an operand or a value to scatter it costs about half
        # a numpy scalar's (or a Python float's) 0.17-0.37 us, and a 1-element slice, which
        # broadcasts, costs more than either.
        end = ends[0, ...]
        # A row's first gap; NaN for a row without a token before (its last_token is NaN).
        gap = end - self.last_token[idx]
        first = before == ZERO
        if count_nonzero(first):
            self.first_token[idx[first]] = end
            self.itl.add(gap[~first])
        else:
            self.itl.add(gap)
        if row_steps is not None:
            last = row_steps - ONE  # each row's last step
        if j > 1:
            steps = ends[1:] - ends[:-1]  # every row's gap at each later step: its duration
            if row_steps is None:
                self.itl.add_repeated(steps, idx.size)
                # fmax: NaN (no gap yet) loses; np.maximum.reduce: .max() without its wrapper
                gap = np.fmax(gap, np.maximum.reduce(steps))
            else:  # step s + 2 is a gap of the rows that ran more than s + 1 steps
                if step_rows is None:
                    ran = np.searchsorted(np.sort(row_steps), np.arange(2, j + 1))
                    step_rows = np.concatenate(((idx.size,), idx.size - ran))
                self.itl.add_weighted(steps, step_rows[1:j])
                # A row's longest later gap after s + 1 steps, at index s; NaN at 0: a row
                # that ran one step has no later gap, and fmax keeps its first gap as it is.
                longest = np.empty(j)
                longest[0] = np.nan
                longest[1:] = steps
                np.fmax.accumulate(longest, out=longest)
                gap = np.fmax(gap, longest[last])
        self.max_tbt[idx] = np.fmax(self.max_tbt[idx], gap)
        if row_steps is None:
            at = ends[-1, ...]  # every row's last token: at the last step (0-d: see `end`)
            self.cached[idx] = fed + (j - 1)
        else:
            at = ends[last]  # each row's last token
            self.cached[idx] = fed + last
        self.last_token[idx] = at
        self.generated[idx] = generated
        self.in_flight[idx] = FALSE
        finished = generated >= self.output[idx]
        if count_nonzero(finished):
            done = idx[finished]
            # A finished row's last token was its last: one gather where rows ran apart.
            self.finish[done] = at if row_steps is None else at[finished]
            self.status[done] = _FINISHED
            self.cached[done] = ZERO
            self.home[done] = MINUS_ONE
            self.num_finished += done.size
            self.num_closed += done.size
        emitted = np.empty(idx.size, dtype=bool)  # np.ones: the same behind a Python wrapper
        emitted.fill(True)
        return emitted, finished, generated

    def start_migration(self, rid: int) -> None:
        self.in_flight[rid] = True

    def end_migration(self, rid: int, device_index: int) -> None:
        self.in_flight[rid] = False
        self.home[rid] = device_index

    def lose(self, batch: Batch) -> None:
        """A device failed mid-step: the batch's work and its rows' KV caches are gone."""
        idx = batch.request_ids
        self._seen.pop(id(batch), None)
        self.in_flight[idx] = False
        self.cached[idx] = 0
        self.home[idx] = -1

    # -- results --------------------------------------------------------------------------
    def records(self) -> np.ndarray:
        rec = np.zeros(self.size, dtype=RECORD_DTYPE)
        rec["id"] = np.arange(self.size)
        for field, arr in (("arrival", self.arrival), ("first_scheduled", self.first_scheduled),
                           ("first_token", self.first_token), ("finish", self.finish),
                           ("prompt_tokens", self.prompt), ("output_tokens", self.generated),
                           ("preemptions", self.preemptions), ("max_tbt", self.max_tbt),
                           ("status", self.status)):
            rec[field] = arr[: self.size]
        return rec
