"""Core values and protocols of batchlab. Imports nothing else from batchlab."""

from .batch import Batch
from .errors import BatchlabError, ConfigError, PluginError, PolicyError, TraceError
from .kv import KVBlockManager
from .plan import IDLE, Plan
from .protocols import Device, Scheduler, policy_name
from .request import Request
from .step import StepCost, StepResult
from .table import RECORD_DTYPE, RequestTable

__all__ = [
    "Batch", "BatchlabError", "ConfigError", "Device", "IDLE", "KVBlockManager", "Plan",
    "PluginError", "PolicyError", "RECORD_DTYPE", "Request", "RequestTable", "Scheduler",
    "StepCost", "StepResult", "TraceError", "policy_name",
]
