"""Shared fixtures and small helpers for the test suite."""

from __future__ import annotations

import os

import attrs
import numpy as np
from hypothesis import HealthCheck, settings

from batchlab.core import Plan
from batchlab.workloads import Workload

# CI runs the default profile; HYPOTHESIS_PROFILE=long searches harder locally.
settings.register_profile("default", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def open_workload(arrival, prompt, output, **kw) -> Workload:
    return Workload(np.asarray(arrival, float), prompt, output, **kw)


@attrs.define
class Scripted:
    """A policy that plays back a list of functions, one per schedule() call.

    Each function receives (now, devices, added requests) and returns a Plan. Calls are logged.
    """

    script: list
    name: str = "scripted"
    added: list = attrs.field(factory=list)
    log: list = attrs.field(factory=list)
    updates: list = attrs.field(factory=list)

    def add(self, request, now):
        self.added.append(request)
        self.log.append(("add", now, request.id))

    def schedule(self, now, devices):
        self.log.append(("schedule", now, tuple(d.name for d in devices)))
        if not self.script:
            return Plan()
        return self.script.pop(0)(now, devices, self.added)

    def update(self, batch, result, now):
        self.log.append(("update", now, tuple(batch.request_ids.tolist())))
        self.updates.append((batch, result, now))

    def abort(self, request_id):
        self.log.append(("abort", request_id))
