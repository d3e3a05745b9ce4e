"""A policy that edits the StepResult arrays it is given in update (clearing `finished`, say)
hurts only its own books: every engine reads what it needs from them before the call. Before,
the simulator and run_wallclock lost a closed-loop user's next request (the run then failed
with a bare IndexError), and the serving front never ended the finished request's stream."""

from __future__ import annotations

import asyncio

import attrs
import numpy as np

import batchlab
from batchlab import affine_devices, load_policy, simulate
from batchlab.engines.serving import Server
from batchlab.engines.wallclock import run_wallclock
from batchlab.workloads import Workload


class ClearsFinished:
    """Continuous batching that zeroes `result.finished` after reading it."""

    name = "clears-finished"

    def __init__(self, **params):
        self.inner = load_policy("continuous", **params)

    def add(self, request, now):
        self.inner.add(request, now)

    def schedule(self, now, devices):
        return self.inner.schedule(now, devices)

    def update(self, batch, result, now):
        kept = attrs.evolve(result, finished=result.finished.copy())
        result.finished[:] = False
        self.inner.update(batch, kept, now)

    def abort(self, request_id):
        self.inner.abort(request_id)


def closed_loop(n=6):
    arrival = np.array([0.0, 0.0] + [np.nan] * (n - 2))
    return Workload(arrival, np.full(n, 20), np.full(n, 3), user=np.arange(n) % 2,
                    think=np.full(n, 0.01))


def test_simulate_keeps_the_follow_ups_in_both_modes():
    for steps in (1, 64):
        result = simulate(ClearsFinished(max_num_steps=steps), closed_loop(), affine_devices(1))
        assert result.summary()["num_finished"] == 6


def test_run_wallclock_keeps_the_follow_ups():
    result = run_wallclock(ClearsFinished(), closed_loop(), affine_devices(1))
    assert result.summary()["num_finished"] == 6


def test_the_serving_front_ends_the_stream():
    async def main():
        devices = batchlab.affine_devices(1, fixed=0.001, per_token=1e-5, per_context_token=0.0)
        async with Server(ClearsFinished(), devices) as server:
            stream = server.submit(4, 3)
            return await stream.collect(), stream.status

    tokens, status = asyncio.run(asyncio.wait_for(main(), 30))
    assert len(tokens) == 3 and status == "finished"
