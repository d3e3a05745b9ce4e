"""Two-batch overlap's phase schedule (costmodel/overlap.py): a layer takes
max(a, d) + max(d, e) + max(e, c) + max(c, a) for both micro-batches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchlab.costmodel import Phases, two_batch_overlap

sec = st.floats(min_value=0.0, max_value=1e-2, allow_nan=False)


def _run(a, e, d, c, layers=10, rest=0.0, rest_comm=0.0, share=0.0):
    ph = Phases(num_layers=layers, attention=a, experts=e, attention_launches=0.0,
                experts_launches=0.0, dispatch=d, combine=c)
    comm = layers * (d + c) + rest_comm
    return two_batch_overlap(layers * (a + e) + rest, 0.0, 0.0, comm, ph, share), comm


def test_computation_covering_every_transfer_hides_all_but_one_layer():
    o, comm = _run(a=3.0, e=3.0, d=1.0, c=2.0)
    assert o.duration == pytest.approx(2 * 10 * 6.0 + min(60.0, comm) / 10)
    assert o.hidden == pytest.approx(2 * comm - comm / 10)


def test_communication_covering_every_phase_sets_the_step():
    o, comm = _run(a=1.0, e=1.0, d=3.0, c=4.0)
    assert o.duration == pytest.approx(2 * comm + 20.0 / 10)


def test_unequal_phases_do_worse_than_either_aggregate_bound():
    # a long attention hides a short dispatch; a long combine is not hidden by short experts
    o, comm = _run(a=3.0, e=1.0, d=1.0, c=3.0)
    assert o.duration > max(2 * 10 * 4.0, 2 * comm) + 1.0
    assert o.duration == pytest.approx(10 * (3 + 1 + 3 + 3) + 40.0 / 10)


@given(a=sec, e=sec, d=sec, c=sec, rest=sec, rest_comm=sec,
       share=st.floats(min_value=0.0, max_value=0.5))
def test_the_breakdown_adds_up_and_nothing_is_negative(a, e, d, c, rest, rest_comm, share):
    o, comm = _run(a, e, d, c, rest=rest, rest_comm=rest_comm, share=share)
    assert o.exposed >= -1e-15 and o.hidden >= -1e-15
    assert o.exposed + o.hidden == pytest.approx(2 * comm, abs=1e-12)
    assert o.compute + o.memory + o.overhead + o.exposed == pytest.approx(o.duration, abs=1e-12)
    # never better than either stream alone, never worse than running them one after another
    assert o.duration >= 2 * comm - 1e-12
    assert o.duration >= o.compute + o.memory + o.overhead - 1e-12
    slow = 1 / (1 - share) if comm > 0 else 1.0
    serial = 2 * (10 * slow * (a + e) + rest + comm)
    assert o.duration <= serial + (10 * slow * (a + e) + rest) / 10 + 1e-12
