"""The `batchlab` command line.

    batchlab --version
    batchlab policies                      # what is installed, with parameters
    batchlab presets                       # GPU, model, runtime and deployment presets
    batchlab compare [--config FILE] [--out DIR]   # the main job: tables, plots, report.md
    batchlab run [--policy NAME] [--set key=value ...] [workload and device options] [--json]
    batchlab sweep CONFIG [--executor local|ray] [--address ADDR] [--processes N] [--out DIR]
    batchlab serve [--policy NAME] [--backend affine|torch] [--port N]   # OpenAI-compatible
    batchlab bench --endpoint URL [workload options] [--simulate POLICY]  # measure a server
    batchlab capacity --model M --gpu G [--gpus N ...] [--policy P] [--slo KEY=S,...] [--json]

A user mistake (unknown policy, bad parameter, unreadable trace) prints one line starting
with "batchlab: error:" and exits with status 2; no traceback. The options of each command
are declared in `parser.py`; here, what each command does with them.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

from .parser import one_line, Parser, build_parser
from ..studies import out_paths, scenario
from ..core import limits
from ..core.errors import BatchlabError, ConfigError
from ..policies.discovery import available_policies
from ..engines.result import _jsonable
from ..studies.progress import Progress
from ..studies.summary import format_summary


def cmd_capacity(args) -> int:
    from ..studies.capacity import check_search, find_capacity, format_capacity
    from ..studies.slo import SLO
    search = {"rel_tol": args.tol, "duration": args.duration, "start": args.start}
    options = {"rel_tol": "--tol", "duration": "--duration", "start": "--start"}
    check_search(search, lambda key: options.get(key, f"the search's {key}"))
    keys = ("model", "gpu", "prompt", "output", "gpus", "tp", "ep", "pp", "dp", "devices",
            "seed", "price")
    params = {"policy": args.policy, **{k: getattr(args, k) for k in keys
                                        if getattr(args, k) is not None}}
    for key, value in args.params:
        params[f"policy.{key}"] = value
    # Checked as `run` checks them, so that an error names the option (--gpus, --price).
    try:
        scenario.check_params(params)
    except ConfigError as exc:
        raise ConfigError(scenario.as_option(str(exc))) from None
    if args.devices is not None and (args.model or args.gpu):
        raise ConfigError(DEVICES_WITH_MODEL)
    slo = SLO.parse(args.slo) if args.slo is not None else SLO.from_config(None)
    cap = find_capacity(params, slo, **search)
    print(format_capacity(cap, as_json=args.json))
    return 0


def cmd_policies(args) -> int:
    infos = available_policies()
    if not infos:
        import os
        from importlib.metadata import entry_points
        from ..policies.discovery import ENV_FILTER, GROUP
        installed = sorted({ep.name for ep in entry_points(group=GROUP)})
        if os.environ.get(ENV_FILTER, "").strip() and installed:
            # The filter, not the installation, is why the list is empty: say so.
            raise ConfigError(f"{ENV_FILTER}={os.environ[ENV_FILTER]} selects none of the "
                              f"installed policies ({', '.join(installed)}); unset it or "
                              "name some of them")
        print("no policies installed (is batchlab installed with pip?)")
        return 1
    for info in infos:
        print(f"{info.name}  [{info.source}]")
        if info.error:
            print(f"    BROKEN: {info.error}")
            continue
        if info.description:
            print(f"    {info.description}")
        for p in info.params:
            print(f"    --set {p.name}=<{p.type}>  (default {p.default!r})")
    return 0


def cmd_compare(args) -> int:
    from importlib import resources
    from ..studies import compare
    if args.print_config:
        print((resources.files("batchlab") / "data" / compare.DEFAULT_CONFIG).read_text(),
              end="")
        return 0
    _check_processes(args)
    out_paths.check_folder("--out", args.out)
    policies = None
    if args.policies is not None:
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        if not policies:  # "--policies ," would run nothing and plot an empty page
            raise ConfigError(f"--policies {args.policies!r} names no policy; give names "
                              "separated by commas (see `batchlab policies`), or leave it out "
                              "for all")
    bar = None if args.quiet else _progress(args, "running")
    paths = compare.run(args.config, args.out, policies=policies, executor=args.executor,
                        processes=args.processes, address=args.address,
                        plots=not args.no_plots, progress=bar)
    report = paths["report"]
    sections = report.read_text().split("\n## ")
    print(sections[1].strip() if len(sections) > 1 else "")  # the one-page explanation
    print(f"\nwrote {len(paths)} files to {args.out}/ (report: {report})")
    return 0


def cmd_presets(args) -> int:
    from ..costmodel import list_deployments, list_gpus, list_models, list_runtimes
    for title, rows in (("GPUs (--gpu)", list_gpus()), ("models (--model)", list_models()),
                        ("runtime profiles (--runtime)", list_runtimes()),
                        ("deployments (--deployment)", list_deployments())):
        print(title)
        width = max(len(name) for name, _ in rows)
        for name, description in rows:
            print(f"  {name:<{width}}  {description}")
    return 0


def _params(args) -> dict:
    """The run the options describe, in the form scenario.run and sweeps share."""
    params = {
        "policy": args.policy, "trace": args.trace, "time_scale": args.time_scale,
        "limit": args.limit, "arrival": args.arrival, "rate": args.rate, "cv": args.cv,
        "users": args.users, "think_time": args.think_time, "requests": args.requests,
        "prompt": args.prompt, "output": args.output, "max_new_tokens": args.max_new_tokens,
        "lengths": args.lengths, "max_tokens": args.max_tokens,
        "model": args.model, "gpu": args.gpu, "gpus": args.gpus, "tp": args.tp, "ep": args.ep,
        "pp": args.pp, "dp": args.dp, "price": args.price, "devices": args.devices,
        "efficiency": args.efficiency, "runtime": args.runtime, "overlap": args.overlap,
        "redundant_experts": args.redundant_experts, "deployment": args.deployment,
        "decode_threshold": args.decode_threshold,
        "seed": args.seed, "slo_ttft": args.slo_ttft, "slo_tpot": args.slo_tpot,
    }
    for key, value in args.params:
        params[f"policy.{key}"] = value
    if args.devices is not None and args.devices < 1:
        raise ConfigError(f"--devices must be >= 1, got {args.devices}")
    # The same checks a sweep file's settings get, worded with the option the user typed.
    try:
        scenario.check_params({k: v for k, v in params.items() if v is not None})
    except ConfigError as exc:
        raise ConfigError(scenario.as_option(str(exc))) from None
    if args.deployment:
        # It fixes these itself; given beside it they would be silently ignored.
        fixed = [scenario.option(k) for k in scenario.conflicts(params, by="deployment")]
        if fixed:
            raise ConfigError(f"--deployment {args.deployment} fixes its own model, GPUs, "
                              f"layout and price; drop {', '.join(fixed)} (or drop --deployment "
                              "and give --model and --gpu)")
    if args.devices is not None and (args.model or args.gpu):
        raise ConfigError(DEVICES_WITH_MODEL)
    for flag in ("gpus", "tp", "ep", "pp", "dp", "efficiency", "runtime", "overlap",
                 "redundant_experts", "decode_threshold"):
        if params[flag] is not None and not (args.model or args.gpu or args.deployment):
            raise ConfigError(f"{scenario.option(flag)} needs --model and --gpu (it is a "
                              "cost-model setting; the affine device has none)")
    if args.limit is not None and not args.trace:
        raise ConfigError("--limit applies to --trace only; use --requests for sampled traffic")
    if args.time_scale is not None and not args.trace:
        raise ConfigError("--time-scale applies to --trace only; use --rate for sampled "
                          "traffic")
    if args.lengths and args.trace:
        raise ConfigError("--trace replays its own arrivals and lengths; drop --lengths (or "
                          "drop --trace: --lengths with --arrival takes a trace's lengths "
                          "at other arrivals)")
    if args.lengths and (args.prompt or args.output):
        raise ConfigError(f"--lengths takes each request's prompt and output lengths from "
                          f"{args.lengths}; drop --prompt and --output")
    if args.max_tokens is not None and not args.lengths:
        raise ConfigError("--max-tokens caps the pairs of --lengths; give --lengths too, or "
                          "use --max-new-tokens to cap outputs")
    if args.trace:
        # The trace gives the arrivals and lengths; these would be silently ignored.
        ignored = [scenario.option(k) for k in scenario.conflicts(params, by="trace")]
        if ignored:
            raise ConfigError(f"--trace {args.trace} replays the trace's arrivals and lengths; "
                              f"drop {', '.join(ignored)} (--time-scale speeds it up, --limit "
                              "shortens it; --lengths takes only its lengths, with the "
                              "arrivals of --arrival)")
    return {k: v for k, v in params.items() if v is not None}


DEVICES_WITH_MODEL = ("--devices counts affine teaching devices; with --model and --gpu give "
                      "replicas with --dp, or GPUs per replica with --gpus")


def _check_processes(args) -> None:
    # The executors check it too, but name no option ("processes must be ...").
    if args.processes is not None:
        limits.check_int(args.processes, "--processes", low=1, high=limits.MAX_DEVICES)


def _warn_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    # A warning about the user's input (a trace row with 0 output tokens), not about our code:
    # one line like the errors, without the Python source line that warnings prints.
    print(f"batchlab: warning: {one_line(message)}", file=file or sys.stderr)


def _progress(args, what: str) -> Progress:
    # A bar on a terminal (or with --progress); elsewhere (a log, CI) one line at the end.
    return Progress(sys.stderr, what, is_terminal=True if args.progress else None)


def cmd_run(args) -> int:
    params = _params(args)
    outputs = {"--records": args.records, "--parquet": args.parquet, "--save": args.save,
               "--timeline": args.timeline}
    for option, path in outputs.items():
        out_paths.check_file(option, path)
    progress = _progress(args, "simulating")
    try:
        if args.timeline:
            from ..studies.timeline import run_with_timeline
            result, recorder = run_with_timeline(params, progress=progress)
        else:
            result = scenario.run(params, progress=progress)
    except ConfigError as exc:  # worded with the option the user typed (--cv, not cv)
        raise ConfigError(scenario.as_option(str(exc), scenario.ARRIVAL_KEYS)) from None
    if args.timeline:
        with out_paths.writing("--timeline", args.timeline):
            recorder.write(args.timeline, result)
    summary = result.summary(slo_ttft=args.slo_ttft, slo_tpot=args.slo_tpot)
    if scenario.on_teaching_device(params):
        summary = scenario.without_gpus(summary)  # its numbers are a teaching model's
    if args.records:
        with out_paths.writing("--records", args.records):
            result.to_csv(args.records)
    if args.parquet:
        with out_paths.writing("--parquet", args.parquet):
            result.to_parquet(args.parquet)
    if args.save:
        with out_paths.writing("--save", args.save):
            result.to_json(args.save, slo_ttft=args.slo_ttft, slo_tpot=args.slo_tpot)
    if args.json:
        print(json.dumps(_jsonable(summary), indent=1))
    else:
        print(format_summary(summary))
    return 0


def cmd_sweep(args) -> int:
    from pathlib import Path
    from ..studies import sweep
    _check_processes(args)
    points = sweep.expand(sweep.load_config(args.config))
    try:
        sweep.check_points(points)
    except ConfigError as exc:  # name the file, as load_config's errors do
        raise ConfigError(f"{args.config}: {exc}") from None
    out = Path(args.out or f"{Path(args.config).stem}-results")
    out_paths.check_folder("--out", out)
    cache = out / "points"
    reused = sum((cache / f"{sweep.point_key(p)}.json").exists() for p in points)
    rows = sweep.run_points(points, executor=args.executor, processes=args.processes,
                            address=args.address, cache_dir=cache,
                            progress=_progress(args, "running"))
    path = sweep.write_table(rows, out / "results.csv")
    failed = sum(bool(row.get("error")) for row in rows)
    print(sweep.format_table(rows))
    print(f"\n{len(rows)} points ({reused} reused from {cache}, {failed} failed): {path}")
    return 0


def _delegated(command: str):
    """The main(argv, parser_class) of a command that parses its own options, imported only
    when it runs (calibrate needs torch, serve the serve extra)."""
    if command == "calibrate":
        from ..backends.torch.calibrate_cli import calibrate_main
        return calibrate_main
    if command == "bench":  # replay a workload against an OpenAI-compatible server
        from ..studies.bench import bench_main
        return bench_main
    from ..studies.serve import main as serve_main
    return serve_main


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warn_one_line
            if argv[:1] in (["calibrate"], ["bench"], ["serve"]):
                # Their parsers get Parser too: a bad option is the same one line as elsewhere.
                return _delegated(argv[0])(argv[1:], parser_class=Parser)
            parser = build_parser()
            args = parser.parse_args(argv)
            if args.command is None:
                parser.print_help()
                return 0
            return {"policies": cmd_policies, "presets": cmd_presets, "compare": cmd_compare,
                    "run": cmd_run, "sweep": cmd_sweep,
                    "capacity": cmd_capacity}[args.command](args)
    except BrokenPipeError:
        # The reader left (`batchlab run | head`): stop quietly, as Unix tools do, with the
        # status of a process ended by SIGPIPE; stdout goes to /dev/null so that the flush at
        # exit does not raise again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass  # not a real file (a test's capture): nothing will be flushed to a pipe
        return 128 + 13
    except BatchlabError as exc:
        print(f"batchlab: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output file that cannot be written, say
        print(f"batchlab: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("batchlab: interrupted", file=sys.stderr)
        return 130
