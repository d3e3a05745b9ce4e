"""batchlab-spf: an example batchlab policy plugin (shortest prompt first)."""

from .policy import ShortestPromptFirst

__all__ = ["ShortestPromptFirst"]
