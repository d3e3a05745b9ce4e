"""The cost model: how long one forward step of a Batch takes for a model on GPUs, and why.

Hardware and model presets (with their published sources), a networkx topology of the GPUs,
and a roofline step-time model for dense, MoE and MLA transformers under tensor, expert and
pipeline parallelism. `make_devices` turns them into simulator Devices. See docs/costmodel.md.
"""

from .builder import make_devices
from .deployments import DEPLOYMENTS, Deployment, Unit, get_deployment, list_deployments, make_deployment
from .device import CostModelDevice
from .disaggregated import DisaggregatedDevice, make_disaggregated_device
from .efficiency import DEFAULT_EFFICIENCY, Efficiency
from .features import batch_features
from .gpus import GPUS, GPUSpec, get_gpu, list_gpus
from .loading import (
    load_efficiency, load_gpu, load_model, resolve_efficiency, resolve_gpu, resolve_model,
)
from .memory import MemoryPlan, plan_memory
from .model_presets import MODELS, get_model, list_models
from .models import ModelConfig
from .moe import Router, expected_experts_touched
from .parallel import Layout, resolve_layout
from .overlap import Phases, two_batch_overlap
from .pipeline import bubble_fraction, critical_path, pipeline_makespan, task_graph
from .runtime import RUNTIMES, RuntimeProfile, get_runtime, list_runtimes
from .step import PartTimes, StepModel
from .topology import Cluster, CollectiveCost

__all__ = [
    "DEPLOYMENTS", "Deployment", "RUNTIMES", "RuntimeProfile", "Unit", "get_deployment",
    "get_runtime", "list_deployments", "list_runtimes", "make_deployment", "two_batch_overlap",
    "Phases",
    "Cluster", "CollectiveCost", "CostModelDevice", "DEFAULT_EFFICIENCY", "DisaggregatedDevice", "Efficiency", "GPUS",
    "GPUSpec", "Layout", "MODELS", "MemoryPlan", "ModelConfig", "PartTimes", "Router",
    "StepModel", "batch_features", "bubble_fraction", "critical_path",
    "expected_experts_touched", "get_gpu", "get_model", "list_gpus", "list_models",
    "load_efficiency", "load_gpu", "load_model", "make_devices", "make_disaggregated_device",
    "pipeline_makespan",
    "plan_memory", "resolve_efficiency", "resolve_gpu", "resolve_layout", "resolve_model",
    "task_graph",
]
