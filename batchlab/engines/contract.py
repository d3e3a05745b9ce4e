"""The engine's side of the Scheduler contract, shared by the simulator, the wall-clock
engine and the serving front: checking what they are given (seed, devices) and what a policy
returns (a Plan, its wake-up, its rejections), calling the policy so that its own errors name
it, and turning a workload row into the `Request` a policy may see.

Batch checks (memory, rows, token counts) are `core.validate.check_batch`; this module is
what surrounds them in every engine loop.
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np

from ..core import Plan, Request
from ..core.errors import ConfigError, PolicyError
from ..core.limits import MAX_SEED, _show, is_int
from ..core.request import trusted_request
from ..core.table import WAITING
from ..core.validate import check_batch


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an int, got {_show(seed)}")
    if not 0 <= seed <= MAX_SEED:   # numpy's generators take non-negative seeds only
        raise ConfigError(f"seed must be an int from 0 to {MAX_SEED}, got {_show(seed)}")
    return int(seed)


def check_workload(workload, engine: str):
    """A Workload or a WorkloadSpec (anything with sample(rng)), or a ConfigError."""
    if not callable(getattr(workload, "sample", None)):
        raise ConfigError(f"{engine} needs a Workload or a WorkloadSpec (e.g. "
                          f"make_workload(rate=2.0)), got {_show(workload)}")
    return workload


# Policy objects that have started a run, by id, each with a weak reference so that the entry
# leaves with the object. Kept here, not on the object: a policy may be any plugin's class
# (slots, frozen), on which nothing can be stored.
_STARTED: dict[int, weakref.ref] = {}
_STARTED_LOCK = threading.Lock()
PROTOCOL = ("add", "schedule", "update", "abort")


def _has_run(policy) -> bool:
    ref = _STARTED.get(id(policy))
    return ref is not None and ref() is policy


def _served(policy, engine: str) -> ConfigError:
    return ConfigError(f"{engine}: this {type(policy).__name__} object already served a run; "
                       "a policy keeps its state, so pass a fresh one "
                       "(batchlab.load_policy(...)) or the policy's name for each run")


def check_policy_object(policy, engine: str):
    """A policy instance that has not served a run yet, or a ConfigError: a class passed by
    mistake would otherwise fail at its first add() with 'missing 1 required positional
    argument', blamed on the policy; None or another object, with an AttributeError blamed
    on it; and a policy run twice starts from the first run's state (its queue, its clock),
    which skews the second run's figures without a word. The engine calls `claim_policy`
    once its other checks pass."""
    if isinstance(policy, type):
        name = policy.__name__
        raise ConfigError(f"{engine} needs a policy object, got the class {name}; pass an "
                          f"instance, {name}(), or batchlab.load_policy(<its name>)")
    missing = [m for m in PROTOCOL if not callable(getattr(policy, m, None))]
    if missing:
        raise ConfigError(f"{engine} needs a policy (a Scheduler, or a policy name), got "
                          f"{_show(policy)}, which has no {', '.join(missing)}")
    if _has_run(policy):
        raise _served(policy, engine)
    return policy


def claim_policy(policy, engine: str) -> None:
    """Record that `policy` starts a run: called at the end of an engine's checks, so that a
    call refused for a bad workload or device leaves the policy free for the corrected call.
    A policy that cannot be weakly referenced (a class with __slots__ and no __weakref__)
    is not recorded: a second run of it goes unseen."""
    with _STARTED_LOCK:  # two threads starting one policy: one of them is refused
        if _has_run(policy):
            raise _served(policy, engine)
        key = id(policy)
        try:
            _STARTED[key] = weakref.ref(policy, lambda _, key=key: _STARTED.pop(key, None))
        except TypeError:
            pass


def index_devices(devices, engine: str) -> tuple[list, dict[str, int]]:
    """The device list and name -> position; `engine` names the caller in the error."""
    try:
        devices = list(devices)
    except TypeError:
        raise ConfigError(f"{engine} needs a list of devices, got {_show(devices)}") from None
    if not devices:
        raise ConfigError(f"{engine} needs at least one device")
    for i, d in enumerate(devices):
        missing = [a for a in ("name", "kv_capacity_tokens", "run") if not hasattr(d, a)]
        if missing:
            raise ConfigError(f"{engine}: device {i} ({_show(d)}) is not a Device: it has no "
                              f"{', '.join(missing)} (see batchlab.core.protocols.Device)")
        if not isinstance(d.name, str):
            raise ConfigError(f"{engine}: device {i} has a name that is not a string: "
                              f"{_show(d.name)}")
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise ConfigError(f"device names must be unique, got {names}")
    return devices, {name: i for i, name in enumerate(names)}


def call_policy(policy, name: str, method: str, args, passthrough=(PolicyError,)):
    """Call `policy.method(*args)`; an exception in the policy's code becomes a PolicyError
    naming it and the method (errors of the kinds in `passthrough` go through unchanged)."""
    try:
        return getattr(policy, method)(*args)
    except passthrough:
        raise
    except (Exception, SystemExit) as exc:  # the policy's own bug: say whose and where
        # SystemExit too: a plugin calling sys.exit() must not end a run as a success.
        raise policy_raised(name, method, exc) from exc


def policy_raised(name: str, method: str, exc: BaseException) -> PolicyError:
    """The PolicyError for an exception raised in the policy's `method` (`call_policy`)."""
    return PolicyError(name, "raised", f"{method}() raised {type(exc).__name__}: {exc}")


