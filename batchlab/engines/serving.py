"""The serving front: an asyncio API through which other code runs any policy on any devices.

    server = Server(load_policy("continuous"), torch_devices(1, "tiny-dense", 8192))
    async with server:
        stream = server.submit([17, 4, 99], max_new_tokens=16, priority=1)
        async for token in stream:        # token ids, as the device produces them
            ...
        stream.cancel()                   # or leave the loop, or cancel the consuming task

A request produces exactly `max_new_tokens` tokens (end-of-sequence is ignored, as serving
benchmarks do), unless it is cancelled or the policy rejects it (the stream then raises
`RequestRejected`). Cancelling calls the policy's `abort(id)`, so its memory is freed at once.

Engine. One thread runs the loop the simulator and `run_wallclock` run — schedule, run,
update — with the same bookkeeping (`RequestTable`, `check_batch` on every batch, the same
`Result`), fed by the coroutines' submissions and cancellations through a queue, and sending
each token back to the event loop as soon as its step ends. The thread is there because a
step blocks (a torch forward pass); the event loop stays free to serve clients. Steps run one
at a time, devices one after another (as in `run_wallclock`), so a submission or a
cancellation is seen between two steps: a request is never in flight when it is aborted.

Time is `time.perf_counter` since `start()`; the policy gets it as `now`. A device that
returns from `run` sooner than the duration it reports (a cost-model device such as
`AffineDevice`) is waited out, so it can stand in for real hardware, in real time, when a
test or a demo has no torch. Such a device has no token ids: its streams yield -1 per token.

Prompts: a list of token ids, or a length (ids are then drawn like `run_wallclock`'s, from
the request id). Devices with a `history` (a `TokenHistory`, as torch devices share one) get
the given ids; every device with `register`/`free` is told of arrivals and departures.

Robustness. Every submission is checked on the event loop before the engine sees it: a
prompt (ids or a length) of at most `max_prompt_tokens`, a `max_new_tokens` of at most
`max_new_tokens_limit`, a priority within `core.limits.MAX_PRIORITY`; so the memory one
request can hold (its prompt ids, its tokens, its stream's queue) is bounded, and a length of
50,000,000 is refused at once instead of freezing the event loop while its ids are drawn.
If the policy raises while it is given one request (`add`), that request alone ends with
the error (its stream raises a PolicyError) and the policy is told to `abort` it; the
engine goes on serving the others. If the engine itself fails (the policy breaks the
contract while scheduling or updating, a device raises), every open stream raises that
error, `submit` and `close()` raise it too, and `health()` says so.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Sequence, Sized

import attrs
import numpy as np

from ..core import Request, StepResult
from ..core import limits
from ..core.errors import BatchlabError, ConfigError, PolicyError
from ..core.protocols import policy_name
from ..core.table import ABORTED, REJECTED, WAITING, RequestTable
from .accounting import DeviceTotals
from .contract import (call_policy, check_plan, check_rejectable, index_devices,
                       launch_batches, tell_devices)
from .result import Result

__all__ = ["RequestRejected", "Server", "TokenStream"]

_END = object()
DEFAULT_MAX_TOKENS = 1 << 20


class RequestRejected(BatchlabError):
    """The policy refused the request (for instance: it can never fit in memory)."""


@attrs.define(eq=False)
class TokenStream:
    """The tokens of one request, as an async iterator of ints (-1: the device has no ids).

    status: None while running, then "finished", "aborted" (cancelled, or the server closed)
    or "rejected". tokens: what has been received so far.
    """

    request_id: int
    _server: "Server" = attrs.field(repr=False)
    _queue: asyncio.Queue = attrs.field(factory=asyncio.Queue, repr=False)
    status: str | None = None
    tokens: list = attrs.field(factory=list)
    _error: BaseException | None = attrs.field(default=None, repr=False)
    _cancelled: bool = attrs.field(default=False, repr=False)

    def __aiter__(self):
        return self

    async def __anext__(self) -> int:
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            self.cancel()   # the consumer went away: stop spending compute on it
            raise
        if item is _END:
            self._queue.put_nowait(_END)   # iterating again ends again
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        return item

    def cancel(self) -> None:
        """Abort the request (no-op once it has ended); its stream then ends as aborted."""
        if self.status is None and not self._cancelled:
            self._cancelled = True
            self._server._command(("abort", self.request_id))

    async def collect(self) -> list[int]:
        """Wait for the end and return every token."""
        async for _ in self:
            pass
        return self.tokens

    async def __aenter__(self) -> "TokenStream":
        return self

    async def __aexit__(self, *exc) -> None:
        self.cancel()

    # -- called on the event loop by the server ------------------------------------------
    def _push(self, token: int) -> None:
        self.tokens.append(token)
        self._queue.put_nowait(token)

    def _end(self, status: str, error: BaseException | None = None) -> None:
        self.status, self._error = status, error
        self._queue.put_nowait(_END)


class Server:
    """Serve requests submitted by coroutines with `policy` on `devices`.

    policy: a Scheduler or a policy name (fresh: one instance serves one server).
    devices: Devices; torch devices of one server should share one TokenHistory
        (`torch_devices(n, ...)` does that).
    prompt_seed: seeds the ids of prompts given as a length.
    max_prompt_tokens, max_new_tokens_limit: the largest prompt and output one request may
        ask for (default 2**20 each: a long-context request fits, a typo does not).
    """

    def __init__(self, policy, devices: Sequence, *, prompt_seed: int = 0,
                 max_prompt_tokens: int = DEFAULT_MAX_TOKENS,
                 max_new_tokens_limit: int = DEFAULT_MAX_TOKENS):
        if isinstance(policy, str):
            from ..policies.discovery import load_policy
            policy = load_policy(policy)
        self.prompt_seed = limits.check_seed(prompt_seed, "Server.prompt_seed")
        self.max_prompt_tokens = limits.check_tokens(max_prompt_tokens,
                                                     "Server.max_prompt_tokens")
        self.max_new_tokens_limit = limits.check_tokens(max_new_tokens_limit,
                                                        "Server.max_new_tokens_limit")
        self._engine = _Engine(policy, devices)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[int, TokenStream] = {}
        self._next_id = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._vocab = next((h.vocab for h in self._engine.histories), None)

    @property
    def policy(self):
        return self._engine.policy

    @property
    def devices(self) -> list:
        return self._engine.devices

    async def start(self) -> "Server":
        if self._thread is not None:
            raise ConfigError("Server.start() was called twice; a server runs once")
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._engine.serve,
                                        args=(self._inbox, self._deliver),
                                        name="batchlab-serving", daemon=True)
        self._thread.start()
        return self

    async def close(self) -> None:
        """Abort every open request, stop the engine, and raise its error if it failed."""
        if self._thread is None or self._closed:
            return
        self._closed = True
        self._command(("stop",))
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        await asyncio.sleep(0)   # let the last deliveries reach their streams
        if self._engine.error is not None:
            raise self._engine.error

    def health(self) -> dict:
        """{"ok": bool, "error": str or None, "num_open": requests not yet ended}: ok only
        while the engine thread is alive and has not failed, so a monitor sees the truth."""
        error = self._engine.error
        alive = self._thread is not None and self._thread.is_alive() and not self._closed
        why = None
        if error is not None:
            why = f"the engine stopped: {type(error).__name__}: {error}"
        elif not alive:
            why = "the server is not running (not started, or closed)"
        return {"ok": why is None, "error": why, "num_open": len(self._streams)}

    async def __aenter__(self) -> "Server":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def submit(self, prompt, max_new_tokens: int, *, priority: int = 0) -> TokenStream:
        """Queue a request; returns its stream. prompt: token ids, or a length (int >= 1)."""
        if self._thread is None or self._closed:
            raise ConfigError("submit() needs a started, open server (use `async with`)")
        if self._engine.error is not None:
            raise self._engine.error
        ids = self._prompt_ids(prompt)
        limits.check_int(max_new_tokens, "submit(): max_new_tokens", low=1,
                         high=self.max_new_tokens_limit)
        limits.check_priority(priority, "submit(): priority")
        rid = self._next_id
        self._next_id += 1
        stream = TokenStream(rid, self)
        self._streams[rid] = stream
        self._command(("submit", rid, ids, int(max_new_tokens), int(priority)))
        return stream

    def result(self) -> Result:
        """Records of every request so far and per-device totals, like a simulator run's."""
        return self._engine.result()

    # -- plumbing -----------------------------------------------------------------------------
    def _prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, (int, np.integer)) and not isinstance(prompt, bool):
            limits.check_int(prompt, "submit(): a prompt length", low=1,
                             high=self.max_prompt_tokens)
            rng = np.random.default_rng([self.prompt_seed, self._next_id, int(prompt)])
            return rng.integers(0, self._vocab or 2**31 - 1, int(prompt)).tolist()
        if isinstance(prompt, Sized) and len(prompt) > self.max_prompt_tokens:
            raise ConfigError(f"submit(): a prompt of {len(prompt)} token ids is longer than "
                              f"this server's max_prompt_tokens ({self.max_prompt_tokens})")
        try:
            ids = [int(t) for t in prompt]
            exact = all(int(t) == t and not isinstance(t, bool) for t in prompt)
        except (TypeError, ValueError, OverflowError):   # None, "x", 1.5, 1e400
            ids, exact = [], False
        if not ids or not exact or not isinstance(prompt, Sized):
            raise ConfigError("submit(): prompt must be a non-empty sequence of int token ids "
                              f"or a length, got {limits._show(prompt)}")
        vocab = self._vocab or 2**31   # no vocabulary: any id a real tokenizer could give
        if min(ids) < 0 or max(ids) >= vocab:
            raise ConfigError(f"submit(): token ids must be in [0, {vocab}) for these "
                              f"devices; got {limits._show(min(ids))}..{limits._show(max(ids))}")
        return ids

    def _command(self, cmd) -> None:
        self._inbox.put(cmd)

    def _deliver(self, events) -> None:
        """Engine thread -> event loop."""
        try:
            self._loop.call_soon_threadsafe(self._dispatch, events)
        except RuntimeError:   # the event loop is closed: nobody is listening any more
            pass

    def _dispatch(self, events) -> None:
        for rid, kind, value in events:
            stream = self._streams.get(rid)
            if stream is None:
                continue
            if kind == "token":
                stream._push(value)
                continue
            del self._streams[rid]
            if kind == "rejected":
                stream._end("rejected", RequestRejected(
                    f"policy {self._engine.name!r} rejected request {rid}"))
            elif kind == "error":
                stream._end("error", value)
            else:
                stream._end(kind)


