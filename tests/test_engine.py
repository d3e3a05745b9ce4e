"""The simulator: event order, determinism, several devices, wake-ups, queueing theory."""

from __future__ import annotations

import attrs
import numpy as np
import pytest

import batchlab
from batchlab import (AffineDevice, Batch, Plan, PolicyError, affine_devices, load_policy,
                      simulate)
from batchlab.workloads import Workload

from conftest import Scripted, open_workload


def prefill_all(now, devices, added):
    """Run each added request's whole prompt on the first idle device."""
    req = added[-1]
    return Plan({devices[0].name: Batch([req.id], [req.prompt_tokens], [0])})


def test_one_request_one_step_times_are_exact():
    dev = AffineDevice(fixed=0.01, per_token=0.001, per_context_token=0.0)
    policy = Scripted([prefill_all])
    result = simulate(policy, open_workload([0.5], [10], [1]), [dev])
    rec = result.records[0]
    assert rec["arrival"] == 0.5
    assert rec["first_scheduled"] == 0.5
    assert rec["first_token"] == pytest.approx(0.52)
    assert rec["finish"] == pytest.approx(0.52)
    assert rec["output_tokens"] == 1
    # After the step the device is idle again, so the policy is asked once more.
    assert [(kind, pytest.approx(t)) for kind, t, _ in policy.log] == [
        ("add", 0.5), ("schedule", 0.5), ("update", 0.52), ("schedule", 0.52)]


def test_decode_steps_emit_one_token_each_and_finish_on_the_last():
    dev = AffineDevice(fixed=1.0, per_token=0.0, per_context_token=0.0)
    steps = [prefill_all] + [
        (lambda k: lambda now, devices, added: Plan({"dev0": Batch.decode([0], [4 + k])}))(k)
        for k in range(2)
    ]
    policy = Scripted(steps)
    result = simulate(policy, open_workload([0.0], [4], [3]), [dev])
    emitted = [r.emitted.tolist() for _, r, _ in policy.updates]
    generated = [r.num_generated.tolist() for _, r, _ in policy.updates]
    finished = [r.finished.tolist() for _, r, _ in policy.updates]
    assert emitted == [[True], [True], [True]]
    assert generated == [[1], [2], [3]]
    assert finished == [[False], [False], [True]]
    rec = result.records[0]
    assert (rec["first_token"], rec["finish"], rec["max_tbt"]) == (1.0, 3.0, 1.0)


def test_chunked_prefill_emits_only_when_the_prompt_is_complete():
    dev = AffineDevice(fixed=1.0, per_token=0.0, per_context_token=0.0)
    policy = Scripted([
        lambda now, d, a: Plan({"dev0": Batch([0], [6], [0])}),
        lambda now, d, a: Plan({"dev0": Batch([0], [4], [6])}),
    ])
    result = simulate(policy, open_workload([0.0], [10], [1]), [dev])
    assert [r.emitted.tolist() for _, r, _ in policy.updates] == [[False], [True]]
    assert result.records[0]["first_token"] == 2.0


def test_recompute_after_preemption_counts_and_reemits_nothing():
    dev = AffineDevice(fixed=1.0, per_token=0.0, per_context_token=0.0)
    policy = Scripted([
        prefill_all,                                                   # t=0..1: token 1
        lambda now, d, a: Plan({"dev0": Batch.decode([0], [3])}),      # t=1..2: token 2
        lambda now, d, a: Plan({"dev0": Batch([0], [4], [0])}),        # recompute 3 + 1 tokens
        lambda now, d, a: Plan({"dev0": Batch([0], [5], [0])}),        # recompute all: token 3
    ])
    result = simulate(policy, open_workload([0.0], [3], [3]), [dev])
    assert [r.emitted.tolist() for _, r, _ in policy.updates] == [[True], [True], [False], [True]]
    assert result.records[0]["preemptions"] == 2
    assert result.records[0]["finish"] == 4.0


def test_completions_come_before_arrivals_at_the_same_instant():
    dev = AffineDevice(fixed=1.0, per_token=0.0, per_context_token=0.0)
    policy = Scripted([prefill_all, prefill_all])
    simulate(policy, open_workload([0.0, 1.0], [4, 4], [1, 1]), [dev])
    # At t=1 the first step completes, then request 1 arrives, then one schedule call.
    assert policy.log[2:5] == [("update", 1.0, (0,)), ("add", 1.0, 1),
                               ("schedule", 1.0, ("dev0",))]


def test_several_devices_run_in_parallel():
    devs = affine_devices(2, fixed=1.0, per_token=0.0, per_context_token=0.0)

    def both(now, devices, added):
        return Plan({devices[0].name: Batch([0], [4], [0]), devices[1].name: Batch([1], [4], [0])})

    result = simulate(Scripted([both]), open_workload([0.0, 0.0], [4, 4], [1, 1]), devs)
    assert result.records["finish"].tolist() == [1.0, 1.0]
    assert result.devices["steps"].tolist() == [1, 1]
    assert result.devices["busy_time"].tolist() == [1.0, 1.0]


def test_wake_up_is_honoured_and_superseded_wakes_are_ignored():
    dev = AffineDevice(fixed=1.0, per_token=0.0, per_context_token=0.0)
    calls = []

    def wait(now, devices, added):
        calls.append(now)
        return Plan(wake_at=5.0)

    def earlier(now, devices, added):
        calls.append(now)
        return Plan(wake_at=2.0)

    def go(now, devices, added):
        calls.append(now)
        return Plan({"dev0": Batch([0, 1], [4, 4], [0, 0])})

    simulate(Scripted([wait, earlier, go]), open_workload([0.0, 1.0], [4, 4], [1, 1]), [dev])
    # t=0 asks for 5; t=1 (arrival) replaces it with 2; the stale wake at 5 never calls.
    assert calls == [0.0, 1.0, 2.0]


def test_a_ticker_that_asks_to_be_woken_after_every_request_ended_ends_the_run():
    # Before: the simulator kept waking it (a million times, ~20 s) and then failed with
    # 'liveness' although every request had finished; run_wallclock ended at once.
    class Ticker:
        name = "ticker"

        def __init__(self):
            self.inner, self.calls = load_policy("continuous"), 0

        def add(self, request, now):
            self.inner.add(request, now)

        def schedule(self, now, devices):
            self.calls += 1
            return attrs.evolve(self.inner.schedule(now, devices), wake_at=now + 1.0)

        def update(self, batch, result, now):
            self.inner.update(batch, result, now)

        def abort(self, request_id):
            self.inner.abort(request_id)

    ticker = Ticker()
    result = simulate(ticker, open_workload([0.0, 0.5], [4, 4], [3, 3]), affine_devices(1))
    assert result.summary()["num_finished"] == 2 and ticker.calls < 20


def test_a_policy_that_stalls_is_named():
    with pytest.raises(PolicyError, match="scripted.*liveness.*never finished"):
        simulate(Scripted([]), open_workload([0.0], [4], [1]), affine_devices(1))


def test_a_policy_that_raises_is_named():
    def boom(now, devices, added):
        raise KeyError("oops")

    with pytest.raises(PolicyError, match=r"'scripted' broke rule 'raised'.*KeyError"):
        simulate(Scripted([boom]), open_workload([0.0], [4], [1]), affine_devices(1))


def test_rejected_requests_are_recorded_not_lost():
    def reject(now, devices, added):
        return Plan(rejected=[added[-1].id])

    result = simulate(Scripted([reject]), open_workload([0.0], [4], [1]), affine_devices(1))
    assert result.summary()["num_rejected"] == 1
    assert np.isnan(result.records[0]["finish"])


def test_same_seed_same_records_bit_for_bit():
    rng = np.random.default_rng(7)
    n = 300
    wl = Workload(np.cumsum(rng.exponential(0.02, n)), rng.integers(10, 300, n),
                  rng.integers(1, 50, n))
    runs = [simulate(batchlab.load_policy("fixed-window", max_batch=4, window=0.01), wl,
                     affine_devices(2)) for _ in range(2)]
    assert runs[0].records.tobytes() == runs[1].records.tobytes()
    assert runs[0].devices.tobytes() == runs[1].devices.tobytes()


def test_closed_loop_user_waits_for_answer_plus_think_time():
    dev = AffineDevice(fixed=1.0, per_token=0.0, per_context_token=0.0)
    wl = Workload([0.0, np.nan, np.nan], [4, 4, 4], [1, 1, 1], user=[0, 0, 0],
                  think=[0.0, 0.5, 0.5])
    result = simulate(batchlab.load_policy("fixed-window", max_batch=1, window=0.0), wl, [dev])
    assert result.records["arrival"].tolist() == [0.0, 1.5, 3.0]
    assert result.records["finish"].tolist() == [1.0, 2.5, 4.0]


def test_md1_queue_matches_pollaczek_khinchine():
    """Single device, batch size 1, constant service time, Poisson arrivals: an M/D/1 queue,
    whose mean wait is rho / (2 mu (1 - rho)). 40,000 requests at rho = 0.7 put the sample
    mean within a few percent (batch-means standard error ~1.5%); 8% is ~5 standard errors."""
    service = 0.010
    rho = 0.7
    n = 40_000
    rng = np.random.default_rng(2024)
    arrivals = np.cumsum(rng.exponential(service / rho, n))
    wl = Workload(arrivals, np.full(n, 100), np.ones(n, int))
    dev = AffineDevice(fixed=service - 100 * 1e-5, per_token=1e-5, per_context_token=0.0)
    result = simulate(batchlab.load_policy("fixed-window", max_batch=1, window=0.0), wl, [dev])
    wait = result.latencies()["queue"]
    theory = rho / (2 * (1 / service) * (1 - rho))
    assert wait.mean() == pytest.approx(theory, rel=0.08)
    # Little's law on the same run: L = lambda W (time-average number in system).
    e2e = result.latencies()["e2e"]
    assert e2e.mean() == pytest.approx(theory + service, rel=0.08)
    assert result.summary()["busy_fraction"] == pytest.approx(rho, rel=0.03)


def test_kv_migration_moves_a_cache_and_takes_its_transfer_time():
    devs = [AffineDevice(name="prefill", fixed=1.0, per_token=0.0, per_context_token=0.0,
                         kv_transfer_per_token=0.01),
            AffineDevice(name="decode", fixed=1.0, per_token=0.0, per_context_token=0.0)]
    moved = []

    class Disagg(Scripted):
        def migrated(self, request_id, device_name, now):
            moved.append((request_id, device_name, now))

    policy = Disagg([
        lambda now, d, a: Plan({"prefill": Batch([0], [50], [0])}),      # t=0..1, token 1
        lambda now, d, a: Plan(migrations={0: "decode"}),                # t=1..1.5
        lambda now, d, a: Plan({"decode": Batch.decode([0], [50])}),     # t=1.5..2.5, token 2
    ])
    result = simulate(policy, open_workload([0.0], [50], [2]), devs)
    assert moved == [(0, "decode", 1.5)]
    assert result.records[0]["finish"] == 2.5
    assert result.devices["kv_transfers"].tolist() == [0, 1]
    assert result.devices["kv_transfer_time"].tolist() == [0.0, 0.5]
    assert result.summary()["kv_transfers"] == 1


@pytest.mark.parametrize("migrations,message", [
    ({0: "nowhere"}, "no such device"),
    ({0: "prefill"}, "already there"),
    ({5: "decode"}, "not waiting"),
])
def test_bad_migrations_are_named(migrations, message):
    devs = affine_devices(1) + [AffineDevice(name="decode")]
    devs[0] = AffineDevice(name="prefill")
    policy = Scripted([
        lambda now, d, a: Plan({"prefill": Batch([0], [50], [0])}),
        lambda now, d, a: Plan(migrations=migrations),
    ])
    with pytest.raises(PolicyError, match=message) as info:
        simulate(policy, open_workload([0.0], [50], [2]), devs)
    assert info.value.rule == "migration"


@pytest.mark.parametrize("make", [
    lambda v: np.array(v, dtype=np.int64),                 # what policies pass: copied as is
    lambda v: list(v),                                     # everything else: converted
    lambda v: np.array(v, dtype=np.int32),
    lambda v: np.array(v, dtype=np.int64).reshape(1, -1),
])
def test_batch_rows_are_fresh_read_only_int64_copies(make):
    ids, new, cached = make([3, 1, 2]), make([1, 1, 5]), make([7, 8, 0])
    batch = Batch(ids, new, cached)
    for got, given in ((batch.request_ids, ids), (batch.num_new_tokens, new),
                       (batch.num_cached_tokens, cached)):
        assert got.dtype == np.int64 and got.ndim == 1 and not got.flags.writeable
        assert got.tolist() == np.ravel(given).tolist()
        assert not np.shares_memory(got, given) if isinstance(given, np.ndarray) else True
    assert batch.num_tokens == 7 and batch.num_context_tokens == 22


def test_launch_counts_restarts_and_first_schedules_row_by_row():
    """RequestTable.launch skips building the restart mask when the cached rows add up, and
    the never-scheduled check when every row has a cache; rows of every kind at once (new,
    continuing, recomputed from 0) and batches with none of each book what the row-by-row
    rule says: a restart where the batch says 0 and the table holds tokens, a first schedule
    where there was none."""
    from batchlab.core.table import RequestTable, WAITING
    table = RequestTable.for_requests([8] * 5, [4] * 5)
    table.status[:] = WAITING
    table.cached[:] = [0, 9, 9, 0, 9]                 # 1, 2 and 4 have run before
    table.first_scheduled[:] = [np.nan, 1.0, 1.0, np.nan, 1.0]
    for ids, cached, restarts, firsts in (
            ([0, 1, 2], [0, 9, 0], [0, 0, 1], [2.0, 1.0, 1.0]),  # new, continuing, restart
            ([1, 4], [9, 9], [0, 0], [1.0, 1.0]),                # none restarts, none new
            ([1, 4], [0, 0], [1, 1], [1.0, 1.0]),                # both restart
            ([3], [0], [0], [2.0])):                             # new only
        table.launch(Batch(ids, [1] * len(ids), cached), 0, 2.0)
        assert table.preemptions[ids].tolist() == restarts, ids
        assert table.first_scheduled[ids].tolist() == firsts
        table.in_flight[:] = False
    assert table.preemptions.tolist()[:5] == [0, 1, 1, 0, 1]


def test_trusted_request_is_request_and_validates_the_rest():
    """request_of's fast Request: the same object as Request(...) for plain values, and the
    same error for anything Request's validators refuse."""
    import numpy as np
    from batchlab.core import Request
    from batchlab.core.request import trusted_request

    import attrs
    # trusted_request repeats these validators' checks: a validator or converter added to
    # Request must be added there too (or request_of go back to Request(...)).
    checked = {f.name for f in attrs.fields(Request) if f.validator or f.converter}
    assert checked == {"id", "arrival", "prompt_tokens", "max_new_tokens"}
    made = trusted_request(5, 1.5, 100, 200, 3, 7)
    assert made == Request(5, 1.5, 100, 200, 3, None, 7)
    assert hash(made) == hash(Request(5, 1.5, 100, 200, 3, None, 7))
    assert trusted_request(1, 2, 1, 1, 0, None) == Request(1, 2, 1, 1)  # an int time: Request's
    for bad in [(-1, 1.0, 1, 1), (1, float("nan"), 1, 1), (1, -0.5, 1, 1),
                (1, float("inf"), 1, 1), (1, 1.0, 0, 1), (1, 1.0, 1, 0), (True, 1.0, 1, 1),
                (np.int64(3), 1.0, 1, 1), (1, 1.0, 2.0, 1)]:
        with pytest.raises(ValueError) as fast:
            trusted_request(*bad, 0, None)
        with pytest.raises(ValueError) as plain:
            Request(*bad)
        assert str(fast.value) == str(plain.value)


@pytest.mark.parametrize("held", [1, 3, 70])
def test_device_totals_held_in_small_blocks_are_the_step_by_step_sums(monkeypatch, held):
    """Stretches' rows are held in a block summed when full (accounting.HELD_STEPS): a block
    that fills, or that a long stretch outgrows, still gives the sums of single steps, bit
    for bit, with plain steps booked between stretches."""
    from batchlab.costmodel import make_devices
    from batchlab.engines import accounting

    rng = np.random.default_rng(5)
    n = 60
    wl = Workload(np.cumsum(rng.exponential(0.3, n)), rng.integers(5, 400, n),
                  rng.integers(1, 150, n))
    devices = make_devices("llama-3-8b", "h100", 1)
    one = simulate(batchlab.load_policy("continuous", max_num_steps=1), wl, devices, seed=0)
    monkeypatch.setattr(accounting, "HELD_STEPS", held)
    many = simulate(batchlab.load_policy("continuous"), wl, devices, seed=0)
    assert many.num_events < one.num_events / 2  # stretches ran
    for field in one.devices.dtype.names:
        assert np.array_equal(one.devices[field], many.devices[field]), field


def test_the_liveness_error_names_the_first_waiting_request_or_none():
    """stalled() built its message from the first waiting request and raised IndexError
    inside the message when the open requests had not arrived (none waiting)."""
    from batchlab.core.table import RequestTable
    from batchlab.engines.contract import stalled
    table = RequestTable.for_requests([4, 4, 4], [2, 2, 2])
    table.status[1] = 1  # WAITING
    assert "(first: request 1)" in str(stalled(table, "p"))
    table.status[1] = 0  # PENDING: nothing open has arrived
    message = str(stalled(table, "p"))
    assert "broke rule 'liveness': 3 requests never finished" in message
    assert "first:" not in message
