"""The kit's entry points: `check_policy`, `policy_state_machine`, `check_determinism`."""

from __future__ import annotations

import re
from collections.abc import Callable

from hypothesis import HealthCheck, Phase, settings as Settings
from hypothesis.stateful import precondition, rule, run_state_machine_as_test

from ..core.errors import PolicyError
from ..core.protocols import policy_name
from .machine import PolicyMachine
from .world import _ORACLE_SPECS, MIN_EXAMPLES, STEPS_PER_EXAMPLE


class _OracleMachine(PolicyMachine):
    """With oracle=True the true output lengths are drawn at arrival and handed over."""

    oracle = True

    @precondition(lambda self: self.table.size < self.max_requests)
    @rule(requests=_ORACLE_SPECS)
    def arrive(self, requests):
        PolicyMachine.arrive(self, requests)


def policy_state_machine(factory: Callable, *, oracle: bool = False,
                         abort_in_flight: bool = True, faults: bool = True,
                         allow_rejections: bool = False,
                         max_requests: int = 16) -> type[PolicyMachine]:
    """A `PolicyMachine` subclass for `factory` (a zero-argument callable returning a fresh
    policy: the class itself, or a lambda with parameters). Use it as
    `TestMine = policy_state_machine(MyPolicy).TestCase` to let pytest run it, or hand it to
    `hypothesis.stateful.run_state_machine_as_test`.

    oracle: fill `Request.oracle_output_tokens` (output lengths are then drawn at arrival).
    abort_in_flight: also abort requests whose batch is running (see the module docstring).
    faults: inject device failures and repairs.
    allow_rejections: the policy may reject requests that would fit (admission control);
        every request must still end.
    max_requests: requests per example.
    """
    if not callable(factory):
        raise TypeError(f"factory must be a callable returning a policy, got {factory!r}")
    # The class name says which policy a printed counterexample is about, and keeps
    # hypothesis' example database apart for different policies (its key is the name).
    label = re.sub(r"\W+", "_", policy_name(factory())).strip("_") or "policy"
    base = _OracleMachine if oracle else PolicyMachine
    return type(f"{label}_machine", (base,), {
        "factory": staticmethod(factory),
        "abort_in_flight": abort_in_flight, "faults": faults,
        "allow_rejections": allow_rejections, "max_requests": max_requests,
        "__doc__": f"The conformance state machine for {label}.",
    })


def check_policy(factory: Callable, *, max_examples: int | None = None,
                 step_count: int = STEPS_PER_EXAMPLE, settings: Settings | None = None,
                 determinism: bool = True, **machine_options) -> None:
    """Run the conformance kit on `factory` (see the module docstring); raise on a violation.

    max_examples: examples of the state machine; default: the larger of 200 and the active
        hypothesis profile's max_examples (so a longer profile searches longer).
    step_count: random steps per example before the drain.
    settings: hypothesis settings to start from (e.g. a registered profile).
    determinism: also run `check_determinism` (two simulations compared bit for bit).
    machine_options: passed to `policy_state_machine` (oracle, abort_in_flight, faults,
        allow_rejections, max_requests).
    """
    machine = policy_state_machine(factory, **machine_options)
    base = settings if settings is not None else Settings.default
    examples = max_examples if max_examples is not None else max(MIN_EXAMPLES,
                                                                base.max_examples)
    # No "explain" phase: on a state machine it costs several times the shrinking itself.
    phases = [p for p in base.phases if p is not Phase.explain]
    chosen = Settings(base, max_examples=examples, stateful_step_count=step_count,
                      phases=phases, deadline=None, report_multiple_bugs=False,
                      suppress_health_check=[
                          HealthCheck.too_slow, HealthCheck.filter_too_much,
                          HealthCheck.data_too_large])
    run_state_machine_as_test(machine, settings=chosen)
    if determinism:
        check_determinism(factory, oracle=machine_options.get("oracle", False))


def check_determinism(factory: Callable, workload=None, devices=None, *, seed: int = 0,
                      oracle: bool = False) -> None:
    """Simulate twice with fresh policies (with and without injected faults) and compare
    records and per-device totals bit for bit; raise PolicyError(rule 'determinism') if not.

    workload, devices: default to 120 requests on two small devices (memory pressure, so
    preemption and rejection paths run too).
    """
    from ..backends.affine import affine_devices
    from ..engines.faults import Faults
    from ..engines.simulator import simulate
    from ..workloads import make_workload

    if workload is None:
        workload = make_workload("poisson", rate=40.0, num_requests=120,
                                 prompt="lognormal:200:1.0:1500", output="lognormal:40:1.0:200")
    if devices is None:
        devices = affine_devices(2, kv_capacity_tokens=4096)
    for faults in (None, Faults(failure_rate=0.05, repair_time=0.05, seed=seed)):
        runs = [simulate(factory(), workload, devices, seed=seed, oracle=oracle,
                         faults=faults) for _ in range(2)]
        for what in ("records", "devices"):
            a, b = (getattr(r, what) for r in runs)
            if a.tobytes() != b.tobytes():
                raise PolicyError(runs[0].policy, "determinism",
                                  f"two runs with seed {seed}"
                                  f"{' and faults' if faults else ''} gave different {what}; "
                                  "a policy must not depend on object ids, set order of "
                                  "objects, unseeded randomness or state shared between "
                                  "instances")
