"""`BatchlabScheduler`: vLLM 0.32's V1 scheduler with the choice of each step made by a policy.

vLLM calls, per engine step: `schedule()`, runs the model, `update_from_output(...)`; between
steps `add_request` and `finish_requests` (aborts). They reach the policy as the Scheduler
protocol's calls: `add`, `schedule(now, [device])`, `update(batch, result, now)`, `abort`.
The one device is vLLM's KV cache: `kv_capacity_tokens` = usable blocks x block size.

The policy sees dense int ids (vLLM's are strings) and a priority with batchlab's sign
(vLLM runs lower values first, batchlab higher). Its batch is checked with the same
`check_batch` every batchlab engine applies, plus vLLM's own limits (token budget, sequence
cap), and then executed as planned: KV slots are allocated for exactly the planned tokens and
the `SchedulerOutput` lists exactly the planned rows. Prefix-cache hits are not taken (the
policy decided how many tokens to feed), so `enable_prefix_caching=False` saves the hashing.

Preemption is the policy's, by recompute: a row planned with 0 cached tokens whose request
holds KV in vLLM is preempted there first. vLLM's KV is freed eagerly for such a request only
when a row needs its space: if an allocation fails, requests running in vLLM but absent from
the plan are preempted, latest first (what a policy that preempted them by recompute
expects). A policy whose plan then continues such a request from its old cache deviates;
`stats` counts every step whose executed batch differs from the plan.

Measured per step (`stats.steps`, and one JSON line per step in the `log` file if set): the
plan, what the worker executed, the policy's time and the whole `schedule()` time.

Not supported (one clear error at start): async scheduling, speculative decoding, KV
connectors, pipeline parallelism, Model Runner V2 (GPU async; pass --no-async-scheduling).
"""

from __future__ import annotations

import time

import attrs
import numpy as np
from vllm.v1.core.sched.output import NewRequestData, SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreEventType, EngineCoreOutput, EngineCoreOutputs, FinishReason
from vllm.v1.request import RequestStatus

from ...core import Batch, Plan, Request, StepResult
from ...core.errors import ConfigError, PolicyError
from ...core.protocols import policy_name
from ...core.table import ABORTED, FINISHED, REJECTED, RequestTable
from ...core.validate import check_batch
from ...engines.contract import planned_id
from .settings import policy_settings
from .stats import StepStats

_DEFAULTS_FROM_VLLM = ("block_size", "max_num_batched_tokens", "max_num_seqs", "max_batch")


@attrs.define
class VllmDevice:
    """vLLM's KV cache as the one device a policy plans for."""

    name: str
    kv_capacity_tokens: int


