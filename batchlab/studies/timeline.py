"""A step timeline: a run as a Chrome/Perfetto trace, to watch batching happen.

`TimelineRecorder` wraps any policy and implements the Scheduler protocol by forwarding every
call to it, so it records from outside the engine and changes nothing the policy decides:
- `schedule(now, devices)`: each batch of the returned Plan starts on its device at `now`
  (and each KV migration is noted);
- `update(batch, result, now)`: that batch's step ended at `now`.
`to_trace(result)` adds each request's lifetime from the Result's records and returns the
trace-event JSON document (the "JSON Array/Object format" Chrome's about:tracing and
https://ui.perfetto.dev open; times in microseconds of simulated time):

- process "devices": one row (thread) per device, a complete event ("ph": "X") per step named
  "prefill", "decode" or "mixed", with rows, new tokens, prefill/decode rows, micro-batches,
  padding and the step's cost breakdown in `args`; a counter track ("ph": "C") per device of
  rows and tokens per step;
- process "requests": one row per request, with "queued" (arrival to first scheduled),
  "prefill" (to the first token) and "decode" (to the last) spans.

`TRACE_SCHEMA` is the JSON Schema of what this module writes; the tests validate against it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..core.protocols import policy_name
from ..core.table import FINISHED

_US = 1e6  # trace-event times are microseconds
DEVICES_PID, REQUESTS_PID = 1, 2

_EVENT = {
    "type": "object",
    "required": ["name", "ph", "pid", "tid"],
    "properties": {
        "name": {"type": "string"},
        "ph": {"enum": ["X", "C", "M", "i"]},
        "ts": {"type": "number", "minimum": 0},
        "dur": {"type": "number", "minimum": 0},
        "pid": {"type": "integer"},
        "tid": {"type": "integer"},
        "cat": {"type": "string"},
        "s": {"enum": ["g", "p", "t"]},
        "args": {"type": "object"},
    },
    "allOf": [
        {"if": {"properties": {"ph": {"const": "X"}}},
         "then": {"required": ["ts", "dur"]}},
        {"if": {"properties": {"ph": {"enum": ["C", "i"]}}},
         "then": {"required": ["ts", "args"]}},
        {"if": {"properties": {"ph": {"const": "M"}}},
         "then": {"required": ["args"], "properties": {
             "name": {"enum": ["process_name", "thread_name", "process_sort_index",
                               "thread_sort_index"]}}}},
    ],
}
TRACE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "traceEvents": {"type": "array", "items": _EVENT},
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object"},
    },
}


def _step_kind(batch) -> str:
    prefill = batch.num_prefill_seqs
    if prefill == 0:
        return "decode"
    return "prefill" if prefill == batch.num_seqs else "mixed"


class TimelineRecorder:
    """A Scheduler that forwards to `policy` and records every step it launches."""

    def __init__(self, policy):
        self.policy = policy
        self.name = policy_name(policy)
        self.steps: list[dict] = []        # finished steps, in order of completion
        self.migrations: list[dict] = []
        self._open: dict[int, tuple] = {}  # id(batch) -> (device, start, batch)
        self._generated: dict[int, int] = {}  # request id -> tokens generated, if any

    # -- the Scheduler protocol, forwarded ----------------------------------------------
    def add(self, request, now):
        return self.policy.add(request, now)

    def abort(self, request_id):
        return self.policy.abort(request_id)

    def schedule(self, now, devices):
        plan = self.policy.schedule(now, devices)
        for device, batch in getattr(plan, "batches", {}).items():
            self._open[id(batch)] = (device, now, batch)
        for rid, device in getattr(plan, "migrations", {}).items():
            self.migrations.append({"request": int(rid), "to": device, "at": now})
        return plan

    def update(self, batch, result, now):
        self._close(batch, now, result, lost=False)
        return self.policy.update(batch, result, now)

    def __getattr__(self, name):
        # Optional hooks (faults' `lost`, a policy's own extras) pass through; a lost step
        # is closed first so that it shows where it ended.
        attr = getattr(self.policy, name)
        if name == "lost" and callable(attr):
            def lost(device_name, batch, now):
                if batch is not None:
                    self._close(batch, now, None, lost=True)
                return attr(device_name, batch, now)
            return lost
        return attr

    def _close(self, batch, now, result, lost: bool) -> None:
        opened = self._open.pop(id(batch), None)
        if opened is None:
            return
        device, start, _ = opened
        # A multi-step batch (Batch.num_steps) is one span for the steps that ran of it.
        steps = int(getattr(result, "num_steps", 1) or 1) if result is not None else 1
        step = {"device": str(device), "start": float(start), "end": float(now),
                "kind": "lost" if lost else _step_kind(batch), "steps": steps,
                "rows": int(batch.num_seqs), "tokens": self._tokens(batch, result, steps),
                "prefill_rows": int(batch.num_prefill_seqs),
                "decode_rows": int(batch.num_seqs - batch.num_prefill_seqs),
                "micro_batches": int(batch.num_micro_batches),
                "padded_tokens": int(batch.num_padded_tokens)}
        if result is not None:
            cost = result.cost
            step.update(emitted=int(np.count_nonzero(result.emitted)),
                        finished=int(np.count_nonzero(result.finished)),
                        compute_s=cost.compute, memory_s=cost.memory,
                        communication_s=cost.communication, overhead_s=cost.overhead,
                        bubble_fraction=cost.bubble_fraction,
                        tokens_per_expert=cost.tokens_per_expert)
        self.steps.append(step)

    def _tokens(self, batch, result, steps: int) -> int:
        """Tokens fed by the steps that ran: the first as planned, then one per row still
        in the batch per step (each emits one token per step, so a row that left early is
        told by how far its num_generated got)."""
        tokens = int(batch.num_tokens)
        generated = getattr(result, "num_generated", None)
        if generated is None or len(generated) != batch.num_seqs:
            return tokens * steps
        ids = batch.request_ids.tolist()
        now = [int(g) for g in generated]
        if steps > 1:
            tokens += sum(max(g - self._generated.get(rid, 0), 1) - 1
                          for rid, g in zip(ids, now))
        finished = result.finished.tolist() if len(result.finished) == len(ids) else []
        for rid, g, done in zip(ids, now, finished or [False] * len(ids)):
            if done:
                self._generated.pop(rid, None)
            else:
                self._generated[rid] = g
        return tokens

    # -- the trace ------------------------------------------------------------------------
    def to_trace(self, result=None) -> dict:
        """The trace-event document; with `result`, request lifetimes too."""
        events: list[dict] = [_meta("process_name", DEVICES_PID, 0, "devices"),
                              _meta("process_sort_index", DEVICES_PID, 0, 0)]
        tids: dict[str, int] = {}
        for step in sorted(self.steps, key=lambda s: (s["start"], s["device"])):
            tid = tids.get(step["device"])
            if tid is None:
                tid = tids[step["device"]] = len(tids) + 1
                events.append(_meta("thread_name", DEVICES_PID, tid, step["device"]))
            args = {k: v for k, v in step.items() if k not in ("device", "start", "end")
                    and not (isinstance(v, float) and not math.isfinite(v))}
            name = step["kind"] + (f" x{step['steps']}" if step["steps"] > 1 else "")
            events.append({"name": name, "cat": "step", "ph": "X", "pid": DEVICES_PID,
                           "tid": tid, "ts": step["start"] * _US,
                           "dur": max(step["end"] - step["start"], 0.0) * _US, "args": args})
            events.append({"name": f"{step['device']} batch", "ph": "C", "pid": DEVICES_PID,
                           "tid": tid, "ts": step["start"] * _US,
                           "args": {"rows": step["rows"], "tokens": step["tokens"]}})
        for m in self.migrations:
            tid = tids.get(m["to"], 0)
            events.append({"name": f"KV of request {m['request']} -> {m['to']}", "cat": "kv",
                           "ph": "i", "s": "t", "pid": DEVICES_PID, "tid": tid,
                           "ts": m["at"] * _US, "args": {"request": m["request"]}})
        if result is not None:
            events += _request_events(result.records)
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"policy": self.name, "clock": "simulated seconds x 1e6",
                              "steps": len(self.steps)}}

    def write(self, path, result=None) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_trace(result)))
        return path


def _meta(name: str, pid: int, tid: int, value) -> dict:
    key = "sort_index" if name.endswith("sort_index") else "name"
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": {key: value}}


def _request_events(records: np.ndarray) -> list[dict]:
    events = [_meta("process_name", REQUESTS_PID, 0, "requests"),
              _meta("process_sort_index", REQUESTS_PID, 0, 1)]
    for rec in records[records["status"] == FINISHED]:
        rid = int(rec["id"])
        tid = rid + 1
        events.append(_meta("thread_name", REQUESTS_PID, tid, f"request {rid}"))
        spans = (("queued", rec["arrival"], rec["first_scheduled"]),
                 ("prefill", rec["first_scheduled"], rec["first_token"]),
                 ("decode", rec["first_token"], rec["finish"]))
        for name, start, end in spans:
            if math.isfinite(start) and math.isfinite(end) and end >= start:
                events.append({"name": name, "cat": "request", "ph": "X", "pid": REQUESTS_PID,
                               "tid": tid, "ts": float(start) * _US,
                               "dur": float(end - start) * _US,
                               "args": {"prompt_tokens": int(rec["prompt_tokens"]),
                                        "output_tokens": int(rec["output_tokens"]),
                                        "preemptions": int(rec["preemptions"])}})
    return events


def run_with_timeline(params: dict, *, progress=None):
    """`scenario.run(params)` with the policy wrapped in a recorder: (Result, recorder)."""
    from ..engines.simulator import simulate
    from . import scenario

    scenario.check_keys(params)
    recorder = TimelineRecorder(scenario.build_policy(params))
    result = simulate(recorder, scenario.build_workload(params), scenario.build_devices(params),
                      seed=params.get("seed") or 0, progress=progress)
    return result, recorder
