"""A batchlab policy as vLLM's scheduler: vLLM runs exactly the batches the policy plans.

    from vllm import LLM
    from batchlab.backends.vllm import scheduler_kwargs
    llm = LLM(model=..., **scheduler_kwargs("continuous", max_num_seqs=32))

or, for the OpenAI server (the policy is read from the environment of the engine process):

    BATCHLAB_POLICY=fixed-window BATCHLAB_POLICY_PARAMS='{"window": 0.02}' \\
        vllm serve MODEL --scheduler-cls batchlab.backends.vllm.BatchlabScheduler \\
        --no-enable-prefix-caching

`BatchlabScheduler` (in `scheduler.py`) replaces vLLM's V1 scheduler through its
`scheduler_cls` setting. Every engine step it asks the policy for a Plan, checks the batch as
every batchlab engine does, and hands vLLM a `SchedulerOutput` that runs exactly those rows
with exactly those token counts. Only vLLM 0.32.0 is supported: the class uses private hooks
of vLLM's scheduler that change between releases, so another version fails with one line.
"""

from __future__ import annotations

from .settings import (ENV_LOG, ENV_PARAMS, ENV_POLICY, SCHEDULER_CLS, SUPPORTED_VLLM,
                       check_vllm_version, policy_settings, scheduler_kwargs)

__all__ = ["BatchlabScheduler", "ENV_LOG", "ENV_PARAMS", "ENV_POLICY", "SCHEDULER_CLS",
           "SUPPORTED_VLLM", "check_vllm_version", "policy_settings", "scheduler_kwargs"]


def __getattr__(name):  # import vLLM only when the scheduler class itself is asked for
    if name == "BatchlabScheduler":
        check_vllm_version()
        from .scheduler import BatchlabScheduler
        return BatchlabScheduler
    raise AttributeError(name)
