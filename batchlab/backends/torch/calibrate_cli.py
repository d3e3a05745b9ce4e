"""`batchlab calibrate`: measure this machine, fit the cost model, write a profile, and check
the simulator against the real device (`fidelity`). The fitting itself is `calibrate.py`."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import attrs

from ...core import limits
from ...core.errors import BatchlabError, ConfigError
from ...workloads.spec import check_length
from .calibrate import Profile, calibrate, default_shapes, write_profile


# -- fidelity: the simulator against the real device -----------------------------------------

FIDELITY_METRICS = (("throughput", "output_tokens_per_s"), ("ttft_p50", "ttft_p50_s"),
                    ("tpot_p50", "tpot_p50_s"))


def fidelity(profile: Profile, device, policy: str, workload, *, seed: int = 0,
             policy_params: dict | None = None, realtime: bool = True) -> dict:
    """Run `policy` on `workload` on the real `device` and in the simulator on the profile
    (cost model and affine); returns {"real": summary, "costmodel": ..., "affine": ...,
    "errors": {kind: {metric: relative error}}}."""
    from ...engines.simulator import simulate
    from ...engines.wallclock import run_wallclock
    from ...policies.discovery import load_policy
    params = policy_params or {}
    real = run_wallclock(load_policy(policy, **params), workload, [device], seed=seed,
                         realtime=realtime).summary()
    out = {"real": real, "errors": {}}
    for kind in ("costmodel", "affine"):
        sim = simulate(load_policy(policy, **params), workload, profile.devices(1, kind),
                       seed=seed).summary()
        out[kind] = sim
        out["errors"][kind] = {name: (sim[key] - real[key]) / real[key]
                               if real[key] else math.nan
                               for name, key in FIDELITY_METRICS}
    return out


# -- the command ------------------------------------------------------------------------------

def format_fit(rows, fit: dict) -> str:
    lines = [f"{'shape':<28} {'tokens':>6} {'measured ms':>11} {'cost model':>10} {'err':>7} "
             f"{'affine':>8} {'err':>7}"]
    for r in rows:
        lines.append(f"{r['shape']:<28} {r['tokens']:>6} {r['measured_ms']:>11.3f} "
                     f"{r['costmodel_ms']:>10.3f} {r['costmodel_err']:>+7.1%} "
                     f"{r['affine_ms']:>8.3f} {r['affine_err']:>+7.1%}")
    lines.append(f"relative error over {fit['num_shapes']} shapes: cost model rms "
                 f"{fit['costmodel_rms_rel_err']:.1%} (max {fit['costmodel_max_rel_err']:.1%}), "
                 f"affine rms {fit['affine_rms_rel_err']:.1%} "
                 f"(max {fit['affine_max_rel_err']:.1%})")
    return "\n".join(lines)


def format_fidelity(report: dict) -> str:
    lines = [f"{'metric':<22} {'real':>10} {'cost model':>10} {'err':>7} {'affine':>10} "
             f"{'err':>7}"]
    for name, key in FIDELITY_METRICS:
        lines.append(f"{key:<22} {report['real'][key]:>10.4f} "
                     f"{report['costmodel'][key]:>10.4f} "
                     f"{report['errors']['costmodel'][name]:>+7.1%} "
                     f"{report['affine'][key]:>10.4f} {report['errors']['affine'][name]:>+7.1%}")
    return "\n".join(lines)


def build_parser(parser_class=None) -> argparse.ArgumentParser:
    ap = (parser_class or argparse.ArgumentParser)(
        prog="batchlab calibrate",
        description="Measure step times of the torch backend over a grid of batch shapes, fit "
                    "the cost model (and an affine model) to them, write a profile, and check "
                    "the simulator against the real device.")
    ap.add_argument("--model", default="small-dense",
                    help="torch model preset (tiny-dense, tiny-moe, small-dense, small-moe) or "
                         "a .toml/.json of its fields (default small-dense)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--kv-capacity", type=int, default=16384, help="KV tokens of the device")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per shape (3)")
    ap.add_argument("--quick", action="store_true", help="a small grid (smoke test)")
    ap.add_argument("--out", default="calibration.toml", help="profile file to write")
    ap.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    fid = ap.add_argument_group("fidelity check (skipped with --no-fidelity)")
    fid.add_argument("--no-fidelity", action="store_true")
    fid.add_argument("--policy", default="continuous")
    fid.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE")
    fid.add_argument("--rate", type=float, default=3.0,
                     help="requests/s, Poisson (default 3: about 70%% busy for small-dense on "
                          "one CPU thread)")
    fid.add_argument("--requests", type=int, default=40)
    fid.add_argument("--prompt", default="uniform:16:128")
    fid.add_argument("--output", default="uniform:8:48")
    fid.add_argument("--fast", action="store_true",
                     help="skip idle gaps in the real run instead of replaying in real time")
    fid.add_argument("--seed", type=int, default=0)
    return ap


def calibrate_main(argv=None, parser_class=None) -> int:
    """`batchlab calibrate`; `parser_class` is the CLI's argparse parser, whose errors are one
    line like every other command's."""
    args = build_parser(parser_class).parse_args(argv)
    try:
        import torch
    except ImportError:
        print("batchlab: error: batchlab calibrate needs torch (pip install 'batchlab[torch]')",
              file=sys.stderr)
        return 2
    from .device import TorchDevice
    from ...policies.discovery import load_policy
    from ...workloads import make_workload
    try:
        # Every option checked before the measurement, which takes minutes: a mistake found
        # after it (an unwritable --out, a bad --set) would throw the measurement away.
        _check_options(args)
        params = limits.parse_settings(args.params)
        if not args.no_fidelity:
            load_policy(args.policy, **params)
            spec = make_workload("poisson", rate=args.rate, num_requests=args.requests,
                                 prompt=args.prompt, output=args.output)
        if args.threads:
            torch.set_num_threads(args.threads)
        device = TorchDevice("dev0", args.model, args.kv_capacity, device=args.device)
        print(f"calibrating {device.config.name} on {device.device} ...", flush=True)
        shapes = default_shapes(args.quick)
        profile, rows = calibrate(device, shapes=shapes, repeats=args.repeats)
        eff = profile.efficiency
        print(f"host: {profile.fit['host']}: {profile.gpu.bf16_flops / 1e9:.1f} GFLOP/s matmul, "
              f"{profile.gpu.memory_bandwidth / 1e9:.1f} GB/s copy")
        print(f"fitted cost model: compute efficiency {eff.compute:.3f}, memory efficiency "
              f"{eff.memory:.3f}, step overhead {eff.step_overhead * 1e3:.3f} ms, kernel "
              f"overhead {eff.kernel_overhead * 1e6:.2f} us")
        a = profile.affine
        print(f"fitted affine: fixed {a['fixed'] * 1e3:.3f} ms, per token "
              f"{a['per_token'] * 1e6:.2f} us, per context token "
              f"{a['per_context_token'] * 1e9:.2f} ns")
        print(format_fit(rows, profile.fit))
        report = {"fit": profile.fit, "shapes": rows}
        if not args.no_fidelity:
            fresh = TorchDevice("dev0", args.model, args.kv_capacity, device=args.device)
            print(f"\nfidelity: {args.policy} on {args.requests} requests at {args.rate}/s, "
                  f"real ({'skipping idle gaps' if args.fast else 'real time'}) vs simulated",
                  flush=True)
            fid = fidelity(profile, fresh, args.policy, spec, seed=args.seed,
                           policy_params=params, realtime=not args.fast)
            print(format_fidelity(fid))
            report["fidelity"] = fid["errors"]
            profile = attrs.evolve(profile, fit={**profile.fit, **{
                f"fidelity_{kind}_{name}_rel_err": err
                for kind, errs in fid["errors"].items() for name, err in errs.items()}})
        write_profile(args.out, profile)
        print(f"\nwrote {args.out}")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    except (BatchlabError, ValueError, OSError) as exc:
        text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"batchlab: error: {text}", file=sys.stderr)
        return 2
    return 0


def _check_options(args) -> None:
    """Each number in range and each output file writable, the error naming the option."""
    if args.threads is not None:
        limits.check_int(args.threads, "--threads", low=1, high=4096)
    limits.check_tokens(args.kv_capacity, "--kv-capacity")
    limits.check_int(args.repeats, "--repeats", low=1, high=10_000)
    limits.check_number(args.rate, "--rate", above=0)
    limits.check_count(args.requests, "--requests")
    limits.check_seed(args.seed, "--seed")
    for flag, value in (("--prompt", args.prompt), ("--output", args.output)):
        check_length(value, flag)  # it said "ConstantLength.n must be ...", not the option
    for flag, path in (("--out", args.out), ("--json", args.json)):
        if path is None:
            continue
        folder = Path(path).parent
        if Path(path).is_dir():
            raise ConfigError(f"{flag} {path} is a folder; give a file name")
        if not folder.is_dir():
            raise ConfigError(f"{flag} {path}: {folder} is not a folder (or does not exist); "
                              "create it or write elsewhere")
        if not os.access(folder, os.W_OK):
            raise ConfigError(f"{flag} {path}: folder {folder} is not writable")


if __name__ == "__main__":
    sys.exit(calibrate_main())
