"""Priority classes with a reserve, as a plugin: all three kinds of hook in one policy.

Interactive requests (priority > 0) are ranked first and may always start. Background
requests (priority <= 0) may start only while a device runs fewer than `background_share` of
its sequence cap, so a burst of background work never fills a device and interactive
arrivals find room at once, without waiting for a preemption. Small devices get a smaller
sequence cap: one sequence per `tokens_per_seq` tokens of KV memory, so they are not
filled with more sequences than their cache can keep decoding.
"""

import attrs
from batchlab.policies.continuous import ContinuousBatching


def _share(instance, attribute, value):
    # A ValueError from a validator reaches the user as a ConfigError naming the policy.
    if not 0 < value <= 1:
        raise ValueError(f"{attribute.name} must be in (0, 1], got {value!r}")


def _positive(instance, attribute, value):
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.define
class PriorityClasses(ContinuousBatching):
    """Continuous batching with interactive requests first and a reserve kept free of
    background work."""

    background_share: float = attrs.field(default=0.5, validator=_share)
    tokens_per_seq: int = attrs.field(default=256, validator=_positive)
    name: str = attrs.field(default="priority-classes", init=False)

    def rank_key(self, request):
        return -request.priority  # higher class first, arrival order within a class

    def may_admit(self, request, device):
        if request.priority > 0:
            return True
        # An idle device always takes background work (0 < share x cap), so none starves
        # once the interactive traffic stops.
        return self.num_running_on(device) < self.background_share * self.max_num_seqs_on(device)

    def max_num_seqs_on(self, device):
        return max(1, min(self.max_num_seqs, device.kv_capacity_tokens // self.tokens_per_seq))