class _Engine:
    """The serving loop, on its own thread: requests come in through `inbox`, tokens and
    endings go out through `deliver([(request id, kind, value), ...])`."""

    def __init__(self, policy, devices: Sequence):
        self.policy, self.name = policy, policy_name(policy)
        self.devices, self.index = index_devices(devices, "Server")
        unique = {}
        for d in self.devices:
            h = getattr(d, "history", None)
            if h is not None:
                unique[id(h)] = h
        self.histories = list(unique.values())
        self.table = RequestTable()
        self.requests: dict[int, Request] = {}
        self.totals = DeviceTotals(self.devices)
        self.lock = threading.Lock()
        self.pending_wake: float | None = None
        self.error: BaseException | None = None
        self.num_events = 0
        self.num_failed = 0   # requests ended by a policy error that concerned them alone
        self.start = time.perf_counter()

    def clock(self) -> float:
        return time.perf_counter() - self.start

    # -- the loop -----------------------------------------------------------------------------
    def serve(self, inbox: queue.SimpleQueue, deliver) -> None:
        self.start = time.perf_counter()
        changed, stopping = False, False
        try:
            while not stopping:
                cmds = []
                if not changed:   # nothing to do until a command or the policy's wake-up
                    timeout = None if self.pending_wake is None else \
                        max(0.0, self.pending_wake - self.clock())
                    try:
                        cmds.append(inbox.get(timeout=timeout))
                    except queue.Empty:
                        pass
                while True:
                    try:
                        cmds.append(inbox.get_nowait())
                    except queue.Empty:
                        break
                with self.lock:
                    events: list = []
                    now = self.clock()
                    stopping = any(c[0] == "stop" for c in cmds)
                    changed |= self._take_commands(cmds, now, events)
                    if self.pending_wake is not None and now >= self.pending_wake:
                        self.pending_wake = None
                        changed = True
                    if stopping:
                        self._abort_all(now, events)
                    elif changed:
                        changed = self._schedule(now, events, deliver)
                if events:
                    deliver(events)
        except BaseException as exc:   # noqa: BLE001 - handed to every waiting client
            self.error = exc
            open_ids = np.flatnonzero(self.table.status[:self.table.size] == WAITING)
            deliver([(int(rid), "error", exc) for rid in open_ids])

    def _take_commands(self, cmds, now: float, events: list) -> bool:
        subs = [c for c in cmds if c[0] == "submit"]
        if subs:
            ids = self.table.register([len(c[2]) for c in subs], [c[3] for c in subs])
            for rid, (_, sid, prompt, cap, priority) in zip(ids.tolist(), subs):
                assert rid == sid, "server and engine disagree on request ids"
                self.table.arrive(rid, now)
                for h in self.histories:   # the client's own ids, not derived ones
                    h.prompt_len[rid] = len(prompt)
                    h.tokens[rid] = list(prompt)
                tell_devices(self.devices, "register", rid, len(prompt))
                request = Request(id=rid, arrival=now, prompt_tokens=len(prompt),
                                  max_new_tokens=cap, priority=priority)
                self.requests[rid] = request
                self.num_events += 1
                try:
                    self._call("add", request, now)
                except (PolicyError, ConfigError) as exc:
                    self._fail_one(rid, exc, now, events)
        aborted = False
        for cmd in cmds:
            if cmd[0] == "abort":
                rid = cmd[1]
                if rid < self.table.size and self.table.status[rid] == WAITING:
                    self._call("abort", rid)
                    self.table.close(rid, ABORTED, now)
                    self._gone(rid)
                    events.append((rid, "aborted", None))
                    aborted = True
        return bool(subs) or aborted

    def _fail_one(self, rid: int, exc: BaseException, now: float, events: list) -> None:
        """The policy choked on this one request: end it with the error, tell the policy to
        forget it (whatever of it the failed call kept), and keep serving the others."""
        try:
            self._call("abort", rid)
        except PolicyError:
            pass   # the request is gone either way; its own error is the one to report
        self.table.close(rid, ABORTED, now)
        self._gone(rid)
        self.num_failed += 1
        events.append((rid, "error", exc))

    def _abort_all(self, now: float, events: list) -> None:
        for rid in np.flatnonzero(self.table.status[:self.table.size] == WAITING).tolist():
            self._call("abort", rid)
            self.table.close(rid, ABORTED, now)
            self._gone(rid)
            events.append((rid, "aborted", None))

    def _gone(self, rid: int) -> None:
        tell_devices(self.devices, "free", rid)
        for h in self.histories:   # a server runs for long: keep no finished sequences
            h.tokens.pop(rid, None)
            h.prompt_len.pop(rid, None)
        self.requests.pop(rid, None)

    # -- schedule, run, update -----------------------------------------------------------------
    def _schedule(self, now: float, events: list, deliver) -> bool:
        plan = check_plan(self._call("schedule", now, list(self.devices)), self.name, now,
                          migrations="the serving front")
        self.pending_wake = plan.wake_at
        for rid in map(int, plan.rejected):
            check_rejectable(self.table, rid, self.name)
            self.table.close(rid, REJECTED, now)
            self._gone(rid)
            events.append((rid, "rejected", None))
        launched = launch_batches(plan, self.devices, self.index, self.table, self.name, now)
        for d, batch in launched:
            t0 = time.perf_counter()
            result = self.devices[d].run(batch)
            # A device that predicts rather than runs is waited out, to stand in for one.
            left = result.duration - (time.perf_counter() - t0)
            if left > 0:
                time.sleep(left)
            self._complete(d, batch, result, time.perf_counter() - t0, self.clock(), events)
            if events:   # stream this step's tokens now, not after the whole plan
                deliver(list(events))
                events.clear()
        return bool(launched) or bool(plan.rejected)

    def _complete(self, d, batch, result: StepResult, duration, end, events) -> None:
        self.num_events += 1
        emitted, finished, generated = self.table.complete(batch, end)
        self.totals.book(d, batch, result, int(emitted.sum()), duration)
        tokens = result.tokens
        ids = batch.request_ids
        for row in np.flatnonzero(emitted).tolist():
            events.append((int(ids[row]), "token", -1 if tokens is None else int(tokens[row])))
        full = StepResult(result.duration, result.cost, emitted, finished, generated, tokens)
        self._call("update", batch, full, end)
        for rid in ids[finished].tolist():
            self._gone(rid)
            events.append((rid, "finished", None))

    def _call(self, method: str, *args):
        return call_policy(self.policy, self.name, method, args, (PolicyError, ConfigError))

    def result(self) -> Result:
        with self.lock:
            return Result(self.table.records(), self.totals.table(), policy=self.name, workload="served",
                          wall_time=self.clock(), num_events=self.num_events,
                          itl=self.table.itl.copy())
