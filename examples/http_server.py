"""Serve a batchlab policy over HTTP on localhost, streaming each token as it is produced.

    python examples/http_server.py --policy continuous --model tiny-dense --port 8000
    curl -N -d '{"prompt": [1, 2, 3], "max_new_tokens": 16}' http://127.0.0.1:8000/generate

Endpoints (HTTP/1.1, one request per connection, standard library only):
  POST /generate  body {"prompt": [token ids] or a length, "max_new_tokens": n,
                  "priority": p (optional)}
                  -> 200, application/x-ndjson, chunked: one {"token": id} line per token,
                     then {"done": true, "status": "finished", "request_id": r,
                     "num_tokens": n}; 400 with {"error": ...} for a bad request.
                  A client that disconnects cancels its request (the policy aborts it).
  GET /stats      -> the summary of what was served so far (batchlab's Result.summary()).
  GET /health     -> 200 {"ok": true, ...} while the engine serves; 503 {"ok": false,
                  "error": why} once it has failed or stopped.
Any request that cannot be served gets a JSON error reply (400 for the client's mistake, 500
for ours), never a dropped connection; one bad request never stops the others.

It binds to the loopback interface only, and stops by itself after --max-requests generate
requests or --timeout seconds, whichever comes first. --backend affine serves with a
cost-model device in real time (token ids are then -1), for machines without torch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys

from batchlab.engines.serving import RequestRejected, Server
from batchlab.core import limits
from batchlab.core.errors import BatchlabError, ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_BODY = 1 << 20


def _chunk(payload: dict) -> bytes:
    data = (json.dumps(payload) + "\n").encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


def _plain(writer, status: str, payload: dict) -> None:
    data = json.dumps(payload).encode()
    writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)


async def _read_request(reader):
    line = await reader.readline()
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        raise ValueError("malformed request line")
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    text = headers.get("content-length") or "0"
    length = int(text) if text.isdigit() and len(text) <= 12 else -1
    if not 0 <= length <= MAX_BODY:
        raise ValueError(f"body of {length} bytes (at most {MAX_BODY})")
    body = await reader.readexactly(length) if length else b""
    return parts[0].upper(), parts[1], body


async def _generate(server: Server, reader, writer, body: bytes) -> None:
    try:
        doc = json.loads(body or b"{}")
        if not isinstance(doc, dict):
            raise ValueError("the body must be a JSON object")
        stream = server.submit(doc.get("prompt"), doc.get("max_new_tokens"),
                               priority=doc.get("priority", 0))
    except (ValueError, RecursionError, BatchlabError) as exc:
        # ValueError covers bad JSON, NaN-free JSON and 5000-digit ints; RecursionError,
        # [[[[...]]]] nested past Python's limit.
        # A ValueError is the client's mistake; anything else is the engine's stored failure.
        code = "400 Bad Request" if isinstance(exc, (ValueError, RecursionError)) \
            else "503 Service Unavailable"
        _plain(writer, code, {"error": str(exc)[:500]})
        return
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                 b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    # The client sends nothing more: end of input means it went away, so stop generating.
    gone = asyncio.ensure_future(reader.read(1))
    gone.add_done_callback(lambda _: stream.cancel())
    final = {"done": True, "request_id": stream.request_id}
    try:
        async for token in stream:
            writer.write(_chunk({"token": token}))
            await writer.drain()
        final["status"] = stream.status
    except RequestRejected as exc:
        final.update(status="rejected", error=str(exc))
    except (ConnectionError, OSError):   # the client hung up mid-stream
        stream.cancel()
        try:   # the handler ends when its request has: wait for the abort to land
            await stream.collect()
        except BatchlabError:
            pass
        return
    finally:
        gone.cancel()
    final["num_tokens"] = len(stream.tokens)
    writer.write(_chunk(final) + b"0\r\n\r\n")
    await writer.drain()


async def serve(server: Server, *, host: str = "127.0.0.1", port: int = 0,
                max_requests: int | None = None, timeout: float | None = None,
                ready=None) -> int:
    """Serve `server` (started) over HTTP until max_requests generate requests have ended or
    timeout seconds have passed; returns how many ended. ready(port) is called once bound."""
    if host not in LOOPBACK:
        raise ValueError(f"this example serves on the loopback interface only, not {host!r}")
    done = asyncio.Event()
    served = 0

    async def handle(reader, writer):
        nonlocal served
        try:
            method, path, body = await asyncio.wait_for(_read_request(reader), 10)
            if method == "POST" and path == "/generate":
                try:
                    await _generate(server, reader, writer, body)
                finally:
                    served += 1
                    if max_requests is not None and served >= max_requests:
                        done.set()
            elif method == "GET" and path == "/stats":
                summary = server.result().summary()
                _plain(writer, "200 OK", {k: (None if isinstance(v, float) and
                                                not math.isfinite(v) else v)
                                            for k, v in summary.items()})
            elif method == "GET" and path == "/health":
                health = server.health()
                _plain(writer, "200 OK" if health["ok"] else "503 Service Unavailable", health)
            else:
                _plain(writer, "404 Not Found", {"error": f"no route {method} {path}"})
            await writer.drain()
        except (ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            _plain(writer, "400 Bad Request", {"error": str(exc)[:500] or type(exc).__name__})
        except (ConnectionError, OSError):
            pass
        except Exception as exc:   # noqa: BLE001 - our bug: answer it, keep serving the rest
            _plain(writer, "500 Internal Server Error",
                   {"error": f"{type(exc).__name__}: {exc}"[:500]})
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, host, port)
    bound = listener.sockets[0].getsockname()[1]
    if ready is not None:
        ready(bound)
    async with listener:
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except asyncio.TimeoutError:
            pass
    return served


def make_devices(args):
    if args.backend == "affine":
        from batchlab import affine_devices
        return affine_devices(1, fixed=0.005, per_token=2e-4, per_context_token=1e-6,
                              kv_capacity_tokens=args.kv_capacity)
    from batchlab.backends.torch.device import torch_devices
    return torch_devices(1, args.model, args.kv_capacity, device=args.device)


def _checked(check, real=False, **bounds):
    """An argparse type: parse, then apply one of batchlab.core.limits' checks."""
    def parse(text):
        try:
            value = float(text) if real else int(text)
            return check(value, "value", **bounds)
        except (ValueError, OverflowError, ConfigError) as exc:
            raise argparse.ArgumentTypeError(str(exc).replace("value ", "", 1)) from None
    return parse