class BatchlabScheduler(Scheduler):
    """vLLM's scheduler, driven by a batchlab policy (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_supported()
        name, params, log = policy_settings(self.vllm_config.additional_config)
        self.policy = self._load_policy(name, params)
        self.policy_name = policy_name(self.policy)
        usable_blocks = self.kv_cache_config.num_blocks - 1   # block 0 is vLLM's null block
        self.device = VllmDevice("vllm", usable_blocks * self.block_size)
        self.table = RequestTable()
        self.stats = StepStats(log)
        self._rid: dict[str, int] = {}      # vLLM id -> batchlab id, while it lives
        self._vreq: dict[int, object] = {}  # batchlab id -> vLLM Request
        self._in_flight: tuple | None = None  # (batch, launch time) between schedule/update
        self._abort_after: set[int] = set()   # aborted while their step ran
        self._rejected: list = []             # vLLM Requests to report as aborted
        self._t0 = time.monotonic()

    # -- setup --------------------------------------------------------------------------
    def _check_supported(self) -> None:
        cfg = self.vllm_config
        why = None
        if cfg.scheduler_config.async_scheduling:
            why = "async scheduling (pass --no-async-scheduling / async_scheduling=False)"
        elif cfg.speculative_config is not None:
            why = "speculative decoding"
        elif self.connector is not None:
            why = "KV connectors"
        elif self.use_pp:
            why = "pipeline parallelism"
        elif self.use_v2_model_runner:
            why = "Model Runner V2"
        if why:
            raise ConfigError(f"BatchlabScheduler does not support {why}; run vLLM without it")

    def _load_policy(self, name: str, params: dict):
        from ...policies.discovery import available_policies, load_policy
        info = {i.name: i for i in available_policies()}.get(name)
        declared = {p.name: p.default for p in (info.params if info else ())}
        limits = {"block_size": self.block_size,
                  "max_num_batched_tokens": self.max_num_scheduled_tokens,
                  "max_num_seqs": self.max_num_running_reqs,
                  "max_batch": self.max_num_running_reqs}
        for key in _DEFAULTS_FROM_VLLM:
            if key in declared and key not in params:
                default = declared[key]
                # vLLM's block size and budget; a batch cap only where vLLM's is smaller.
                if key != "max_batch" or not isinstance(default, int) or default > limits[key]:
                    params[key] = limits[key]
        return load_policy(name, **params)

    # -- vLLM -> policy -------------------------------------------------------------------
    def _now(self) -> float:
        return time.monotonic() - self._t0

    def add_request(self, request) -> None:
        vid = request.request_id
        known = vid in self.requests
        super().add_request(request)
        if known:
            raise ConfigError(f"BatchlabScheduler: request {vid!r} was added twice (streaming "
                              "input sessions are not supported)")
        now = self._now()
        rid = int(self.table.register([request.num_prompt_tokens], [request.max_tokens])[0])
        self.table.arrive(rid, now)
        self._rid[vid], self._vreq[rid] = rid, request
        self._call("add", Request(id=rid, arrival=now, prompt_tokens=request.num_prompt_tokens,
                                  max_new_tokens=max(1, int(request.max_tokens)),
                                  priority=-int(request.priority)), now)

    def finish_requests(self, request_ids, finished_status):
        done = super().finish_requests(request_ids, finished_status)
        in_flight = set() if self._in_flight is None else \
            set(self._in_flight[0].request_ids.tolist())
        for request in done:
            rid = self._rid.get(request.request_id)
            if rid is None:
                continue
            if rid in in_flight:   # the protocol never aborts a row in flight: wait for it
                self._abort_after.add(rid)
            else:
                self._abort(rid)
        return done

    def _abort(self, rid: int) -> None:
        self._call("abort", rid)
        self.table.close(rid, ABORTED, self._now())
        self._forget(rid)

    def _forget(self, rid: int) -> None:
        request = self._vreq.pop(rid, None)
        if request is not None:
            self._rid.pop(request.request_id, None)

    # -- one step -----------------------------------------------------------------------------
    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        start = time.perf_counter()
        self.current_step += 1
        now = self._now()
        plan = self._call("schedule", now, [self.device])
        policy_s = time.perf_counter() - start
        batch = self._check_plan(plan, now)
        out = self._build_output(batch)
        if batch is not None:
            self._in_flight = (batch, time.perf_counter())
        self.stats.planned(self.current_step, batch, self._vreq, policy_s,
                           time.perf_counter() - start)
        if batch is None:   # nothing to run: don't spin the engine loop flat out
            wait = 0.001 if plan.wake_at is None else min(max(plan.wake_at - now, 0), 0.002)
            time.sleep(wait)
        return out

    def _check_plan(self, plan, now: float) -> Batch | None:
        if not isinstance(plan, Plan):
            raise PolicyError(self.policy_name, "plan-type",
                              f"schedule() returned {type(plan).__name__}, not a Plan")
        if plan.migrations:
            raise ConfigError(f"policy {self.policy_name!r} planned KV migrations, which "
                              "vLLM (one device) cannot run")
        for rid in plan.rejected:  # an id that is no int (0.5, 'x') is named, not int()-ed
            rid = planned_id(rid, self.policy_name, "reject")
            request = self._vreq.get(rid)
            if request is None:
                raise PolicyError(self.policy_name, "reject",
                                  f"rejected request {rid}, which is not waiting")
            self.table.close(rid, REJECTED, now)
            self._forget(rid)
            super().finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED)
            self._rejected.append(request)
        unknown = set(plan.batches) - {self.device.name}
        if unknown:
            raise PolicyError(self.policy_name, "device", f"planned a batch for device "
                              f"{sorted(unknown)[0]!r}; vLLM is one device named 'vllm'")
        batch = plan.batches.get(self.device.name)
        if batch is None:
            return None
        check_batch(batch, self.device, 0, self.table, self.policy_name)
        if batch.num_seqs > self.max_num_running_reqs:
            raise PolicyError(self.policy_name, "vllm-seqs", f"planned {batch.num_seqs} rows "
                              f"but vLLM runs at most max_num_seqs={self.max_num_running_reqs}")
        if batch.num_tokens > self.max_num_scheduled_tokens:
            raise PolicyError(self.policy_name, "vllm-budget", f"planned {batch.num_tokens} "
                              "tokens but vLLM's max_num_batched_tokens is "
                              f"{self.max_num_scheduled_tokens}; raise it or the policy's")
        self.table.launch(batch, 0, now)
        return batch

    def _build_output(self, batch: Batch | None) -> SchedulerOutput:
        kv = self.kv_cache_manager
        kv.new_step_starts()
        rows = [] if batch is None else list(zip(batch.request_ids.tolist(),
                                                 batch.num_new_tokens.tolist(),
                                                 batch.num_cached_tokens.tolist()))
        planned = {self._vreq[rid].request_id for rid, _, _ in rows}
        for rid, _, cached in rows:   # the policy recomputes it: preempt it in vLLM first
            req = self._vreq[rid]
            if cached == 0 and req.status == RequestStatus.RUNNING and req.num_computed_tokens:
                self.running.remove(req)
                self._preempt_request(req, time.monotonic())
        new, resumed, running, blocks, num = [], [], [], {}, {}
        stamp = time.monotonic()
        for rid, n, cached in rows:
            req = self._vreq[rid]
            vid = req.request_id
            if cached != req.num_computed_tokens:   # evicted earlier: reach the planned end
                n = cached + n - req.num_computed_tokens
            was_running = req.status == RequestStatus.RUNNING
            got = kv.allocate_slots(req, n)
            while got is None and self._evict(planned):
                got = kv.allocate_slots(req, n)
            if got is None:
                raise PolicyError(self.policy_name, "vllm-memory", f"request {rid} needs KV "
                                  f"for {n} more tokens and vLLM's cache is full of planned "
                                  "rows; the policy's memory view exceeds vLLM's (block_size?)")
            if was_running:
                running.append(req)
                blocks[vid] = got
            else:
                self.waiting.remove_request(req)
                self.running.append(req)
                (new if req.status == RequestStatus.WAITING else resumed).append(req)
                if self.log_stats:
                    req.record_event(EngineCoreEventType.SCHEDULED, stamp)
                req.status = RequestStatus.RUNNING
                blocks[vid] = kv.get_blocks(vid)
            num[vid] = n
        return self._output(new, resumed, running, blocks, num)

    def _evict(self, planned: set) -> bool:
        """Preempt the latest-arrived request that runs in vLLM but is not in this plan."""
        for req in reversed(self.running):
            if req.request_id not in planned:
                self.running.remove(req)
                self._preempt_request(req, time.monotonic())
                self.stats.num_evictions += 1
                return True
        return False

    def _output(self, new, resumed, running, blocks, num) -> SchedulerOutput:
        kv = self.kv_cache_manager
        new_data = [NewRequestData.from_request(r, blocks[r.request_id].get_block_ids(),
                                                uses_mrope=self.model_uses_mrope) for r in new]
        cached = self._make_cached_request_data(running, resumed, num, {}, blocks)
        self.prev_step_scheduled_req_ids.clear()
        self.prev_step_scheduled_req_ids.update(num)
        kv.take_boundary_state_offloads()
        copies, retained = kv.take_kv_cache_block_copies()
        if copies:
            self._free_cow_retained_blocks(retained, self.sched_step_seq + 1)
        total = sum(num.values())
        out = SchedulerOutput(
            scheduled_new_reqs=new_data, scheduled_cached_reqs=cached,
            num_scheduled_tokens=num, total_num_scheduled_tokens=total,
            scheduled_spec_decode_tokens={}, scheduled_encoder_inputs={},
            finished_req_ids=self.finished_req_ids,
            free_encoder_mm_hashes=self.encoder_cache_manager.get_freed_mm_hashes(),
            preempted_req_ids=self.reset_preempted_req_ids,
            new_block_ids_to_zero=self._get_new_block_ids_to_zero(),
            kv_cache_block_copies=copies or None,
            ec_manager_metadata=self.encoder_cache_manager.get_manager_metadata())
        if self.defer_block_free and total > 0:
            self.sched_step_seq += 1
        self._update_after_schedule(out)
        return out

    # -- after the step -----------------------------------------------------------------
    def update_from_output(self, scheduler_output, model_runner_output):
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        if self._in_flight is None:
            self.stats.executed(scheduler_output.num_scheduled_tokens,
                                model_runner_output.req_ids)
        else:
            batch, launched = self._in_flight
            self._in_flight = None
            duration = time.perf_counter() - launched
            self.stats.executed(scheduler_output.num_scheduled_tokens,
                                model_runner_output.req_ids, duration)
            self._complete(batch, outputs, duration)
        for request in self._rejected:   # tell the client, as vLLM tells it of an abort
            eco = outputs.setdefault(request.client_index, EngineCoreOutputs())
            eco.outputs.append(EngineCoreOutput(request_id=request.request_id,
                                                new_token_ids=[],
                                                finish_reason=FinishReason.ABORT))
        self._rejected.clear()
        return outputs

    def _complete(self, batch: Batch, outputs, duration: float) -> None:
        by_id = {o.request_id: o for eco in outputs.values() for o in eco.outputs}
        ids = batch.request_ids
        emitted = np.zeros(ids.size, dtype=bool)
        finished = np.zeros(ids.size, dtype=bool)
        tokens = np.full(ids.size, -1, dtype=np.int64)
        for row, rid in enumerate(ids.tolist()):
            o = by_id.get(self._vreq[rid].request_id) if rid in self._vreq else None
            if o is not None and o.new_token_ids:
                emitted[row], tokens[row] = True, o.new_token_ids[-1]
            finished[row] = o is not None and o.finish_reason is not None \
                and rid not in self._abort_after
        t = self.table
        t.cached[ids] = batch.num_cached_tokens + batch.num_new_tokens
        t.generated[ids] += emitted
        t.in_flight[ids] = False
        now = self._now()
        result = StepResult(duration, emitted=emitted, finished=finished,
                            num_generated=t.generated[ids].copy(), tokens=tokens)
        self._call("update", batch, result, now)
        for rid in ids[finished].tolist():
            t.status[rid], t.finish[rid], t.cached[rid] = FINISHED, now, 0
            t.num_finished += 1
            t.num_closed += 1
            self._forget(rid)
        for rid in sorted(self._abort_after):
            self._abort(rid)
        self._abort_after.clear()

    def _call(self, method: str, *args):
        try:
            return getattr(self.policy, method)(*args)
        except (PolicyError, ConfigError):
            raise
        except Exception as exc:
            raise PolicyError(self.policy_name, "raised",
                              f"{method}() raised {type(exc).__name__}: {exc}") from exc
