"""`batchlab bench`: replay a batchlab workload against any OpenAI-compatible server.

    batchlab bench --endpoint http://127.0.0.1:8000 --requests 100 --rate 4 \\
        --prompt uniform:16:128 --output uniform:8:64 [--simulate continuous] [--save F.json]

Each request of the workload (sampled with the seed, or read from a trace) is sent at its
arrival time (closed loop: its user's previous request's end plus think time) as a streaming
`/v1/completions` call with the prompt as token ids and `max_tokens` set to its output
length (`ignore_eos`, so a server that honours it produces exactly that many). Times are
taken on arrival of each server-sent event, and the run lands in the same `Result` a
simulation returns: TTFT, TPOT, e2e, worst stall per request; inter-token latencies (ITL:
the gaps between consecutive token events, over all requests) are kept beside it in
`BenchRun.itl`, since per-request records hold no per-token times.

Failures are counted once each and never lost: a request that cannot connect, whose stream
ends before `data: [DONE]`, breaks off, or carries a malformed event is recorded as aborted
with what it received, and named in `BenchRun.failures`. An endpoint that cannot be reached
at all is one error before anything is sent.

`--simulate POLICY` also runs the simulator on the same workload with an affine device
(`--affine FIXED,PER_TOKEN,PER_CONTEXT`, seconds) and prints both side by side with the
relative error.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from urllib.parse import urlsplit

import attrs
import numpy as np

from ..core import limits
from ..core.errors import BatchlabError, ConfigError
from ..core.table import ABORTED, FINISHED, RequestTable
from ..engines.result import Result, device_table

__all__ = ["BenchRun", "bench", "compare_table", "run_bench"]


@attrs.frozen(eq=False)
class BenchRun:
    result: Result
    itl: np.ndarray          # seconds between consecutive token events, all requests
    failures: list           # one line per failed request

    def summary(self) -> dict:
        out = self.result.summary()
        gaps = self.itl[np.isfinite(self.itl)]
        for label, q in (("mean", None), ("p50", 50), ("p90", 90), ("p99", 99)):
            out[f"itl_{label}_s"] = (math.nan if gaps.size == 0 else
                                     float(gaps.mean() if q is None else np.percentile(gaps, q)))
        out["num_failed"] = len(self.failures)
        return out


@attrs.frozen
class _Endpoint:
    name: str
    kv_capacity_tokens: int = 0


class _Failed(Exception):
    pass


def completions_url(endpoint: str) -> tuple[str, str]:
    """(base URL ending in /v1, completions URL) for an endpoint given with or without /v1."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--endpoint must be an http(s) URL such as http://127.0.0.1:8000, "
                          f"got {endpoint!r}")
    base = endpoint.rstrip("/")
    if base.endswith("/v1/completions"):
        base = base[:-len("/completions")]
    elif not base.endswith("/v1"):
        base += "/v1"
    return base, base + "/completions"


async def _served_model(client, base: str) -> str:
    import httpx
    try:
        resp = await client.get(base + "/models")
    except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as exc:
        # Connected, but no answer within the per-request timeout: the server is up.
        raise ConfigError(f"{base}/models did not answer in time ({type(exc).__name__}); "
                          "the server is up but slow: raise the timeout (--timeout "
                          "seconds)") from None
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach {base}/models ({type(exc).__name__}: {exc}); is the "
                          "server running at that address?") from None
    try:
        return resp.json()["data"][0]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ConfigError(f"{base}/models answered {resp.status_code} without a model list; "
                          "is this an OpenAI-compatible server?") from None


