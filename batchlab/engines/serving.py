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

Engine (`serving_engine.ServingEngine`). One thread runs the loop the simulator and `run_wallclock` run — schedule, run,
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
from collections.abc import Sequence, Sized

import attrs
import numpy as np

from ..core import limits
from ..core.errors import BatchlabError, ConfigError
from .result import Result
from .serving_engine import ServingEngine

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
        self._engine = ServingEngine(policy, devices)
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
