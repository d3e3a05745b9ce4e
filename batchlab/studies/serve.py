"""`batchlab serve`: the OpenAI-compatible front (`batchlab.engines.openai_front`) for one
policy on one device, affine (a cost-model device waited out in real time) or the tiny torch
model. Here, above the engines and the backends, because it picks a device."""

from __future__ import annotations

import socket

from ..backends.affine import affine_devices
from ..core import limits
from ..core.errors import BatchlabError, ConfigError
from ..engines.openai_front import LOOPBACK, create_app
from ..engines.serving import Server
from ..policies.discovery import load_policy


def main(argv=None, parser_class=None) -> int:
    """`batchlab serve`: an OpenAI-compatible server for one policy on one device."""
    import argparse
    import sys
    ap = (parser_class or argparse.ArgumentParser)(prog="batchlab serve",
                                                   description=main.__doc__)
    ap.add_argument("--host", default=LOOPBACK, help="default 127.0.0.1 (loopback only)")
    ap.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free one")
    ap.add_argument("--policy", default="continuous")
    ap.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
                    help="a policy parameter; repeat for several")
    ap.add_argument("--backend", choices=("affine", "torch"), default="affine",
                    help="affine: a cost-model device waited out in real time (default); "
                         "torch: the tiny torch model")
    ap.add_argument("--model", default="tiny-dense", help="torch model preset (torch only)")
    ap.add_argument("--served-model-name", default="batchlab")
    ap.add_argument("--kv-capacity", type=int, default=65536, help="KV tokens of the device")
    args = ap.parse_args(argv)
    try:
        import uvicorn
    except ImportError:
        print("batchlab: error: batchlab serve needs the serve extra: "
              "pip install 'batchlab[serve]'", file=sys.stderr)
        return 2
    try:
        limits.check_port(args.port, "--port")
        limits.check_tokens(args.kv_capacity, "--kv-capacity")
        policy = load_policy(args.policy, **limits.parse_settings(args.params))
        if args.backend == "affine":
            devices = affine_devices(1, fixed=0.005, per_token=2e-4, per_context_token=1e-6,
                                     kv_capacity_tokens=args.kv_capacity)
        else:
            from ..backends.torch.device import torch_devices
            devices = torch_devices(1, args.model, args.kv_capacity)
        sock = _listen(args.host, args.port)
    except (BatchlabError, ValueError, ImportError) as exc:
        print(f"batchlab: error: {exc}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    # With --port 0 this line is the only way to learn the port.
    print(f"batchlab serve: {args.policy} on {args.backend}, listening on "
          f"http://{host if ':' not in host else f'[{host}]'}:{port}", file=sys.stderr,
          flush=True)
    app = create_app(Server(policy, devices), model=args.served_model_name)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    with sock:
        server.run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), or a ConfigError naming the option at fault: bound
    here, before uvicorn, which would print its own error and exit 3 instead."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--host {host!r} is not a host name or address that resolves "
                          f"({exc}); use 127.0.0.1, 0.0.0.0 or a local interface's "
                          "address") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        why = exc.strerror or exc
        raise ConfigError(f"cannot listen on --host {host} --port {port} ({why}); pick a free "
                          "port (--port 0 picks one) or another address") from None
    sock.listen(2048)
    return sock
