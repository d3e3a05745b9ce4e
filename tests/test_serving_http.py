"""The HTTP example (examples/http_server.py) built on the serving front: concurrent
streaming clients over loopback, a client that hangs up, bad bodies that get a 400 while the
server goes on, and the script's own start, exit and option errors.

The server runs on AffineDevice (torch when installed, for the first test).
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
from batchlab.engines.serving import Server
from batchlab.core.table import ABORTED
from test_serving_server import Spy, fast_devices, run

ROOT = Path(__file__).resolve().parents[1]


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
