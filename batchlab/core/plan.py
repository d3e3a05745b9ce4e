"""`Plan`: what a Scheduler asks the engine to do after `schedule(now, devices)`."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from .batch import Batch


def _frozen_mapping(value) -> Mapping[str, Batch]:
    return dict(value or {})


@attrs.frozen(slots=True)
class Plan:
    """Batches to launch now, and when the scheduler next wants to be asked.

    batches: device name -> Batch, only for devices that were offered as idle; a device
        left out stays idle.
    wake_at: absolute time (s) at which the engine should call `schedule` again even if
        nothing else happens (windowed policies); must be later than `now`. None: no wake-up.
    rejected: ids of waiting requests the policy will never run (for instance a prompt that
        cannot fit in any device's memory); the engine records them as rejected, so that no
        request is silently lost.
    migrations: request id -> device name: move that request's KV cache (all of its cached
        tokens) from the device that holds it to another (prefill/decode disaggregation). The
        request must be waiting, not in a batch; it is busy until the transfer ends, which
        takes the source device's `kv_transfer_time(num_tokens, target)`; then the engine
        calls the policy's `migrated(request_id, device_name, now)`, and from then on the
        request continues from its cache on the target device.
    """

    batches: Mapping[str, Batch] = attrs.field(factory=dict, converter=_frozen_mapping)
    wake_at: float | None = None
    rejected: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    migrations: Mapping[int, str] = attrs.field(factory=dict, converter=_frozen_mapping)


IDLE = Plan()
