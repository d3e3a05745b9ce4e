"""`batchlab serve`: the OpenAI-compatible front (`batchlab.engines.openai_front`) for one
policy on one device, affine (a cost-model device waited out in real time) or the tiny torch
model. Here, above the engines and the backends, because it picks a device."""

from __future__ import annotations

from ..backends.affine import affine_devices
from ..core.errors import BatchlabError
from ..engines.openai_front import LOOPBACK, create_app
from ..engines.serving import Server
from ..policies.discovery import load_policy


def main(argv=None) -> int:
    """`batchlab serve`: an OpenAI-compatible server for one policy on one device."""
    import argparse
    import sys
    ap = argparse.ArgumentParser(prog="batchlab serve", description=main.__doc__)
    ap.add_argument("--host", default=LOOPBACK, help="default 127.0.0.1 (loopback only)")
    ap.add_argument("--port", type=int, default=8000)
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
        print("batchlab serve: error: needs the serve extra: pip install 'batchlab[serve]'",
              file=sys.stderr)
        return 2
    try:
        params = dict(p.split("=", 1) for p in args.params)
        policy = load_policy(args.policy, **params)
        if args.backend == "affine":
            devices = affine_devices(1, fixed=0.005, per_token=2e-4, per_context_token=1e-6,
                                     kv_capacity_tokens=args.kv_capacity)
        else:
            from ..backends.torch.device import torch_devices
            devices = torch_devices(1, args.model, args.kv_capacity)
    except (BatchlabError, ValueError, ImportError) as exc:
        print(f"batchlab serve: error: {exc}", file=sys.stderr)
        return 2
    app = create_app(Server(policy, devices), model=args.served_model_name)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
