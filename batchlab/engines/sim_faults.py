"""Fault injection in the simulator: scheduled and random failures, repairs, and what a
failure destroys (`faults.lose_device`, shared with the conformance kit).

`FaultEvents` is a mixin of `Simulator`; its methods run only when the run has `faults`, so
a run without them pays one `is None` check per launch. With faults a DONE event carries
(device, serial): a step lost to a failure leaves its DONE in the heap, and the serial says it
is stale.
"""

from __future__ import annotations

from ..core.errors import ConfigError
from .events import DONE, FAIL, PROGRESS, REPAIRED
from .faults import Faults, lose_device

# Steps that fail in a row without a token emitted anywhere: a run that cannot progress.
MAX_FAILURES_IN_ROW = 10_000


class FaultEvents:
    """Failures and repairs of the simulator's devices (see the module docstring)."""

    def _init_faults(self, faults: Faults) -> None:
        for t, name in faults.schedule:
            if name not in self.index:
                raise ConfigError(f"Faults.schedule names device {name!r}, which is not one of "
                                  f"{sorted(self.index)}")
            self._push(t, FAIL, (self.index[name], None))
        self.fault_rng = faults.rng(self.seed)
        self.launch_serial = [0] * len(self.devices)   # tells a stale DONE from a live one
        self.started = [0.0] * len(self.devices)
        self.down = [False] * len(self.devices)
        self.recomputed = [0] * len(self.devices)
        # Policies learn the cluster from the first schedule call, which must offer every
        # device: a failure scheduled before the first launch strikes at the first launch.
        self.deferred: list | None = []
        self.failures_in_row = 0  # steps lost since a token was last emitted (progress guard)
        # With faults a DONE event carries (device, serial): a step lost to a scheduled
        # failure leaves its DONE in the heap, and the serial says it is stale.
        self._complete = self._complete_if_current

    def _progressed(self, emitted) -> None:
        if self.failures_in_row and emitted.any():
            self.failures_in_row = 0

    def _launch_faulty(self, d: int, duration: float) -> None:
        self.launch_serial[d] += 1
        self.started[d] = self.now
        serial = self.launch_serial[d]
        if self.deferred:
            for event in self.deferred:
                self._push(self.now, FAIL, event)
        self.deferred = None
        if self.faults.failure_rate and self.fault_rng.random() < self.faults.failure_rate:
            self._push(self.now + self.fault_rng.random() * duration, FAIL, (d, serial))
        else:
            self._push(self.now + duration, DONE, (d, serial))

    def _complete_if_current(self, payload) -> None:
        d, serial = payload
        if serial == self.launch_serial[d] and self.running[d] is not None:
            type(self)._complete(self, d)

    def _fault_event(self, kind: int, payload) -> int:
        if kind == REPAIRED:
            self.down[payload] = False
            self.idle[payload] = True
            self.num_idle += 1
            return PROGRESS
        d, serial = payload
        if self.deferred is not None:   # nothing has launched yet
            self.deferred.append(payload)
            return 0
        if self.down[d] or (serial is not None and serial != self.launch_serial[d]):
            return 0
        running, batch = self.running[d], None
        elapsed = 0.0
        if running is not None:
            batch = running[0]
            elapsed = self.now - self.started[d]
            self.totals.add_busy(d, elapsed)   # the device was busy until it failed
        self.launch_serial[d] += 1
        self.running[d] = None
        if self.idle[d]:
            self.num_idle -= 1
        self.idle[d] = False
        self.down[d] = True
        self.stats[d]["failures"] += 1
        if running is not None:
            self.failures_in_row += 1
            if self.failures_in_row > MAX_FAILURES_IN_ROW:
                raise ConfigError(
                    f"no progress: {self.failures_in_row - 1} steps in a row failed and no "
                    f"token was emitted anywhere (Faults.failure_rate="
                    f"{self.faults.failure_rate}); lower the failure rate")
        self.recomputed[d] += lose_device(self._call, self.policy, self.table, d,
                                          self.devices[d].name, batch, self.now, self._request,
                                          elapsed=elapsed)
        self.stats[d]["recomputed_tokens"] = self.recomputed[d]
        self._push(self.now + self.faults.repair_time, REPAIRED, d)
        return PROGRESS
