"""The serving front (batchlab.engines.serving): the in-process Server's streams,
cancellation, rejection, priorities, policy errors and health, and that one bad request never
breaks it. The HTTP example built on it is tested in test_serving_http.py.

Most tests use AffineDevice, which the server waits out in real time, so they run without
torch; the torch ones skip cleanly when it is missing.
"""

from __future__ import annotations

import asyncio

import pytest

import batchlab
from batchlab.engines.serving import RequestRejected, Server
from batchlab.core.errors import ConfigError, PolicyError
from batchlab.core.table import ABORTED, FINISHED


def fast_devices(n=1, **kw):
    kw = {"fixed": 0.001, "per_token": 1e-5, "per_context_token": 0.0, **kw}
    return batchlab.affine_devices(n, **kw)


class Spy:
    """Delegates to a real policy and logs the aborts it is told of."""

    def __init__(self, inner):
        self.inner, self.name, self.aborted = inner, inner.name, []

    def add(self, request, now):
        self.inner.add(request, now)

    def schedule(self, now, devices):
        return self.inner.schedule(now, devices)

    def update(self, batch, result, now):
        self.inner.update(batch, result, now)

    def abort(self, request_id):
        self.aborted.append(request_id)
        self.inner.abort(request_id)


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_concurrent_streams_get_exactly_their_tokens():
    async def main():
        async with Server("continuous", fast_devices()) as server:
            streams = [server.submit(5 + i, 3 + i, priority=i % 3) for i in range(8)]
            outs = await asyncio.gather(*(s.collect() for s in streams))
        return server, streams, outs

    server, streams, outs = run(main())
    assert [len(o) for o in outs] == [3 + i for i in range(8)]
    assert all(s.status == "finished" for s in streams)
    assert all(t == -1 for o in outs for t in o), "an affine device has no token ids"
    rec = server.result().records
    assert (rec["status"] == FINISHED).all()
    assert list(rec["output_tokens"]) == [3 + i for i in range(8)]
    assert (rec["first_token"] > rec["arrival"]).all()


def test_cancel_aborts_the_request_in_the_policy():
    spy = Spy(batchlab.load_policy("continuous"))

    async def main():
        async with Server(spy, fast_devices()) as server:
            long = server.submit(8, 10_000)
            short = server.submit(8, 4)
            got = 0
            async for _ in long:
                got += 1
                if got == 3:
                    long.cancel()
            return server, long, await short.collect(), got

    server, long, short_tokens, got = run(main())
    assert long.status == "aborted" and 3 <= got < 10_000
    assert spy.aborted == [long.request_id]
    assert len(short_tokens) == 4
    rec = server.result().records
    assert rec["status"][long.request_id] == ABORTED
    assert rec["status"][1] == FINISHED


def test_cancelling_the_consumer_task_aborts_the_request():
    spy = Spy(batchlab.load_policy("continuous"))

    async def main():
        async with Server(spy, fast_devices()) as server:
            stream = server.submit(4, 10_000)
            task = asyncio.ensure_future(stream.collect())
            while len(stream.tokens) < 2:
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            while stream.status is None:
                await asyncio.sleep(0.005)
            return stream

    stream = run(main())
    assert stream.status == "aborted" and spy.aborted == [stream.request_id]


def test_closing_the_server_aborts_open_requests():
    async def main():
        server = Server("continuous", fast_devices())
        await server.start()
        stream = server.submit(4, 10_000)
        await asyncio.sleep(0.02)
        await server.close()
        return stream, await stream.collect()

    stream, tokens = run(main())
    assert stream.status == "aborted" and 0 < len(tokens) < 10_000


def test_a_request_too_big_for_memory_is_rejected():
    async def main():
        async with Server("continuous", fast_devices(kv_capacity_tokens=64)) as server:
            ok = server.submit(8, 4)
            big = server.submit(60, 100)
            with pytest.raises(RequestRejected, match="rejected request 1"):
                await big.collect()
            return big, await ok.collect()

    big, tokens = run(main())
    assert big.status == "rejected" and len(tokens) == 4


def test_priorities_order_service_under_contention():
    async def main():
        policy = batchlab.load_policy("continuous", order="priority", max_num_seqs=1)
        async with Server(policy, fast_devices()) as server:
            streams = [server.submit(4, 3, priority=p) for p in (0, 0, 0, 5)]
            await asyncio.gather(*(s.collect() for s in streams))
        return server.result().records

    rec = run(main())
    # The first request was admitted alone before the others arrived in the same drain, or
    # together with them; either way the priority-5 request beats requests 1 and 2.
    assert rec["finish"][3] < rec["finish"][1] and rec["finish"][3] < rec["finish"][2]


def test_policy_errors_reach_every_stream_and_close():
    class Broken(Spy):
        def schedule(self, now, devices):
            raise RuntimeError("boom")

    async def main():
        server = Server(Broken(batchlab.load_policy("continuous")), fast_devices())
        await server.start()
        stream = server.submit(4, 3)
        with pytest.raises(PolicyError, match="boom"):
            await stream.collect()
        with pytest.raises(PolicyError):
            await server.close()

    run(main())


