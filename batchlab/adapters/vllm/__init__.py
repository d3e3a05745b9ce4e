"""A batchlab policy as vLLM's scheduler: vLLM runs exactly the batches the policy plans.

    from vllm import LLM
    from batchlab.adapters.vllm import scheduler_kwargs
    llm = LLM(model=..., **scheduler_kwargs("continuous", max_num_seqs=32))

or, for the OpenAI server (the policy is read from the environment of the engine process):

    BATCHLAB_POLICY=fixed-window BATCHLAB_POLICY_PARAMS='{"window": 0.02}' \\
        vllm serve MODEL --scheduler-cls batchlab.adapters.vllm.BatchlabScheduler \\
        --no-enable-prefix-caching

`BatchlabScheduler` (in `scheduler.py`) replaces vLLM's V1 scheduler through its
`scheduler_cls` setting. Every engine step it asks the policy for a Plan, checks the batch as
every batchlab engine does, and hands vLLM a `SchedulerOutput` that runs exactly those rows
with exactly those token counts. Only vLLM 0.32.0 is supported: the class uses private hooks
of vLLM's scheduler that change between releases, so another version fails with one line.
"""

from __future__ import annotations

import json
import os

from ...core.errors import ConfigError

SUPPORTED_VLLM = "0.32.0"
ENV_POLICY = "BATCHLAB_POLICY"
ENV_PARAMS = "BATCHLAB_POLICY_PARAMS"
ENV_LOG = "BATCHLAB_VLLM_LOG"
SCHEDULER_CLS = "batchlab.adapters.vllm.BatchlabScheduler"

__all__ = ["BatchlabScheduler", "SCHEDULER_CLS", "SUPPORTED_VLLM", "scheduler_kwargs",
           "check_vllm_version"]


def check_vllm_version(version: str | None = None) -> str:
    """The installed vLLM version; ConfigError (one line) if vLLM is absent or not the pinned
    version."""
    if version is None:
        try:
            import vllm
        except ImportError as exc:
            raise ConfigError(f"batchlab.adapters.vllm needs vLLM {SUPPORTED_VLLM} "
                              f"(pip install vllm=={SUPPORTED_VLLM}); importing it failed: "
                              f"{exc}") from None
        version = getattr(vllm, "__version__", "unknown")
    base = version.split("+", 1)[0]
    if base != SUPPORTED_VLLM:
        raise ConfigError(f"batchlab.adapters.vllm supports vLLM {SUPPORTED_VLLM} only, found "
                          f"{version}; install vllm=={SUPPORTED_VLLM} (the adapter uses private "
                          "scheduler hooks that change between vLLM releases)")
    return version


def policy_settings(additional_config: dict | None) -> tuple[str, dict, str | None]:
    """(policy name, parameters, step-log path) from vLLM's additional_config["batchlab"],
    else from the BATCHLAB_POLICY / BATCHLAB_POLICY_PARAMS / BATCHLAB_VLLM_LOG environment."""
    cfg = (additional_config or {}).get("batchlab")
    if cfg is not None:
        if not isinstance(cfg, dict) or not isinstance(cfg.get("policy"), str):
            raise ConfigError('additional_config["batchlab"] must be a dict with a "policy" '
                              f'name, got {cfg!r}'[:200])
        unknown = set(cfg) - {"policy", "params", "log"}
        if unknown:
            raise ConfigError(f'additional_config["batchlab"] has unknown key(s) '
                              f'{sorted(unknown)}; known: policy, params, log')
        params = cfg.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError(f'additional_config["batchlab"]["params"] must be a dict, '
                              f'got {params!r}'[:200])
        return cfg["policy"], dict(params), cfg.get("log")
    name = os.environ.get(ENV_POLICY)
    if not name:
        raise ConfigError(f"BatchlabScheduler needs a policy: set {ENV_POLICY}=<name> (see "
                          '`batchlab policies`) or additional_config={"batchlab": {"policy": '
                          "<name>}}")
    text = os.environ.get(ENV_PARAMS) or "{}"
    try:
        params = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{ENV_PARAMS} is not JSON ({exc}): {text!r}"[:200]) from None
    if not isinstance(params, dict):
        raise ConfigError(f"{ENV_PARAMS} must be a JSON object, got {text!r}"[:200])
    return name, params, os.environ.get(ENV_LOG) or None


def scheduler_kwargs(policy: str, *, log: str | None = None, **params) -> dict:
    """Keyword arguments for `vllm.LLM(...)` / `EngineArgs(...)` that run `policy` as vLLM's
    scheduler. The policy and its parameters are checked here, in the caller's process, so a
    mistake is one line here instead of a failed engine start."""
    check_vllm_version()
    from ...discovery import load_policy
    load_policy(policy, **params)  # raises ConfigError naming a bad name or parameter
    cfg = {"policy": policy, "params": params}
    if log:
        cfg["log"] = str(log)
    return {"scheduler_cls": SCHEDULER_CLS, "additional_config": {"batchlab": cfg},
            "enable_prefix_caching": False}


def __getattr__(name):  # import vLLM only when the scheduler class itself is asked for
    if name == "BatchlabScheduler":
        check_vllm_version()
        from .scheduler import BatchlabScheduler
        return BatchlabScheduler
    raise AttributeError(name)