def check_plan(plan, name: str, now: float, *, migrations: str | None = None) -> Plan:
    """A Plan whose wake-up lies in the future. migrations: None if this engine performs
    KV migrations, else the phrase naming the engine for the error when a plan has some."""
    if not isinstance(plan, Plan):
        raise PolicyError(name, "plan-type",
                          f"schedule() returned {type(plan).__name__}, not a Plan")
    if migrations is not None and plan.migrations:
        raise ConfigError(f"policy {name!r} planned KV migrations, which {migrations} does "
                          "not support; run it in the simulator")
    if plan.wake_at is not None:
        check_wake(plan.wake_at, name, now)
    return plan


def check_wake(wake_at, name: str, now: float) -> None:
    """A wake-up time (not None) must be a finite time after now. A string or an array
    would otherwise end the run with a bare TypeError from the comparison, and infinity
    would be kept as an event that moves the simulator's clock to inf."""
    try:
        if now < wake_at < math.inf:
            return
    except (TypeError, ValueError):  # a str, None-like object, an array: not a time
        raise PolicyError(name, "wake", f"asked to be woken at {_show(wake_at)}, which is "
                          "not a time in seconds; return wake_at=None for no wake-up") from None
    if not math.isfinite(wake_at):
        raise PolicyError(name, "wake", f"asked to be woken at {wake_at}, which is not a "
                          "finite time; return wake_at=None for no wake-up")
    raise PolicyError(name, "wake", f"asked to be woken at {wake_at}, not after now ({now})")


def planned_id(value, name: str, rule: str) -> int:
    """A request id a plan names (in `rejected`, or a key of `migrations`) as an int, or a
    PolicyError: int() would take 0.5 for request 0 and end the run with a bare error on
    'x' or None."""
    if not is_int(value):
        raise PolicyError(name, rule, f"named request {_show(value)} in its plan; a request id "
                          "is an int")
    return int(value)


def check_rejectable(table, rid, name: str) -> int:
    """A policy may reject only a request that is open and not in a running batch; returns
    the id as an int."""
    rid = planned_id(rid, name, "reject")
    if not (0 <= rid < table.size) or table.status[rid] != WAITING or table.in_flight[rid]:
        raise PolicyError(name, "reject", f"rejected request {rid}, which is not "
                          "waiting (unknown, finished, or running)")
    return rid


def launch_batches(plan: Plan, devices, index: dict, table, name: str, now: float,
                   idle=None) -> list[tuple[int, object]]:
    """Check every batch of the plan (`check_batch`) and book its launch in the table;
    returns [(device position, batch)]. idle: per-device flags, if a busy device must be
    refused (engines that run devices concurrently)."""
    launched = []
    for device_name, batch in plan.batches.items():
        d = index.get(device_name)
        if d is None or (idle is not None and not idle[d]):
            what = "no such device" if d is None else "it is busy"
            raise PolicyError(name, "device",
                              f"planned a batch for device {device_name!r}, but {what}")
        table.launch(batch, d, now, check_batch(batch, devices[d], d, table, name))
        launched.append((d, batch))
    return launched


def stalled(table, name: str) -> PolicyError:
    """The error for a run whose policy left requests open and asked for no wake-up."""
    open_ids = np.flatnonzero(table.status[:table.size] == WAITING)
    # none waiting: the open ones never arrived (an error of ours; still this error, not an
    # IndexError from inside the message)
    first = f" (first: request {int(open_ids[0])})" if open_ids.size else ""
    return PolicyError(
        name, "liveness",
        f"{table.size - table.num_closed} requests never finished and the policy asked for "
        f"no wake-up{first}; a policy must run or reject every request it was given")


def request_of(workload, table, rid: int, *, oracle: bool = False) -> Request:
    """Request `rid` of a sampled workload as the policy sees it (after it has arrived):
    never its true output length, unless the run is an oracle run."""
    # item(): the Python float or int (the columns are float64 and int64) without a numpy
    # scalar between; so trusted_request may skip Request's type checks.
    return trusted_request(rid, table.arrival.item(rid), workload.prompt_tokens.item(rid),
                           int(workload.max_new_tokens),
                           0 if workload.priority is None else int(workload.priority[rid]),
                           workload.output_tokens.item(rid) if oracle else None)


def follow_ups(workload) -> np.ndarray:
    """Closed loop: for each request, the id its user sends next (-1: none)."""
    nxt = np.full(workload.num_requests, -1, dtype=np.int64)
    if workload.user is not None:
        for user in np.unique(workload.user):
            mine = np.flatnonzero(workload.user == user)
            nxt[mine[:-1]] = mine[1:]
    return nxt


def tell_devices(devices, method: str, *args) -> None:
    """Call `method(*args)` on every device that has it (`register`, `free`)."""
    for device in devices:
        fn = getattr(device, method, None)
        if fn is not None:
            fn(*args)