def test_bad_submissions_are_refused_at_once():
    async def main():
        async with Server("continuous", fast_devices()) as server:
            for prompt, cap in (([], 3), ("abc", 3), ([1.5], 3), (0, 3), (4, 0), (4, True)):
                with pytest.raises(ConfigError):
                    server.submit(prompt, cap)

    run(main())
    with pytest.raises(ConfigError, match="started"):
        Server("continuous", fast_devices()).submit(4, 3)


# -- torch ----------------------------------------------------------------------------------

def test_served_tokens_equal_solo_tokens():
    torch = pytest.importorskip("torch")
    from batchlab.backends.torch.device import TorchDevice, torch_devices
    from batchlab.core import Batch
    torch.set_num_threads(1)
    prompts = [[(7 * i + j) % 256 for j in range(5 + 3 * i)] for i in range(6)]

    async def main():
        async with Server("continuous", torch_devices(1, "tiny-dense", 4096)) as server:
            streams = [server.submit(p, 6) for p in prompts]
            return await asyncio.gather(*(s.collect() for s in streams))

    outs = run(main())
    for i, prompt in enumerate(prompts):
        solo = TorchDevice("solo", "tiny-dense", 4096)
        solo.history.prompt_len[0], solo.history.tokens[0] = len(prompt), list(prompt)
        solo.run(Batch([0], [len(prompt)], [0]))
        for k in range(5):
            solo.run(Batch([0], [1], [len(prompt) + k]))
        assert outs[i] == solo.history.generated(0), f"request {i}"


# -- one bad request never breaks the server ------------------------------------------------

def test_poisoned_submissions_are_refused_and_the_next_ones_served():
    """The inputs that used to kill the engine thread or freeze the event loop are refused
    at submit, one ConfigError each, and the requests after them are all served."""
    poison = [
        (4, 10**30, 0),                 # max_new_tokens beyond int64: killed the engine
        (4, 3, 10**400),                # priority: broke a priority policy for everyone
        (50_000_000, 3, 0),             # a 50M-token prompt length: froze the event loop
        ([1e400], 3, 0),                # a float that is infinite
        ([2**70], 3, 0),                # a token id beyond any vocabulary
        (None, 3, 0), (4, None, 0), (4, 3, "high"), (4, 3, 1.5),
    ]

    async def main():
        async with Server("continuous", fast_devices(), max_prompt_tokens=4096) as server:
            refused = []
            for prompt, cap, priority in poison:
                with pytest.raises(ConfigError) as info:
                    server.submit(prompt, cap, priority=priority)
                refused.append(str(info.value))
            good = [server.submit(3 + i, 2 + i % 3, priority=i % 2) for i in range(12)]
            outs = [await s.collect() for s in good]
            return refused, good, outs, server.health()

    refused, good, outs, health = run(main())
    assert all("\n" not in m and len(m) < 300 for m in refused), refused
    assert "max_new_tokens must be an integer from 1 to" in refused[0]
    assert "priority must be an integer from" in refused[1]
    assert "a prompt length must be an integer from 1 to 4096" in refused[2]
    assert [len(o) for o in outs] == [2 + i % 3 for i in range(12)]
    assert all(s.status == "finished" for s in good)
    assert health == {"ok": True, "error": None, "num_open": 0}


class ChokesOnOdd(Spy):
    """A policy whose add() raises for every odd prompt length: one request's problem."""

    def add(self, request, now):
        if request.prompt_tokens % 2:
            raise OverflowError(f"cannot rank request {request.id}")
        self.inner.add(request, now)


def test_a_policy_error_in_add_ends_only_that_request():
    async def main():
        spy = ChokesOnOdd(batchlab.load_policy("continuous", order="priority"))
        async with Server(spy, fast_devices()) as server:
            streams = [server.submit(4 + i, 3, priority=i) for i in range(8)]
            results = []
            for s in streams:
                try:
                    results.append(len(await s.collect()))
                except PolicyError as exc:
                    results.append(str(exc))
            later = await server.submit(6, 5).collect()   # the engine still serves
            return results, later, server.health(), server.result(), spy.aborted

    results, later, health, result, aborted = run(main())
    for i, got in enumerate(results):
        if (4 + i) % 2:
            assert "add() raised OverflowError: cannot rank request" in got
        else:
            assert got == 3
    assert len(later) == 5 and health["ok"]
    assert aborted == [1, 3, 5, 7], "the policy is told to forget the request it choked on"
    assert result.summary()["num_finished"] == 5


def test_health_tells_the_truth_after_the_engine_fails():
    class Broken(Spy):
        def schedule(self, now, devices):
            raise RuntimeError("boom")

    async def main():
        server = Server(Broken(batchlab.load_policy("continuous")), fast_devices())
        before = server.health()
        await server.start()
        stream = server.submit(4, 3)
        with pytest.raises(PolicyError):
            await stream.collect()
        after = server.health()
        with pytest.raises(PolicyError):
            server.submit(4, 3)
        with pytest.raises(PolicyError):
            await server.close()
        return before, after

    before, after = run(main())
    assert not before["ok"] and "not running" in before["error"]
    assert not after["ok"] and "the engine stopped: PolicyError" in after["error"]
