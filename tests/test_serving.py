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
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
