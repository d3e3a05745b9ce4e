"""Planning one batch per offered device, with second offers after a preemption.

A policy that preempts a sequence on a small device while it plans may find that the sequence
fits on a device that got nothing earlier in the same `schedule` call. If nothing offered that
device again, the sequence would wait with nothing planned and no wake-up asked for, and the
run would stall (the conformance kit's liveness rule). Continuous batching and bucketing share
this loop; a policy built from scratch can use it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


def plan_devices(devices: Iterable, plan_one: Callable, num_preempted: Callable[[], int]) -> dict:
    """{device name: batch} from `plan_one(device)` (a Batch, or None for nothing) over
    `devices`; while a round preempted something (`num_preempted()` grew), the devices that
    got nothing are offered again, largest KV capacity first."""
    batches: dict = {}
    todo = list(devices)
    while todo:
        before = num_preempted()
        for device in todo:
            batch = plan_one(device)
            if batch is not None:
                batches[device.name] = batch
        if num_preempted() == before:
            break
        todo = sorted((d for d in todo if d.name not in batches),
                      key=lambda d: -d.kv_capacity_tokens)
    return batches
