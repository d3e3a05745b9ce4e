"""The kit's entry points: `check_policy`, `policy_state_machine`, `check_determinism`."""

from __future__ import annotations

import re
from collections.abc import Callable

from hypothesis import HealthCheck, Phase, settings as Settings
from hypothesis.errors import Flaky
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
    try:
        run_state_machine_as_test(machine, settings=chosen)
    except Flaky as exc:
        raise _flaky_as_policy_error(exc, policy_name(factory())) from exc
    if determinism:
        check_determinism(factory, oracle=machine_options.get("oracle", False))


def _flaky_as_policy_error(exc: Flaky, name: str) -> PolicyError:
    """Hypothesis replays every example; when the replay of the same steps behaves otherwise
    (a different error, no error, or different data drawn), the policy is the one thing in
    the kit that is not deterministic: say so as the `determinism` rule, naming the policy,
    instead of hypothesis' FlakyFailure / FlakyStrategyDefinition."""
    seen = []
    for inner in getattr(exc, "exceptions", ()):
        what = f"rule {inner.rule!r}" if isinstance(inner, PolicyError) else \
            type(inner).__name__
        seen.append(f"{what}: {inner}"[:200])
    first = f"; the first run failed with {seen[0]}" if seen else ""
    error = PolicyError(name, "determinism",
                        f"the same steps behaved differently when hypothesis replayed them "
                        f"({type(exc).__name__}){first}; a policy must not read a clock, "
                        "depend on object ids (id(), hash of objects), iterate sets of "
                        "objects, use unseeded randomness or share state between instances")
    for note in getattr(exc, "__notes__", []):
        error.add_note(note)
    return error


# Two string-hash seeds under which the kit's device names ('dev0', 'dev1') iterate a set in
# opposite orders (CPython 3.11-3.13), so a policy that plans devices in set order gives
# different records in the two processes.
HASH_SEEDS = ("1", "2")


def check_determinism(factory: Callable, workload=None, devices=None, *, seed: int = 0,
                      oracle: bool = False, processes: bool = True) -> None:
    """Simulate twice with fresh policies (with and without injected faults) and compare
    records and per-device totals bit for bit; raise PolicyError(rule 'determinism') if not.

    workload, devices: default to 120 requests on two small devices (memory pressure, so
    preemption and rejection paths run too).
    processes: also run the same simulations in two fresh Python processes with different
        PYTHONHASHSEED (see HASH_SEEDS) and compare them with this one's: a policy that
        iterates a set of strings or objects is consistent within a process and differs
        across them. Needs `factory`, the workload and the devices to pickle (a class or a
        function defined at module level, or functools.partial of one); when they do not,
        this part is skipped with a warning saying so.
    """
    from ..backends.affine import affine_devices
    from ..engines.faults import Faults
    from ..workloads import make_workload

    if workload is None:
        workload = make_workload("poisson", rate=40.0, num_requests=120,
                                 prompt="lognormal:200:1.0:1500", output="lognormal:40:1.0:200")
    if devices is None:
        devices = affine_devices(2, kv_capacity_tokens=4096)
    cases = [(factory, workload, devices, seed, oracle, faults)
             for faults in (None, Faults(failure_rate=0.05, repair_time=0.05, seed=seed))]
    here = [_simulate_case(case) for case in cases]
    for case, (policy, a, b) in zip(cases, here):
        for what, x, y in (("records", a[0], b[0]), ("devices", a[1], b[1])):
            if x != y:
                raise _nondeterministic(policy, seed, case[-1], what, "two runs in one process")
    if processes:
        elsewhere = _simulate_in_processes(cases)
        for hash_seed, runs in (elsewhere or {}).items():
            for case, (policy, a, _), other in zip(cases, here, runs):
                for k, what in enumerate(("records", "devices")):
                    if a[k] != other[k]:
                        raise _nondeterministic(
                            policy, seed, case[-1], what, "this process and a fresh one "
                            f"with PYTHONHASHSEED={hash_seed}")


def _nondeterministic(policy: str, seed: int, faults, what: str, where: str) -> PolicyError:
    return PolicyError(policy, "determinism",
                       f"{where} (seed {seed}{' and faults' if faults else ''}) gave "
                       f"different {what}; a policy must not depend on object ids, the "
                       "iteration order of sets (of strings or objects), unseeded "
                       "randomness or state shared between instances")


def _simulate_case(case) -> tuple[str, tuple[bytes, bytes], tuple[bytes, bytes]]:
    """Run one case twice in this process: (policy name, (records, devices) bytes x 2)."""
    from ..engines.simulator import simulate
    factory, workload, devices, seed, oracle, faults = case
    runs = [simulate(factory(), workload, devices, seed=seed, oracle=oracle, faults=faults)
            for _ in range(2)]
    a, b = ((r.records.tobytes(), r.devices.tobytes()) for r in runs)
    return runs[0].policy, a, b


def _simulate_in_processes(cases) -> dict | None:
    """{hash seed: [(records, devices) bytes per case]} from fresh interpreters, or None
    (with a warning) if the cases cannot be sent to one."""
    import os
    import pickle
    import subprocess
    import sys
    import warnings

    try:
        payload = _pickle_for_child(cases)
    except _DefinedInMain as exc:
        warnings.warn(f"check_determinism: skipped the check across processes, because "
                      f"{exc.what} is defined in __main__ (a script, a notebook or python -c), "
                      "which a fresh Python process cannot import; define it in a module "
                      "(my_policy.py) and import it from there to include this check",
                      stacklevel=3)
        return None
    except Exception as exc:   # a lambda or a class defined inside a function
        warnings.warn(f"check_determinism: skipped the check across processes, because the "
                      f"policy factory cannot be pickled ({type(exc).__name__}: {exc}); pass "
                      "a class or a module-level function to include it", stacklevel=3)
        return None
    path = os.pathsep.join(os.path.abspath(p) if p else os.getcwd()
                           for p in sys.path if isinstance(p, str))
    children = {}
    for hash_seed in HASH_SEEDS:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": path}
        children[hash_seed] = subprocess.Popen(
            [sys.executable, "-c", "from batchlab.testing.check import _child; _child()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = {}
    for hash_seed, child in children.items():
        data, err = child.communicate(payload, timeout=600)
        if child.returncode != 0:
            last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"check_determinism: the run with PYTHONHASHSEED={hash_seed} "
                               f"failed: {last}")
        out[hash_seed] = pickle.loads(data)
    return out


class _DefinedInMain(Exception):
    def __init__(self, obj):
        kind = "class" if isinstance(obj, type) else "function"
        self.what = f"the {kind} {getattr(obj, '__qualname__', obj)!r}"
        super().__init__(self.what)


def _pickle_for_child(cases) -> bytes:
    """pickle.dumps(cases), refusing classes and functions of __main__: pickle stores them
    by name, and the child, whose __main__ is `-c`, could not find them."""
    import io
    import pickle
    import types

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):   # called for every object pickled, classes included
            if isinstance(obj, (type, types.FunctionType)) and \
                    getattr(obj, "__module__", None) == "__main__":
                raise _DefinedInMain(obj)
            return None

    buffer = io.BytesIO()
    Pickler(buffer).dump(cases)
    return buffer.getvalue()


def _child() -> None:
    """The fresh interpreter's side of _simulate_in_processes: cases in, bytes out."""
    import pickle
    import sys
    cases = pickle.load(sys.stdin.buffer)
    runs = [_simulate_case(case)[1] for case in cases]
    sys.stdout.buffer.write(pickle.dumps(runs))
