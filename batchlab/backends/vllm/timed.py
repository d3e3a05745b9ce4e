"""`TimedStockScheduler`: vLLM's own scheduler, timed the way `BatchlabScheduler` is.

It changes nothing in what vLLM schedules; it records each `schedule()` call's time and what
was scheduled (the `StepStats` of the adapter, with the policy's time left out), so that the
adapter's cost per step can be set next to vLLM's own on the same engine and workload.

    LLM(model=..., scheduler_cls="batchlab.backends.vllm.timed.TimedStockScheduler")
"""

from __future__ import annotations

import math
import os
import time

from vllm.v1.core.sched.scheduler import Scheduler

from .settings import ENV_LOG
from .stats import StepStats


class TimedStockScheduler(Scheduler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg = (self.vllm_config.additional_config or {}).get("batchlab") or {}
        self.stats = StepStats(cfg.get("log") or os.environ.get(ENV_LOG) or None)

    def schedule(self, throttle_prefills: bool = False):
        start = time.perf_counter()
        out = super().schedule(throttle_prefills)
        elapsed = time.perf_counter() - start
        self.stats.steps.append({"step": self.current_step,
                                 "plan": dict(out.num_scheduled_tokens),
                                 "policy_s": math.nan, "schedule_s": elapsed})
        return out

    def update_from_output(self, scheduler_output, model_runner_output):
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        self.stats.executed(scheduler_output.num_scheduled_tokens, model_runner_output.req_ids)
        return outputs
