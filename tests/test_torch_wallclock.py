"""The wall-clock engine without torch: it runs on any Device (here AffineDevice, whose run()
returns at once), so these tests run in CI where torch is not installed."""

from __future__ import annotations

import numpy as np
import pytest

import batchlab
from batchlab.backends.affine import AffineDevice
from batchlab.engines.wallclock import run_wallclock
from batchlab.core import Batch, Plan
from batchlab.core.errors import PolicyError
from batchlab.workloads import Workload, make_workload


class Recording(AffineDevice):
    """An AffineDevice that logs the engine's register/free calls."""

    def __init__(self, **kw):
        super().__init__(**kw)
        object.__setattr__(self, "calls", [])

    def register(self, rid, prompt):
        self.calls.append(("register", rid, prompt))

    def free(self, rid):
        self.calls.append(("free", rid))


def test_open_loop_run_finishes_and_keeps_arrival_times():
    wl = make_workload("poisson", rate=50.0, num_requests=30, prompt="uniform:4:40",
                       output="uniform:2:8").sample(np.random.default_rng(0))
    result = run_wallclock("continuous", wl, [AffineDevice()], seed=0)
    rec = result.records
    assert (rec["status"] == 2).all()
    np.testing.assert_allclose(rec["arrival"], wl.arrival)
    assert (rec["first_scheduled"] >= rec["arrival"]).all()
    assert (rec["output_tokens"] == wl.output_tokens).all()
    summary = result.summary()
    assert summary["num_finished"] == 30 and summary["output_tokens_per_s"] > 0


def test_idle_gaps_are_skipped_not_slept():
    wl = Workload([0.0, 100.0], [8, 8], [2, 2])
    result = run_wallclock("continuous", wl, [AffineDevice()])
    assert result.wall_time < 5.0            # nobody waited 100 s
    assert result.records["finish"][1] >= 100.0


def test_devices_learn_arrivals_and_finishes():
    devs = [Recording(name="a"), Recording(name="b")]
    wl = Workload([0.0, 0.0, 0.01], [5, 6, 7], [1, 2, 3])
    run_wallclock("continuous", wl, devs)
    for dev in devs:
        assert sorted(c for c in dev.calls if c[0] == "register") == [
            ("register", 0, 5), ("register", 1, 6), ("register", 2, 7)]
        assert sorted(c for c in dev.calls if c[0] == "free") == [
            ("free", 0), ("free", 1), ("free", 2)]


def test_closed_loop_follow_ups_arrive_after_their_predecessor():
    """Each user's next request arrives when its previous one finishes, plus the think time:
    the engine times it from the finish it measured, not from a schedule fixed in advance."""
    spec = make_workload("closed", users=2, think_time=0.5, num_requests=6,
                         prompt="uniform:4:20", output="uniform:1:4")
    result = run_wallclock("continuous", spec, [AffineDevice()], seed=3)
    rec = result.records
    assert (rec["status"] == 2).all()
    wl = spec.sample(np.random.default_rng(3))   # what the engine sampled: users and think
    for user in (0, 1):
        ids = np.flatnonzero(wl.user == user)
        assert rec["arrival"][ids[0]] == 0.0
        np.testing.assert_allclose(rec["arrival"][ids[1:]],
                                   rec["finish"][ids[:-1]] + wl.think[ids[1:]], rtol=0,
                                   atol=1e-9)
        assert (wl.think[ids[1:]] == 0.5).all()


def test_wake_ups_drive_windowed_policies():
    wl = Workload([0.0], [8], [3])
    result = run_wallclock(batchlab.load_policy("fixed-window", window=0.2), wl,
                           [AffineDevice()])
    assert result.records["first_scheduled"][0] >= 0.2


class Silent:
    name = "silent"

    def add(self, request, now):
        pass

    def schedule(self, now, devices):
        return Plan()

    def update(self, batch, result, now):
        pass

    def abort(self, request_id):
        pass


def test_a_policy_that_never_runs_anything_is_stopped():
    with pytest.raises(PolicyError, match="liveness"):
        run_wallclock(Silent(), Workload([0.0], [4], [2]), [AffineDevice()])


def test_a_bad_batch_names_the_policy():
    class Greedy(Silent):
        name = "greedy"

        def schedule(self, now, devices):
            return Plan({devices[0].name: Batch([0], [99], [0])})

    with pytest.raises(PolicyError, match="greedy"):
        run_wallclock(Greedy(), Workload([0.0], [4], [2]), [AffineDevice()])
