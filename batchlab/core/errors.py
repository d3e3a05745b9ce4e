"""The errors batchlab raises on purpose.

Every one of them is a `BatchlabError`: the CLI prints its message as one line and exits
non-zero instead of showing a traceback, because each of these is a user's (or a plugin's)
mistake that the message explains, not a bug in batchlab.
"""

from __future__ import annotations


class BatchlabError(Exception):
    """Base class for errors whose message is meant for the user as it stands."""


class ConfigError(BatchlabError, ValueError):
    """A bad parameter, preset name or option value; the message names it and how to mend it."""


class TraceError(BatchlabError, ValueError):
    """A malformed trace file; the message names the file, the line and the field."""

    def __init__(self, path: str, line: int | None, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {problem}")


class PolicyError(BatchlabError, RuntimeError):
    """A policy broke the Scheduler contract; the message names the policy and the rule."""

    def __init__(self, policy: str, rule: str, detail: str):
        self.policy, self.rule, self.detail = policy, rule, detail
        super().__init__(f"policy {policy!r} broke rule {rule!r}: {detail}")


class PluginError(BatchlabError, ImportError):
    """A plugin could not be found, imported or validated; the message names it."""
