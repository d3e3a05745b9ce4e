"""The `batchlab` command line's options: the parser of every command that `main`
dispatches (calibrate, bench and serve parse their own, with `Parser`)."""

from __future__ import annotations

import argparse
import math

from .. import __version__
from ..core import limits
from ..core.errors import ConfigError

DEFAULT_POLICY = "continuous"



def _finite(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        return value
    return parse


class Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line ("batchlab: error: ...") and exit 2, like every
    other user mistake, instead of a usage block."""

    def error(self, message):
        command = self.prog.partition(" ")[2]
        hint = f"`batchlab {command} --help`" if command else "`batchlab --help`"
        self.exit(2, f"batchlab: error: {one_line(message)} (see {hint})\n")


def one_line(text) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _key_value(text: str) -> tuple[str, str]:
    # One KEY=VALUE as the delegated commands read them (limits.parse_settings), for argparse.
    try:
        (pair,) = limits.parse_settings([text], where="").items()
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).strip()) from None
    return pair


PROGRESS_HELP = ("draw the progress bar on stderr even when it is not a terminal (default: "
                 "a bar with an ETA on a terminal, one line at the end otherwise)")


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="batchlab", description="Batching and scheduling "
                 "policies for LLM inference serving, simulated.")
    ap.add_argument("--version", action="version", version=f"batchlab {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    sub.add_parser("policies", help="list installed policies and their parameters")
    sub.add_parser("presets", help="list the cost model's presets: GPUs, models, runtime "
                   "profiles and deployments")
    # These three parse their own options (main() hands them over); listed here so that
    # `batchlab --help` and a mistyped command name them.
    sub.add_parser("calibrate", add_help=False, help="fit the cost model to a real torch "
                   "device and check simulator against it (see `batchlab calibrate --help`)")
    sub.add_parser("serve", add_help=False, help="an OpenAI-compatible server for one policy "
                   "on one device (see `batchlab serve --help`)")
    sub.add_parser("bench", add_help=False, help="replay a workload against an "
                   "OpenAI-compatible server and measure it (see `batchlab bench --help`)")

    cmp_ = sub.add_parser("compare", help="the main job: why a MoE model is cheap at scale and "
                          "expensive locally, and what each policy costs (tables, plots, "
                          "report.md)")
    cmp_.add_argument("--config", metavar="FILE.toml", help="scenario file (default: the "
                      "embedded one; see --print-config)")
    cmp_.add_argument("--print-config", action="store_true",
                      help="print the default scenario file, to copy and edit, and exit")
    cmp_.add_argument("--out", metavar="DIR", default="batchlab-compare",
                      help="output folder (default batchlab-compare); finished runs kept in "
                      "DIR/points are reused")
    cmp_.add_argument("--policies", help="comma-separated policies (default: all installed)")
    cmp_.add_argument("--executor", choices=("local", "ray"), default="local")
    cmp_.add_argument("--address", help="Ray cluster address (default: a local instance)")
    cmp_.add_argument("--processes", type=int, help="worker processes (default: one per CPU)")
    cmp_.add_argument("--no-plots", action="store_true", help="tables and report only")
    cmp_.add_argument("--quiet", action="store_true", help="no progress at all (default: a "
                      "bar with an ETA on a terminal, one line at the end otherwise)")
    cmp_.add_argument("--progress", action="store_true", help=PROGRESS_HELP)

    run = sub.add_parser("run", help="simulate one policy on one workload and print a summary")
    run.add_argument("--policy", default=DEFAULT_POLICY, help="policy name (see `batchlab "
                     f"policies`; default {DEFAULT_POLICY})")
    run.add_argument("--set", dest="params", action="append", type=_key_value, default=[],
                     metavar="KEY=VALUE", help="a policy parameter; repeat for several")
    wl = run.add_argument_group("workload")
    wl.add_argument("--trace", help="replay a CSV or JSONL trace (Azure LLM inference "
                    "columns, or arrival,prompt_tokens,output_tokens) instead of sampling")
    wl.add_argument("--time-scale", type=_finite(float),
                    help="multiply trace arrival times (0.5 replays twice as fast; default 1)")
    wl.add_argument("--limit", type=int, help="use only the first N requests of the trace")
    wl.add_argument("--arrival",
                    help="poisson, gamma, constant, closed or local (default poisson)")
    wl.add_argument("--rate", type=_finite(float), help="requests per second (default 1.5)")
    wl.add_argument("--cv", type=_finite(float), help="coefficient of variation (gamma)")
    wl.add_argument("--users", type=int, help="closed-loop users")
    wl.add_argument("--think-time", type=_finite(float), help="closed-loop think time, s")
    wl.add_argument("--requests", type=int, help="number of requests (500)")
    wl.add_argument("--prompt", help="prompt lengths: N, uniform:LO:HI, "
                    "lognormal:MEAN:CV[:MAX] (default lognormal:512:1.0)")
    wl.add_argument("--output", help="output lengths, as --prompt (default lognormal:128:1.0)")
    wl.add_argument("--lengths", metavar="TRACE", help="draw (prompt, output) pairs together "
                    "from a CSV/JSONL trace, with the arrivals of --arrival")
    wl.add_argument("--max-tokens", type=int, help="cap each --lengths pair at this many "
                    "tokens in all, scaled down proportionally")
    wl.add_argument("--max-new-tokens", type=int, help="cap every request carries")
    dev = run.add_argument_group("devices (affine teaching model unless --model is given)")
    dev.add_argument("--devices", type=int, help="number of affine devices (1)")
    dev.add_argument("--model", help="model preset for the roofline cost model")
    dev.add_argument("--gpu", help="GPU preset for the roofline cost model")
    dev.add_argument("--gpus", type=int, default=None, help="GPUs per device (cluster size)")
    dev.add_argument("--efficiency", metavar="PROFILE", help="cost-model efficiencies from a "
                     "calibration profile (batchlab calibrate) or a TOML/JSON file")
    dev.add_argument("--runtime", help="runtime profile of fixed costs: cuda-graph (default), "
                     "eager, overlap-scheduler")
    dev.add_argument("--overlap", action="store_true", default=None,
                     help="two-batch overlap of communication with computation")
    dev.add_argument("--redundant-experts", type=int, help="EPLB copies of routed experts")
    dev.add_argument("--decode-threshold", type=int, help="rows feeding up to this many "
                     "tokens are decode rows: 1 + the draft tokens verified a step (default 1)")
    dev.add_argument("--deployment", help="a named deployment (deepseek-v3-production): "
                     "prefill devices, then decode devices")
    dev.add_argument("--tp", type=int, help="tensor-parallel degree")
    dev.add_argument("--ep", type=int, help="expert-parallel degree")
    dev.add_argument("--pp", type=int, help="pipeline-parallel degree")
    dev.add_argument("--dp", type=int, help="data-parallel replicas (separate devices)")
    dev.add_argument("--price", type=_finite(float), help="USD per GPU-hour (default: the GPU "
                     "preset's); on affine devices, USD per device-hour (default none)")
    out = run.add_argument_group("output")
    out.add_argument("--slo-ttft", type=_finite(float), help="TTFT target, s (for goodput)")
    out.add_argument("--slo-tpot", type=_finite(float), help="TPOT target, s (for goodput)")
    out.add_argument("--seed", type=int, default=0)
    out.add_argument("--json", action="store_true", help="print the summary as JSON")
    out.add_argument("--records", metavar="FILE.csv", help="write per-request records")
    out.add_argument("--save", metavar="FILE.json", help="write summary, devices, records")
    out.add_argument("--parquet", metavar="FILE.parquet", help="write per-request records as "
                     "Parquet (needs pandas and pyarrow)")
    out.add_argument("--timeline", metavar="FILE.json", help="write a step timeline (trace "
                     "events: open it in https://ui.perfetto.dev or chrome://tracing)")
    out.add_argument("--progress", action="store_true", help=PROGRESS_HELP)

    sw = sub.add_parser("sweep", help="run a grid of runs from a TOML file into one CSV table "
                        "(see docs/sweeps.md); finished points are kept and not rerun")
    sw.add_argument("config", metavar="CONFIG", help="sweep file: [base], [grid], [[points]]")
    sw.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="local process pool (default) or Ray (pip install 'batchlab[ray]')")
    sw.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    sw.add_argument("--processes", type=int, help="worker processes, or CPUs of a local Ray "
                    "instance (default: one per CPU; 1 runs in this process)")
    sw.add_argument("--out", metavar="DIR", help="results.csv and points/ go here (default: "
                    "<config name>-results in the current directory)")
    sw.add_argument("--progress", action="store_true", help=PROGRESS_HELP)
    cap = sub.add_parser("capacity", help="the highest request rate a deployment serves within "
                         "an SLO (TTFT p99 and ITL p99 by default), and its $ per million "
                         "output tokens there")
    cap.add_argument("--policy", default=DEFAULT_POLICY, help="policy name")
    cap.add_argument("--set", dest="params", action="append", type=_key_value, default=[],
                     metavar="KEY=VALUE", help="a policy parameter; repeat for several")
    for flag in ("model", "gpu", "prompt", "output"):
        cap.add_argument(f"--{flag}", help=f"as for `batchlab run --{flag}`")
    for flag in ("gpus", "tp", "ep", "pp", "dp", "devices", "seed"):
        cap.add_argument(f"--{flag}", type=int, help=f"as for `batchlab run --{flag}`")
    cap.add_argument("--price", type=_finite(float), help="USD per GPU-hour")
    cap.add_argument("--slo", help="limits on summary keys, e.g. ttft_p99_s=2,itl_p99_s=0.1 "
                     "(the default); itl_* falls back to tpot_* where the summary has no ITL")
    cap.add_argument("--tol", type=_finite(float), default=0.05, help="relative width of the "
                     "final bracket (0.05)")
    cap.add_argument("--duration", type=_finite(float), default=20.0, help="seconds of "
                     "traffic per probe (20)")
    cap.add_argument("--start", type=_finite(float), default=4.0, help="first rate probed, "
                     "req/s (4)")
    cap.add_argument("--json", action="store_true", help="print the result as JSON")
    return ap