async def _one(client, url: str, model: str, i: int, prompt: list, max_tokens: int, clock,
               table: RequestTable, gaps: list) -> None:
    """Send request i and book what came back in `table`; raise _Failed with one line."""
    import httpx
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True, "temperature": 0.0,
            "return_token_ids": True}
    table.arrive(i, clock())
    count, last, done, usage = 0, math.nan, False, None
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:200]
                raise _Failed(f"HTTP {resp.status_code}: {text}")
            async for line in resp.aiter_lines():
                if not line or line.startswith(":"):
                    continue
                if done:
                    raise _Failed(f"data after [DONE]: {line[:80]!r}")
                if not line.startswith("data:"):
                    if line.split(":", 1)[0] in ("event", "id", "retry"):
                        continue
                    raise _Failed(f"malformed server-sent event line {line[:80]!r}")
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    continue
                try:
                    event = json.loads(data)
                    choices = event.get("choices") or []
                except (ValueError, AttributeError):
                    raise _Failed(f"malformed event data {data[:80]!r}") from None
                if "error" in event:
                    raise _Failed(f"server error: {str(event['error'])[:160]}")
                usage = event.get("usage") or usage
                if not choices:
                    continue
                choice = choices[0]
                ids = choice.get("token_ids")
                n = len(ids) if isinstance(ids, list) else int(bool(choice.get("text")))
                if n:
                    now = clock()
                    if count == 0:
                        table.first_token[i] = now
                    else:
                        gaps.append(now - last)
                        table.max_tbt[i] = np.fmax(table.max_tbt[i], now - last)
                    count, last = count + n, now
    except httpx.HTTPError as exc:
        raise _Failed(f"{type(exc).__name__} after {count} tokens: {exc}"[:200]) from None
    finally:
        table.generated[i] = count
    if not done:
        raise _Failed(f"stream ended before [DONE] after {count} tokens")
    if usage and usage.get("completion_tokens") not in (None, count):
        raise _Failed(f"usage says {usage.get('completion_tokens')} tokens, {count} arrived")
    table.finish[i] = clock()
    table.status[i] = FINISHED
    table.num_finished += 1
    table.num_closed += 1


async def run_bench(endpoint: str, workload, *, seed: int = 0, model: str | None = None,
                    vocab: int = 1000, timeout: float = 600.0,
                    max_concurrency: int | None = None) -> BenchRun:
    """Replay `workload` (a Workload or WorkloadSpec) against `endpoint`; see the module."""
    import httpx
    base, url = completions_url(endpoint)
    # Checked here, before anything is sent: a negative cap would make the semaphore below
    # block for ever, and a timeout of 0 fails every request as if the server were down.
    if max_concurrency is not None:
        limits.check_count(max_concurrency, "max_concurrency")
    limits.check_seconds(timeout, "timeout", positive=True)
    wl = workload.sample(np.random.default_rng(seed))
    n = wl.num_requests
    if vocab < 2:
        raise ConfigError(f"vocab must be >= 2, got {vocab}")
    rng = np.random.default_rng([seed, 15])
    prompts = [rng.integers(1, vocab, int(p)).tolist() for p in wl.prompt_tokens]
    caps = wl.output_tokens.tolist()
    table = RequestTable.for_requests(wl.prompt_tokens, wl.output_tokens)
    gaps: list[float] = []
    failures: list[str] = []
    pool = httpx.Limits(max_connections=max_concurrency or max(n, 1), max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0),
                                 limits=pool, trust_env=False) as client:
        model = model or await _served_model(client, base)
        gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        start = time.perf_counter()
        clock = lambda: time.perf_counter() - start

        async def send(i: int) -> None:
            async def go():
                try:
                    await _one(client, url, model, i, prompts[i], caps[i], clock, table, gaps)
                except _Failed as exc:
                    failures.append(f"request {i}: {exc}")
                    table.close(i, ABORTED, clock())
            if gate is None:
                await go()
            else:
                async with gate:
                    await go()

        async def open_loop(ids):
            tasks = []
            for i in ids:
                await asyncio.sleep(max(0.0, float(wl.arrival[i]) - clock()))
                tasks.append(asyncio.create_task(send(i)))
            await asyncio.gather(*tasks)

        async def user(ids):
            for i in ids:
                await asyncio.sleep(float(wl.think[i]))
                await send(i)

        closed = np.isnan(wl.arrival)
        jobs = [open_loop(np.flatnonzero(~closed).tolist())]
        if closed.any():
            for u in np.unique(wl.user[closed]):
                jobs.append(user(np.flatnonzero(closed & (wl.user == u)).tolist()))
        await asyncio.gather(*jobs)
        wall = clock()
    devices = device_table([_Endpoint(urlsplit(base).netloc)])
    devices[0]["output_tokens"] = int(table.generated.sum())
    result = Result(table.records(), devices, policy=f"measured@{urlsplit(base).netloc}",
                    workload=wl.name, seed=seed, wall_time=wall, num_events=n)
    return BenchRun(result, np.array(gaps), sorted(failures, key=_request_number))


