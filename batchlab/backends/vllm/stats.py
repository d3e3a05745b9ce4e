"""`StepStats`: what the vLLM adapter planned and what vLLM executed, step by step.

A step is recorded twice: when `schedule()` returns (the policy's plan, the policy's time and
the whole `schedule()` time) and after the model ran (the tokens per request the engine
scheduled and the request ids the worker reports). A step matches when all three agree. The
engine's scheduler lives in vLLM's engine process, so with a `log` path every step is also
written there as one JSON line, for a driver in another process to read (`read_log`).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import attrs


@attrs.define
class StepStats:
    log: str | None = None
    steps: list = attrs.field(factory=list)   # dicts: step, plan, executed, ran, match, *_s
    num_matched: int = 0
    num_deviated: int = 0
    num_evictions: int = 0
    _fh: object = attrs.field(default=None, repr=False)

    def planned(self, step: int, batch, vreq: dict, policy_s: float, schedule_s: float) -> None:
        plan = {} if batch is None else {
            vreq[rid].request_id: n
            for rid, n in zip(batch.request_ids.tolist(), batch.num_new_tokens.tolist())}
        self.steps.append({"step": step, "plan": plan, "policy_s": policy_s,
                           "schedule_s": schedule_s})

    def executed(self, num_scheduled: dict, worker_ids, step_s: float | None = None) -> None:
        if not self.steps or "executed" in self.steps[-1]:
            return
        rec = self.steps[-1]
        if step_s is not None:
            rec["step_s"] = step_s   # from schedule() returning to the model's output
        rec["executed"] = dict(num_scheduled)
        rec["ran"] = sorted(worker_ids or ())
        ok = rec["plan"] == rec["executed"] and (not rec["plan"]
                                                 or rec["ran"] == sorted(rec["plan"]))
        rec["match"] = ok
        if ok:
            self.num_matched += 1
        else:
            self.num_deviated += 1
        if self.log:
            if self._fh is None:
                self._fh = open(self.log, "a", buffering=1)
            self._fh.write(json.dumps(rec) + "\n")

    def summary(self) -> dict:
        return summarize(self.steps)


def summarize(steps: list) -> dict:
    """Counts and median times over the steps that ran something."""
    busy = [s for s in steps if s.get("plan")]
    med = (lambda key: statistics.median(s[key] for s in busy) * 1e3) if busy else \
        (lambda key: float("nan"))
    return {"steps": len(busy), "matched": sum(bool(s.get("match")) for s in busy),
            "deviated": sum(not s.get("match") for s in busy if "match" in s),
            "policy_ms_p50": med("policy_s"), "schedule_ms_p50": med("schedule_s")}


def read_log(path) -> list[dict]:
    """The step records a BatchlabScheduler wrote to `path` (one JSON object a line)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
