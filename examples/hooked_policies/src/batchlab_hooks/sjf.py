"""Shortest job first, as a plugin: continuous batching with one method changed."""

import attrs
from batchlab.policies.continuous import ContinuousBatching


@attrs.define
class ShortestJobFirst(ContinuousBatching):
    """Continuous batching that starts the shortest prompts first."""

    name: str = attrs.field(default="shortest-job-first", init=False)

    def rank_key(self, request):
        return request.prompt_tokens  # smaller first; equal prompts in arrival order