def _request_number(line: str) -> int:
    return int(line.split()[1].rstrip(":"))


def bench(endpoint: str, workload, **kw) -> BenchRun:
    """`run_bench` for code without an event loop."""
    return asyncio.run(run_bench(endpoint, workload, **kw))


METRICS = (("TTFT p50 (ms)", "ttft_p50_s", 1e3), ("TTFT p90 (ms)", "ttft_p90_s", 1e3),
           ("TPOT p50 (ms)", "tpot_p50_s", 1e3), ("TPOT p90 (ms)", "tpot_p90_s", 1e3),
           ("e2e p50 (s)", "e2e_p50_s", 1), ("e2e p90 (s)", "e2e_p90_s", 1),
           ("output tok/s", "output_tokens_per_s", 1), ("finished", "num_finished", 1))


def compare_table(rows: dict) -> str:
    """A markdown table of summaries (name -> summary dict), with the error of every row
    after the first relative to the first (the measured run)."""
    names = list(rows)
    head = ["metric"] + names + [f"error of {n}" for n in names[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key, scale in METRICS:
        values = [rows[n].get(key, math.nan) * scale for n in names]
        ref = values[0]
        errs = [f"{(v - ref) / ref * 100:+.1f}%" if ref and math.isfinite(ref)
                and math.isfinite(v) else "n/a" for v in values[1:]]
        lines.append("| " + " | ".join([label] + [f"{v:.4g}" for v in values] + errs) + " |")
    return "\n".join(lines)


def bench_main(argv, parser_class=None) -> int:
    """The `batchlab bench` command (see the module docstring); `parser_class` is the CLI's
    argparse parser, whose errors are one line like every other command's."""
    import argparse
    import sys
    from . import scenario
    ap = (parser_class or argparse.ArgumentParser)(
        prog="batchlab bench", description="Replay a workload against an OpenAI-compatible "
        "server and measure it.")
    ap.add_argument("--endpoint", required=True, help="server URL, e.g. http://127.0.0.1:8000")
    ap.add_argument("--model", help="model name to request (default: the server's first)")
    ap.add_argument("--vocab", type=int, default=1000, help="prompt token ids are drawn "
                    "from [1, VOCAB) (default 1000)")
    ap.add_argument("--max-concurrency", type=int, help="cap on requests in flight "
                    "(default: none)")
    ap.add_argument("--timeout", type=float, default=600.0, help="per request, s (600)")
    for flag, kind, default in (("--trace", str, None), ("--time-scale", float, None),
                                ("--limit", int, None), ("--arrival", str, None),
                                ("--rate", float, None), ("--cv", float, None),
                                ("--users", int, None), ("--think-time", float, None),
                                ("--requests", int, None), ("--prompt", str, None),
                                ("--output", str, None),
                                ("--max-new-tokens", int, None), ("--seed", int, 0)):
        ap.add_argument(flag, type=kind, default=default)
    ap.add_argument("--simulate", metavar="POLICY", help="also simulate POLICY on the same "
                    "workload and print both with the error")
    ap.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
                    help="a parameter of the simulated policy (with --simulate)")
    ap.add_argument("--affine", default="0.005,2e-4,1e-6", metavar="FIXED,PER_TOKEN,PER_CTX",
                    help="the simulated device's step time, s (default: `batchlab serve`'s)")
    ap.add_argument("--save", metavar="FILE.json", help="write the measured Result")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args(argv)
    try:
        params = {k.replace("-", "_"): getattr(args, k.replace("-", "_")) for k in (
            "trace", "time-scale", "limit", "arrival", "rate", "cv", "users", "think-time",
            "requests", "prompt", "output", "max-new-tokens", "seed")}
        params = {k: v for k, v in params.items() if v is not None}
        _check_options(args, params)
        params.pop("seed")
        if not params.get("trace"):  # sampled traffic: bench's own defaults, not run's
            params = {**SAMPLED_DEFAULTS, **params}
        workload = scenario.build_workload(params)
        # The simulated side is built before the measurement, so that a bad --simulate or
        # --set is found in a second, not after the whole run against the server.
        simulated = _simulated(args) if args.simulate else None
        run = bench(args.endpoint, workload, seed=args.seed, model=args.model,
                    vocab=args.vocab, timeout=args.timeout,
                    max_concurrency=args.max_concurrency)
        summary = run.summary()
        rows = {"measured": summary}
        if simulated is not None:
            from ..engines.simulator import simulate
            policy, devices = simulated
            sim = simulate(policy, workload, devices, seed=args.seed)
            rows[f"simulated {args.simulate}"] = sim.summary()
        if args.save:
            run.result.to_json(args.save)
    except (BatchlabError, OSError) as exc:
        print(f"batchlab: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    if args.json:
        from ..engines.result import _jsonable
        print(json.dumps(_jsonable(summary), indent=1))
    else:
        print(compare_table(rows))
        print(f"ITL p50 {summary['itl_p50_s'] * 1e3:.2f} ms, p90 "
              f"{summary['itl_p90_s'] * 1e3:.2f} ms over {run.itl.size} gaps")
    for line in run.failures[:5]:
        print(f"batchlab bench: failed: {line}", file=sys.stderr)
    if run.failures:
        print(f"batchlab bench: {len(run.failures)} of {summary['num_requests']} requests "
              "failed (recorded as aborted)", file=sys.stderr)
        return 1
    return 0


# Sampled traffic when no --trace is given (small requests: a quick check of a server).
SAMPLED_DEFAULTS = {"arrival": "poisson", "requests": 100, "prompt": "uniform:16:128",
                    "output": "uniform:8:64"}


def _check_options(args, params: dict) -> None:
    """The options' values, checked before anything is sent, each error naming its option."""
    from . import scenario
    ignored = scenario.conflicts(params)
    if ignored:  # a trace gives its own arrivals and lengths
        raise ConfigError(f"--trace {params['trace']} replays the trace's arrivals and "
                          f"lengths; drop {', '.join(scenario.option(k) for k in ignored)}"
                          " (--time-scale speeds it up, --limit shortens it)")
    if args.params and not args.simulate:
        raise ConfigError(f"--set {args.params[0]} sets a parameter of the simulated policy, "
                          "which runs only with --simulate POLICY; add --simulate or drop --set")
    try:
        scenario.check_params(params)
    except ConfigError as exc:  # named by the option the user typed
        raise ConfigError(scenario.as_option(str(exc))) from None
    if args.max_concurrency is not None:
        limits.check_count(args.max_concurrency, "--max-concurrency")
    limits.check_seconds(args.timeout, "--timeout", positive=True)
    limits.check_int(args.vocab, "--vocab", low=2)


def _simulated(args):
    """(policy, devices) of --simulate, --set and --affine."""
    from ..backends.affine import affine_devices
    from ..policies.discovery import load_policy
    try:
        fixed, per_token, per_ctx = (float(x) for x in args.affine.split(","))
    except ValueError:
        raise ConfigError(f"--affine must be FIXED,PER_TOKEN,PER_CTX seconds, got "
                          f"{args.affine!r}") from None
    params = limits.parse_settings(args.params)
    return load_policy(args.simulate, **params), affine_devices(
        1, fixed=fixed, per_token=per_token, per_context_token=per_ctx)


def _one_line(text) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())