def _key_value(text):
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line and exit 2, as batchlab's own command
        self.exit(2, f"http_server: error: {message}\n")


def main(argv=None) -> int:
    ap = _Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1", choices=LOOPBACK)
    ap.add_argument("--port", type=_checked(limits.check_port), default=8000,
                    help="0 picks a free port")
    ap.add_argument("--policy", default="continuous")
    ap.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
                    type=_key_value, help="a policy parameter")
    ap.add_argument("--backend", choices=("torch", "affine"), default="torch")
    ap.add_argument("--model", default="tiny-dense", help="torch model preset or file")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    ap.add_argument("--kv-capacity", type=_checked(limits.check_tokens), default=16384,
                    help="KV tokens per device")
    ap.add_argument("--max-requests", type=_checked(limits.check_count), default=100,
                    help="stop after this many generate requests (default 100)")
    ap.add_argument("--timeout", type=_checked(limits.check_seconds, positive=True, real=True),
                    default=300.0, help="stop after this many seconds (default 300)")
    args = ap.parse_args(argv)
    from batchlab import load_policy
    try:
        policy = load_policy(args.policy, **dict(args.params))
        devices = make_devices(args)
    except (BatchlabError, ValueError) as exc:
        print(f"http_server: error: {exc}", file=sys.stderr)
        return 2

    async def run():
        async with Server(policy, devices) as server:
            def ready(port):
                print(f"listening on http://{args.host}:{port}", flush=True)
            served = await serve(server, host=args.host, port=args.port,
                                 max_requests=args.max_requests, timeout=args.timeout,
                                 ready=ready)
        s = server.result().summary()
        print(f"served {served} requests: {s['num_finished']} finished, {s['num_aborted']} "
              f"aborted, {s['num_rejected']} rejected; "
              f"{s['output_tokens_per_s']:.1f} output tokens/s", flush=True)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
