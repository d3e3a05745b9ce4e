"""The serving front (batchlab.engines.serving) and the HTTP example built on it.

Most tests use AffineDevice, which the server waits out in real time, so they run without
torch; the torch ones skip cleanly when it is missing.
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import batchlab
from batchlab.engines.serving import RequestRejected, Server
from batchlab.core.errors import ConfigError, PolicyError
from batchlab.core.table import ABORTED, FINISHED

ROOT = Path(__file__).resolve().parents[1]


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


# -- the HTTP example -----------------------------------------------------------------------

def load_example():
    spec = importlib.util.spec_from_file_location("http_server_example",
                                                  ROOT / "examples" / "http_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def post(port, payload, timeout=20):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", "/generate", body=json.dumps(payload),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    lines = [json.loads(x) for x in resp.read().decode().splitlines() if x.strip()]
    conn.close()
    return resp.status, lines


def disconnect_after(port, num_lines):
    """A client that reads a few token lines of a long generation, then hangs up."""
    body = json.dumps({"prompt": 6, "max_new_tokens": 10_000}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        data = b""
        while data.count(b'"token"') < num_lines and b'"done"' not in data:
            more = sock.recv(4096)
            if not more:
                break
            data += more
    return data


def test_http_server_streams_to_concurrent_clients_and_stops_by_itself():
    http_server = load_example()
    try:
        import torch  # noqa: F401
        from batchlab.backends.torch.device import torch_devices
        devices = torch_devices(1, "tiny-dense", 16384)
    except ImportError:
        devices = fast_devices()
    spy = Spy(batchlab.load_policy("continuous"))

    async def main():
        async with Server(spy, devices) as server:
            bound = asyncio.get_running_loop().create_future()
            serving = asyncio.ensure_future(http_server.serve(
                server, port=0, max_requests=8, timeout=30, ready=bound.set_result))
            port = await bound
            caps = [3, 5, 7, 9, 11, 13]
            clients = [asyncio.to_thread(post, port, {"prompt": 4 + i, "max_new_tokens": c,
                                                      "priority": i % 2})
                       for i, c in enumerate(caps)]
            clients.append(asyncio.to_thread(disconnect_after, port, 3))
            clients.append(asyncio.to_thread(post, port, {"prompt": [], "max_new_tokens": 3}))
            outs = await asyncio.gather(*clients)
            served = await serving   # returns by itself after 8 generate requests
            return port, caps, outs, served, server.result().records

    port, caps, outs, served, rec = run(main(), timeout=60)
    assert served == 8
    for cap, (status, lines) in zip(caps, outs[:6]):
        assert status == 200
        tokens, final = lines[:-1], lines[-1]
        assert len(tokens) == cap and final["status"] == "finished"
        assert final["num_tokens"] == cap
    assert b'"token"' in outs[6]
    assert outs[7][0] == 400 and "prompt" in outs[7][1][0]["error"]
    aborted = [rid for rid in range(rec.size) if rec["status"][rid] == ABORTED]
    assert len(aborted) == 1 and spy.aborted == aborted, "the hung-up client's request"
    with pytest.raises(OSError):   # the listener is closed
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_http_server_script_runs_and_exits_on_its_own():
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "http_server.py"), "--backend", "affine",
         "--port", "0", "--max-requests", "1", "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_this_checkout())
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line + proc.stderr.read()
        port = int(line.rsplit(":", 1)[1])
        status, lines = post(port, {"prompt": [1, 2, 3], "max_new_tokens": 4})
        assert status == 200 and len(lines) == 5 and lines[-1]["status"] == "finished"
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "served 1 requests: 1 finished" in out


def _this_checkout():
    """The environment for an example script, importing the batchlab under test."""
    import os
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


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


def raw(port, data: bytes):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_http_bad_bodies_get_an_answer_and_the_server_goes_on():
    http_server = load_example()
    bodies = [b'{"prompt": [1e400], "max_new_tokens": 3}',
              b'{"prompt": 4, "max_new_tokens": 1000000000000000000000000000000}',
              b'{"prompt": 4, "max_new_tokens": 3, "priority": 1' + b"0" * 400 + b"}",
              b'{"prompt": 50000000, "max_new_tokens": 3}',
              b"[" * 100000 + b"]" * 100000, b"\xff\xfe not json", b"[1, 2]"]

    def post_raw(port, body):
        return raw(port, b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                   % len(body) + body)

    async def main():
        async with Server("continuous", fast_devices()) as server:
            bound = asyncio.get_running_loop().create_future()
            serving = asyncio.ensure_future(http_server.serve(
                server, port=0, max_requests=len(bodies) + 2, timeout=30,
                ready=bound.set_result))
            port = await bound
            bad = [await asyncio.to_thread(post_raw, port, b) for b in bodies]
            health = await asyncio.to_thread(raw, port, b"GET /health HTTP/1.1\r\n\r\n")
            good = [await asyncio.to_thread(post, port, {"prompt": 4, "max_new_tokens": 3})
                    for _ in range(2)]
            await serving
            return bad, health, good

    bad, health, good = run(main(), timeout=60)
    for status, body in bad:
        assert status == 400 and "error" in json.loads(body), (status, body[:200])
    assert health[0] == 200 and json.loads(health[1])["ok"] is True
    assert all(status == 200 and lines[-1]["status"] == "finished" for status, lines in good)


@pytest.mark.parametrize("argv,words", [
    (["--port", "70000"], "argument --port: must be an integer from 0 to 65535, got 70000"),
    (["--port", "x"], "argument --port: invalid literal"),
    (["--timeout", "inf"], "argument --timeout: must be a finite number > 0"),
    (["--set", "window"], "argument --set: expected KEY=VALUE"),
    (["--set", "nope=1"], "policy 'continuous' has no parameter 'nope'"),
])
def test_http_server_script_rejects_bad_options_in_one_line(argv, words):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "http_server.py"),
                           "--backend", "affine", *argv], capture_output=True, text=True,
                          timeout=60, env=_this_checkout())
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr
