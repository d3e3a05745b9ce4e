"""Multi-step plans: a stretch of decode steps advanced in one go gives the same records as
the same steps planned one at a time, for every built-in policy that opts in."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchlab
from batchlab import AffineDevice, Batch, simulate
from batchlab.core import ConfigError, KVBlockManager, PolicyError, RequestTable
from batchlab.core.validate import check_batch
from batchlab.costmodel import make_devices
from batchlab.engines.faults import Faults
from batchlab.policies.continuous import ContinuousBatching
from batchlab.policies.discovery import available_policies, load_policy
from batchlab.workloads import Workload

# Built-in policies that plan multi-step batches: those with a max_num_steps parameter.
OPTED_IN = sorted(info.name for info in available_policies(include_broken=False)
                  if any(f.name == "max_num_steps" for f in attrs.fields(type(load_policy(
                      info.name)))) if attrs.has(type(load_policy(info.name))))
_COST_MODEL = make_devices("llama-3-8b", "h100", 2, dp=2)


class RunOnly:
    """A device with `run` only: the engine must price a stretch step by step."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.kv_capacity_tokens = inner.kv_capacity_tokens

    def run(self, batch):
        return self.inner.run(batch)


def test_continuous_opts_in():
    assert "continuous" in OPTED_IN


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 40))
    closed = draw(st.booleans()) and n > 1
    prompt = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    output = draw(st.lists(st.integers(1, 120), min_size=n, max_size=n))
    if closed:
        users = draw(st.integers(1, 4))
        arrival = np.full(n, np.nan)
        user = np.arange(n) % users
        arrival[:users] = 0.0
        think = np.array(draw(st.lists(st.floats(0, 0.5), min_size=n, max_size=n)))
        wl = Workload(arrival, prompt, output, user=user, think=think)
    else:
        gaps = draw(st.lists(st.floats(0, 0.4), min_size=n, max_size=n))
        prio = np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
        wl = Workload(np.cumsum(gaps), prompt, output, priority=prio)
    kind = draw(st.sampled_from(["affine", "affine", "cost-model", "run-only"]))
    num = draw(st.integers(1, 3))
    if kind == "cost-model":
        devices = _COST_MODEL[:min(num, 2)]
    else:
        # Small memories force preemptions; a zero fixed cost makes ties in time likely.
        cap = draw(st.sampled_from([600, 1500, 5000, 100_000]))
        devices = [AffineDevice(name=f"dev{i}", fixed=draw(st.sampled_from([0.0, 0.01, 0.003])),
                                per_token=draw(st.sampled_from([0.0, 1e-4])),
                                per_context_token=draw(st.sampled_from([0.0, 3e-7, 1e-5])),
                                kv_capacity_tokens=cap) for i in range(num)]
        if kind == "run-only":
            devices = [RunOnly(d) for d in devices]
    params = dict(max_num_seqs=draw(st.integers(1, 24)),
                  max_num_batched_tokens=draw(st.sampled_from([16, 64, 512, 4096])),
                  chunked_prefill=draw(st.booleans()),
                  order=draw(st.sampled_from(["fcfs", "priority"])),
                  block_size=draw(st.sampled_from([1, 4, 16])))
    return wl, devices, params


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.names is None:
        return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return all(_same(a[f], b[f]) for f in a.dtype.names)


@attrs.define
class AheadEverywhere(ContinuousBatching):
    """Continuous batching planning ahead on several devices too (it does on one only, for
    speed), so that concurrent stretches, cut by each other's steps, are checked as well."""

    def may_plan_ahead(self) -> bool:
        return True


def _policy(name, **params):
    if name == "continuous-everywhere":
        return AheadEverywhere(**params)
    return load_policy(name, **params)


@pytest.mark.parametrize("name", OPTED_IN + ["continuous-everywhere"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=scenarios(), max_steps=st.sampled_from([2, 5, 64]))
def test_multi_step_records_equal_single_step(name, case, max_steps):
    wl, devices, params = case
    if not name.startswith("continuous"):
        params = {}
    one = simulate(_policy(name, max_num_steps=1, **params), wl, devices, seed=1)
    policy = _policy(name, max_num_steps=max_steps, **params)
    many = simulate(policy, wl, devices, seed=1)
    policy.check_valid()
    assert _same(one.records, many.records)
    assert _same(one.devices, many.devices)  # the same sums, added in the same order
    for key in ("itl_p50_s", "itl_p90_s", "itl_p99_s"):
        assert _same(np.array(one.summary()[key]), np.array(many.summary()[key]))
    assert one.itl.num_gaps == many.itl.num_gaps
    assert many.num_events <= one.num_events


def test_stretches_cut_events_on_a_decode_heavy_run():
    wl = Workload(np.arange(20) * 2.0, np.full(20, 100), np.full(20, 400))
    one = simulate(load_policy("continuous", max_num_steps=1), wl, [AffineDevice()])
    many = simulate(load_policy("continuous"), wl, [AffineDevice()])
    assert _same(one.records, many.records)
    steps = int(one.devices["steps"][0])
    assert steps == int(many.devices["steps"][0]) >= 400
    assert many.num_events < steps / 10 < one.num_events


class _Counting(AffineDevice):
    """Logs what the engine asks of it: ("run", batch.num_steps) or ("run_steps", n)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        object.__setattr__(self, "calls", [])

    def run(self, batch):
        self.calls.append(("run", batch.num_steps))
        return super().run(batch)

    def run_steps(self, batch, num_steps):
        self.calls.append(("run_steps", num_steps))
        return super().run_steps(batch, num_steps)


def test_faults_run_every_batch_one_step():
    """With faults a multi-step plan still runs one step per launch (a failure may strike
    any step): the device is only ever asked for single steps, one per step or failure,
    and the run is the one that plans single steps, bit for bit."""
    wl = Workload(np.arange(10) * 0.1, np.full(10, 50), np.full(10, 60))
    faults = Faults(failure_rate=0.01, repair_time=0.1)
    dev = _Counting()
    r = simulate(load_policy("continuous"), wl, [dev], faults=faults, seed=2)
    s = r.summary()
    assert s["num_finished"] == 10 and s["failures"] > 0
    assert ("run", 64) in dev.calls                    # the policy did plan stretches
    assert {kind for kind, _ in dev.calls} == {"run"}  # never priced as a stretch
    assert len(dev.calls) == int(r.devices["steps"].sum()) + s["failures"]
    one = simulate(load_policy("continuous", max_num_steps=1), wl, [AffineDevice()],
                   faults=faults, seed=2)
    assert _same(one.records, r.records) and _same(one.devices, r.devices)


def test_failing_run_stops_with_a_clear_message():
    wl = Workload([0.0], [10], [5])
    with pytest.raises(batchlab.ConfigError, match="no progress.*failure_rate"):
        simulate(load_policy("continuous"), wl, [AffineDevice()], seed=0,
                 faults=Faults(failure_rate=0.999999, repair_time=1e-3))


def _table(prompt, generated):
    t = RequestTable.for_requests(prompt, np.full(len(prompt), 1000))
    t.status[:] = 1
    t.generated[:] = generated
    t.cached[:] = np.asarray(prompt) + np.asarray(generated) - 1
    t.home[:] = 0
    return t


def test_validator_names_a_bad_multi_step_batch():
    table, dev = _table([10, 20], [3, 1]), AffineDevice()
    good = Batch.decode([0, 1], [12, 20], num_steps=8)
    check_batch(good, dev, 0, table, "p")
    behind = Batch.decode([0, 1], [11, 20], num_steps=8)  # row 0 would not emit
    table.cached[0] = 11
    with pytest.raises(PolicyError, match="multi-step"):
        check_batch(behind, dev, 0, table, "p")
    table.cached[0] = 12
    prefill = Batch([0, 1], [1, 2], [12, 0], num_steps=2)  # row 1 recomputes
    with pytest.raises(PolicyError, match="multi-step"):
        check_batch(prefill, dev, 0, table, "p")
    small = AffineDevice(kv_capacity_tokens=40)
    with pytest.raises(PolicyError, match="memory"):  # 34 tokens now, 42 at step 5
        check_batch(Batch.decode([0, 1], [12, 20], num_steps=5), small, 0, table, "p")
    check_batch(Batch.decode([0, 1], [12, 20], num_steps=4), small, 0, table, "p")


@given(tokens=st.lists(st.integers(0, 100), min_size=1, max_size=8),
       blocks=st.integers(0, 80), block_size=st.integers(1, 16), steps=st.integers(1, 40))
def test_kv_steps_fit_is_the_most_that_can_grow(tokens, blocks, block_size, steps):
    kv = KVBlockManager(blocks, block_size)
    ids = np.arange(len(tokens))
    tokens = np.array(tokens)
    if not kv.can_grow(ids, tokens):
        return
    kv.grow(ids, tokens)
    k = kv.num_steps_fit(ids, tokens, steps)
    assert 0 <= k <= steps
    assert kv.can_grow(ids, tokens + k)
    assert k == steps or not kv.can_grow(ids, tokens + k + 1)
    free = kv.num_free_blocks
    kv.grow(ids, tokens + k)
    kv.trim(ids, tokens)
    assert kv.num_free_blocks == free
    kv.check_valid()


def test_probes_back_off_while_requests_wait():
    """Below PAYS_OFF the policy plans ahead one time in PROBE_EVERY; while requests wait
    (a stretch then ends at the first finish), each multi-step batch that ran one step
    doubles the wait, up to PROBE_MOST; one that ran on brings it back to PROBE_EVERY."""
    from batchlab.policies.plan_ahead import PROBE_EVERY, PROBE_MOST, PlanAheadGauge
    gauge = PlanAheadGauge()
    for _ in range(20):
        gauge.book(False)  # the average falls well below PAYS_OFF

    def probes(plans, waiting):
        return sum(gauge.worth(waiting) for _ in range(plans))

    assert probes(32 * PROBE_EVERY, False) == 32  # nobody waits: the back-off does not apply
    assert probes(2 * PROBE_MOST, True) == 2  # somebody waits
    gauge.book(True)
    assert probes(8 * PROBE_EVERY, True) == 8


def test_continuous_forgets_what_it_no_longer_needs():
    """Finished and aborted requests leave no sort key behind (memory would grow forever)."""
    wl = Workload(np.arange(50) * 0.01, np.full(50, 30), np.full(50, 5))
    policy = load_policy("continuous")
    simulate(policy, wl, [AffineDevice()])
    assert not policy._requests and not policy._where


def test_table_registers_one_at_a_time_in_amortised_constant_time():
    table = RequestTable()
    for i in range(1000):
        assert table.register([i + 1], [2]).tolist() == [i]
    assert table.size == 1000 and len(table.prompt) < 2100
    assert table.prompt[:1000].tolist() == list(range(1, 1001))
    assert np.isnan(table.arrival[:1000]).all() and (table.home[:1000] == -1).all()
    assert table.records().size == 1000


def test_stretches_run_past_finishes_and_start_with_the_prefill():
    """Ten prompts at once, outputs 10..100 tokens: the admitting step leads a stretch, and
    rows leave it as they finish (nobody waits), so a handful of events do the 100 steps."""
    n = 10
    wl = Workload(np.zeros(n), np.full(n, 50), (np.arange(n) + 1) * 10)
    one = simulate(load_policy("continuous", max_num_steps=1), wl, [AffineDevice()])
    policy = load_policy("continuous")
    many = simulate(policy, wl, [AffineDevice()])
    policy.check_valid()
    assert _same(one.records, many.records) and _same(one.devices, many.devices)
    assert int(one.devices["steps"][0]) == int(many.devices["steps"][0]) == 100
    assert one.num_events == n + 100
    assert many.num_events <= n + 3  # the arrivals, then ceil(100 / 64) stretches
    assert (many.records["finish"][:-1] < many.records["finish"][1:]).all()


def test_a_finish_that_sends_a_follow_up_still_ends_the_stretch():
    """Closed loop: a user's next request arrives when the last one ends, so a stretch may
    not run past that finish."""
    wl = Workload(np.array([0.0, 0.0, np.nan]), [20, 20, 20], [5, 200, 5],
                  user=np.array([0, 1, 0]), think=np.zeros(3))
    one = simulate(load_policy("continuous", max_num_steps=1), wl, [AffineDevice()])
    many = simulate(load_policy("continuous"), wl, [AffineDevice()])
    assert _same(one.records, many.records)
    assert many.records["first_token"][2] < many.records["finish"][1]  # it joined the run


def test_validator_takes_a_multi_step_batch_led_by_a_completing_prefill():
    table, dev = _table([10, 20], [3, 0]), AffineDevice()
    table.cached[1] = 0  # request 1 has its whole prompt to feed
    check_batch(Batch([0, 1], [1, 20], [12, 0], num_steps=4, drop_finished=True),
                dev, 0, table, "p")
    with pytest.raises(PolicyError, match="multi-step"):  # a chunk short of the prompt
        check_batch(Batch([0, 1], [1, 19], [12, 0], num_steps=4), dev, 0, table, "p")
    small = AffineDevice(kv_capacity_tokens=40)  # 33 tokens after step 1, 39 after step 4
    check_batch(Batch([0, 1], [1, 20], [12, 0], num_steps=4), small, 0, table, "p")
    with pytest.raises(PolicyError, match="memory"):
        check_batch(Batch([0, 1], [1, 20], [12, 0], num_steps=5), small, 0, table, "p")


def test_cost_model_prices_a_step_alike_alone_or_among_others():
    """The decode fast path is element-wise over steps: a step's price does not depend on
    the steps priced with it (the simulator's records rely on it)."""
    device = _COST_MODEL[0]
    rows = np.array([7, 7, 5, 5, 2, 1])
    context = np.array([900, 907, 600, 605, 300, 151])
    together = device.price_decodes(rows, context, 1)
    for i in range(rows.size):
        alone = device.price_decodes(rows[i:i + 1], context[i:i + 1], 1)
        assert np.array_equal(alone[0], together[0][i:i + 1])
        assert np.array_equal(alone[1], together[1][i:i + 1])
        batch = Batch.decode(np.arange(rows[i]), np.r_[np.zeros(rows[i] - 1, int),
                                                        context[i] - rows[i]])
        assert device.run(batch).duration == together[0][i]


@given(tokens=st.lists(st.integers(0, 100), min_size=1, max_size=8),
       blocks=st.integers(0, 80), block_size=st.integers(1, 16), steps=st.integers(0, 40))
def test_kv_reserve_steps_is_steps_fit_then_grow(tokens, blocks, block_size, steps):
    ids, tokens = np.arange(len(tokens)), np.array(tokens)
    one, other = KVBlockManager(blocks, block_size), KVBlockManager(blocks, block_size)
    if not one.can_grow(ids, tokens):
        return
    for kv in (one, other):
        kv.grow(ids, tokens)
    k = one.num_steps_fit(ids, tokens, steps)
    one.grow(ids, tokens + k)
    assert other.reserve_steps(ids, tokens, steps) == k
    assert other.num_free_blocks == one.num_free_blocks
    assert np.array_equal(other.num_held(ids), one.num_held(ids))
    other.check_valid()


def test_validator_names_the_row_and_the_step_it_means():
    table, dev = _table([10, 20], [3, 1]), AffineDevice()
    table.cached[0] = 11
    with pytest.raises(PolicyError, match="request 0 feeds up to token 12 of the 13"):
        check_batch(Batch([0, 1], [1, 1], [11, 20], num_steps=8), dev, 0, table, "p")
    table.cached[0] = 12
    with pytest.raises(PolicyError, match="drop_finished=.* is not true or false"):
        check_batch(Batch.decode([0, 1], [12, 20], num_steps=8, drop_finished=np.ones(2)),
                    dev, 0, table, "p")
    small = AffineDevice(kv_capacity_tokens=40)
    with pytest.raises(PolicyError, match=r"at its last step \(num_steps=5\)"):
        check_batch(Batch.decode([0, 1], [12, 20], num_steps=5), small, 0, table, "p")


def test_continuous_plans_one_step_when_a_prompt_gets_a_one_token_chunk():
    """A running prompt can get a single leftover budget token, which does not finish it, so
    that step emits nothing for it: the policy must not plan a stretch around it."""
    n = 16
    wl = Workload(np.zeros(n), [1] * 15 + [100], [50] * n)
    runs = [batchlab.simulate(load_policy("continuous", max_num_batched_tokens=16,
                                          max_num_seqs=16, max_num_steps=k),
                              wl, [AffineDevice()]) for k in (1, 64)]
    assert np.array_equal(runs[0].records, runs[1].records)


class _Sloppy(AffineDevice):
    """Prices three steps more than it is asked for."""

    def price_decodes(self, rows, context, micro_batches):
        return None  # so the engine asks run_steps

    def run_steps(self, batch, num_steps):
        return super().run_steps(batch, num_steps + 3)


def test_a_device_that_prices_the_wrong_number_of_steps_is_named():
    wl = Workload(np.zeros(1), [10], [40])
    with pytest.raises(ConfigError, match="run_steps was asked for .* steps and returned"):
        batchlab.simulate(load_policy("continuous"), wl, [_Sloppy(name="sloppy")])


@given(rows=st.lists(st.tuples(st.integers(1, 50), st.integers(0, 5), st.integers(0, 3),
                               st.integers(0, 60), st.integers(1, 8)),
                     min_size=1, max_size=10))
def test_table_complete_books_each_row_as_a_reference_loop_does(rows):
    """RequestTable.complete takes a shortcut when every row emits (most steps); with a row
    that does not (a prompt chunk short of the end, a recompute catching up) it masks. Both
    against a plain loop over the rows: tokens, first/last token, max TBT, gaps, finishes."""
    prompt = [p for p, _, _, _, _ in rows]
    table = RequestTable.for_requests(prompt, [g + o for _, g, _, _, o in rows])
    new, cached, ref = [], [], []
    for i, (p, g, behind, extra, _) in enumerate(rows):
        table.status[i], table.generated[i], table.home[i] = 1, g, 0
        known = p + g  # prompt + generated: a row may feed up to here, or stop short
        table.cached[i] = c = max(0, known - 1 - extra) if g else max(0, p - 1 - extra)
        table.last_token[i] = 0.5 + i if g else np.nan
        n = max(1, known - c - behind)
        new.append(n)
        cached.append(c)
    before = {f: getattr(table, f).copy() for f in ("generated", "last_token", "max_tbt")}
    emitted, finished, generated = table.complete(Batch(np.arange(len(rows)), new, cached), 9.0)
    gaps = []
    for i, (p, g, _, _, o) in enumerate(rows):
        emits = cached[i] + new[i] - p + 1 > g
        assert emitted[i] == emits and generated[i] == g + emits
        assert table.generated[i] == g + emits and finished[i] == (g + emits >= g + o)
        if emits and g:
            gaps.append(9.0 - before["last_token"][i])
            assert table.max_tbt[i] == gaps[-1] and table.last_token[i] == 9.0
        elif emits:
            assert table.first_token[i] == 9.0 and np.isnan(table.max_tbt[i])
        else:
            assert table.last_token[i] == before["last_token"][i] or g == 0
    assert table.itl.num_gaps == len(gaps) and table.itl.total == sum(gaps)


@given(left=st.lists(st.integers(1, 12), min_size=1, max_size=10), j=st.integers(2, 12))
def test_table_complete_steps_counts_step_rows_as_the_stretch_does(left, j):
    """complete_steps takes the rows in each step from the simulator's stretch where it has
    counted them (a drop_finished batch whose rows leave), else counts them itself: the same
    gaps and records either way."""
    from batchlab.engines.stretch import Stretch
    n = len(left)
    left = np.array(left, dtype=np.int64)
    batch = Batch.decode(np.arange(n), np.full(n, 10), num_steps=64, drop_finished=True)
    stretch = Stretch(batch, AffineDevice(fixed=1.0), 0.0, left)
    stretch.settle(np.inf)
    j = min(j, stretch.num_run)
    row_steps, ends = np.minimum(left, j), np.cumsum(np.linspace(1.0, 2.0, j))
    if not (row_steps < j).any():
        return  # every row ran every step: no counts taken
    stretch.num_run = j
    counted = stretch.step_totals()[0]
    tables = [_table([10] * n, [1] * n) for _ in range(2)]
    for t in tables:
        t.output[:n] = 1 + left
        t.last_token[:n] = 0.5
    a = tables[0].complete_steps(batch, ends, row_steps)
    b = tables[1].complete_steps(batch, ends, row_steps, counted)
    assert all((x == y).all() for x, y in zip(a, b))
    assert tables[0].itl.num_gaps == tables[1].itl.num_gaps
    assert tables[0].itl.total == tables[1].itl.total
    assert (tables[0].itl.counts == tables[1].itl.counts).all()
    ra, rb = tables[0].records(), tables[1].records()
    assert all(np.array_equal(ra[f], rb[f], equal_nan=ra[f].dtype.kind == "f")
               for f in ra.dtype.names)


@pytest.mark.parametrize("hint", [None, 1e-9, 1e-3, 1.0, 1e300])
def test_a_stretch_prices_the_same_steps_whatever_its_step_hint(hint):
    """The hint only says how many steps to price from totals at first (too few: the rest
    are priced next); the steps run, their ends and costs are the same bits either way."""
    from batchlab.engines.stretch import Stretch
    device = _COST_MODEL[0]
    left = np.array([3, 40, 9, 64, 25], dtype=np.int64)
    batch = Batch(np.arange(5), [1, 1, 1, 1, 300], [100, 2000, 50, 700, 0], num_steps=64,
                  drop_finished=True)
    plain = Stretch(batch, device, 1.0, left)
    plain.settle(np.inf)
    for horizon in (1.05, 1.3, np.inf):
        hinted = Stretch(batch, device, 1.0, left, step_hint=hint)
        want = Stretch(batch, device, 1.0, left)
        assert hinted.settle(horizon) == want.settle(horizon)
        for a, b in ((hinted.ends, want.ends), (hinted.durations, want.durations),
                     (hinted.costs, want.costs)):
            assert np.array_equal(np.asarray(a), np.asarray(b))
        assert np.array_equal(np.asarray(want.ends), plain.ends[:want.num_run])
