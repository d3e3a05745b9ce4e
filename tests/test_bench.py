"""`batchlab bench` (batchlab.studies.bench) against servers on loopback.

Against batchlab's own OpenAI front serving a real policy on an AffineDevice (waited out in
real time), the measured run must account for every request and token, and land close to
the simulator's prediction for the same workload, policy and device. Against a deliberately
broken server, every failure is one line, each request is counted exactly once.
"""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

import batchlab  # noqa: E402
from batchlab.engines.openai_front import create_app, running  # noqa: E402
from batchlab.engines.serving import Server  # noqa: E402
from batchlab.studies.bench import compare_table, completions_url, run_bench  # noqa: E402
from batchlab.cli import main  # noqa: E402
from batchlab.core.errors import ConfigError  # noqa: E402
from batchlab.core.table import ABORTED, FINISHED  # noqa: E402
from batchlab.workloads import make_workload  # noqa: E402

AFFINE = {"fixed": 0.004, "per_token": 5e-5, "per_context_token": 0.0}


def workload(n=16):
    return make_workload("poisson", num_requests=n, rate=40.0, prompt="uniform:4:40",
                         output="uniform:4:24")


def against_front(wl, seed=0):
    async def go():
        server = Server(batchlab.load_policy("continuous"), batchlab.affine_devices(1, **AFFINE))
        async with running(create_app(server)) as url:
            return await run_bench(url, wl, seed=seed, timeout=20)
    return asyncio.run(asyncio.wait_for(go(), 60))


def test_bench_measures_our_front_and_agrees_with_the_simulator():
    wl = workload()
    run = against_front(wl)
    concrete = wl.sample(np.random.default_rng(0))
    rec = run.result.records
    assert run.failures == []
    assert rec.size == 16 and (rec["status"] == FINISHED).all()
    assert rec["output_tokens"].tolist() == concrete.output_tokens.tolist()
    assert rec["prompt_tokens"].tolist() == concrete.prompt_tokens.tolist()
    # One gap per token after a request's first.
    assert run.itl.size == int((concrete.output_tokens - 1).sum())
    s = run.summary()
    assert 0 < s["ttft_p50_s"] < s["e2e_p50_s"] and s["itl_p50_s"] > 0
    sim = batchlab.simulate(batchlab.load_policy("continuous"), wl,
                            batchlab.affine_devices(1, **AFFINE), seed=0).summary()
    # The front waits the affine device out in real time, so measured = simulated plus HTTP,
    # thread hand-offs and whatever else the (shared, loaded) machine does: never much less,
    # and not many times more. A wrong unit (ms for s) or a lost token is far outside.
    for key in ("e2e_p50_s", "tpot_p50_s"):
        assert 0.8 < s[key] / sim[key] < 4.0, (key, s[key], sim[key])
    table = compare_table({"measured": s, "simulated": sim})
    assert "| e2e p50 (s) |" in table and "%" in table


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_is_one_line(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match="cannot reach .*/v1/models"):
        asyncio.run(run_bench(url, workload(2)))
    assert main(["bench", "--endpoint", url, "--requests", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("batchlab: error: cannot reach")
    with pytest.raises(ConfigError, match="--endpoint must be an http"):
        completions_url("127.0.0.1:8000")
    assert completions_url("http://h:1/v1/") == ("http://h:1/v1", "http://h:1/v1/completions")


def broken_app():
    """Request i (by max_tokens parity, prompt length) misbehaves in one of three ways."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def models(request):
        return JSONResponse({"data": [{"id": "m"}]})

    async def completions(request):
        body = await request.json()
        kind = len(body["prompt"]) % 3

        async def events():
            yield b'data: {"choices": [{"text": "a", "token_ids": [7]}]}\n\n'
            if kind == 0:      # drops the stream midway
                return
            if kind == 1:      # malformed SSE
                yield b"this is not an event\n\n"
                return
            yield b'data: {"choices": [{"text": "b", "token_ids": [8]}]}\n\n'
            yield b"data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/models", models),
                             Route("/v1/completions", completions, methods=["POST"])])


def test_broken_streams_fail_one_line_each_and_nothing_is_lost():
    wl = batchlab.Workload(arrival=[0.0] * 6, prompt_tokens=[3, 4, 5, 6, 7, 8],
                           output_tokens=[2] * 6)

    async def go():
        async with running(broken_app()) as url:
            return await run_bench(url, wl, timeout=10)
    run = asyncio.run(asyncio.wait_for(go(), 30))
    rec = run.result.records
    assert rec["id"].tolist() == list(range(6))
    status = dict(zip(rec["prompt_tokens"].tolist(), rec["status"].tolist()))
    # prompt % 3: 0 dropped, 1 malformed, 2 fine.
    assert status == {3: ABORTED, 4: ABORTED, 5: FINISHED, 6: ABORTED, 7: ABORTED, 8: FINISHED}
    assert len(run.failures) == 4 and all("\n" not in f for f in run.failures)
    by_prompt = {int(rec["prompt_tokens"][int(f.split()[1].rstrip(':'))]): f
                 for f in run.failures}
    assert "stream ended before [DONE] after 1 tokens" in by_prompt[3]
    assert "malformed server-sent event line 'this is not an event'" in by_prompt[4]
    assert rec["output_tokens"].tolist() == [1, 1, 2, 1, 1, 2]
    assert run.summary()["num_finished"] == 2 and run.summary()["num_aborted"] == 4
