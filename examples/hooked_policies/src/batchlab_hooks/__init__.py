"""batchlab-hooks: two example policies built on the hooks of continuous batching."""

from .priority_classes import PriorityClasses
from .sjf import ShortestJobFirst

__all__ = ["PriorityClasses", "ShortestJobFirst"]
