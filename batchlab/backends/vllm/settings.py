"""Settings of the vLLM adapter: the pinned vLLM version, the policy and its parameters (from
vLLM's additional_config or the environment), and `scheduler_kwargs` for `vllm.LLM`."""

from __future__ import annotations

import json
import os

from ...core.errors import ConfigError

SUPPORTED_VLLM = "0.32.0"
ENV_POLICY = "BATCHLAB_POLICY"
ENV_PARAMS = "BATCHLAB_POLICY_PARAMS"
ENV_LOG = "BATCHLAB_VLLM_LOG"
SCHEDULER_CLS = "batchlab.backends.vllm.BatchlabScheduler"

def check_vllm_version(version: str | None = None) -> str:
    """The installed vLLM version; ConfigError (one line) if vLLM is absent or not the pinned
    version."""
    if version is None:
        try:
            import vllm
        except ImportError as exc:
            raise ConfigError(f"batchlab.backends.vllm needs vLLM {SUPPORTED_VLLM} "
                              f"(pip install vllm=={SUPPORTED_VLLM}); importing it failed: "
                              f"{exc}") from None
        version = getattr(vllm, "__version__", "unknown")
    base = version.split("+", 1)[0]
    if base != SUPPORTED_VLLM:
        raise ConfigError(f"batchlab.backends.vllm supports vLLM {SUPPORTED_VLLM} only, found "
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
    from ...policies.discovery import load_policy
    load_policy(policy, **params)  # raises ConfigError naming a bad name or parameter
    cfg = {"policy": policy, "params": params}
    if log:
        cfg["log"] = str(log)
    return {"scheduler_cls": SCHEDULER_CLS, "additional_config": {"batchlab": cfg},
            "enable_prefix_caching": False}
