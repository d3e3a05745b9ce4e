"""`StepModel`: the time one forward step of a Batch takes on one replica, and why.

Per op and layer, on the busiest GPU of each pipeline stage:
    time = max(FLOPs / rate, bytes / (bandwidth x memory eff.)) + kernel overhead
(rate: peak x compute eff., or a published kernel's rate at the op's shapes, `kernels.py`)
summed over the stage's layers, plus the stage's collectives (two tensor-parallel all-reduces
per layer, or an all-reduce and the expert-parallel dispatch and combine all-to-alls in a MoE
layer). Routed experts wait for the busiest expert-parallel rank (see `moe.py`). The stages
and the links between them form a pipeline that the batch's micro-batches flow through
(see `pipeline.py`); the step ends when the last micro-batch leaves the last stage, plus the
fixed per-step overhead. With data-parallel attention (tp < GPUs of a stage) the stage
waits at every MoE layer for its busiest attention group, which holds whole rows (see
`groups.py`). Collectives are not overlapped with compute, unless the layout asks for
two-batch overlap (`overlap=True`, one pipeline stage): then the batch runs as two
micro-batches whose computation hides each other's communication (see `overlap.py`), and the
breakdown reports the communication left exposed and the communication hidden.

The breakdown puts every op under the bound that set its time (compute or memory), collectives
and sends under communication, launches and the step overhead under overhead; along the
critical path they add up to the duration exactly.
"""

from __future__ import annotations

import attrs
import numpy as np

from batchlab.core import StepCost
from batchlab.core.step import cost_row

from . import ops as O
from .efficiency import Efficiency
from .expert_comm import ExpertComm
from .features import batch_features
from .groups import busiest_group
from .kernels import MeasuredKernels
from .gpus import GPUSpec
from .models import ModelConfig
from .moe import Router
from .overlap import Phases, two_batch_overlap
from .parallel import Layout
from .pipeline import bubble_fraction
from .topology import Cluster


@attrs.frozen(slots=True)
class PartTimes:
    """Seconds one pass of a whole batch (no micro-batching) spends per side of the model,
    summed over all layers: what a disaggregated device puts on separate GPU pools."""

    attention: float       # norms, projections and attention of every layer
    ffn: float             # FFN / router / shared and routed experts of every layer
    head: float            # embedding lookup and output head
    attention_comm: float  # tensor-parallel all-reduces after attention
    ffn_comm: float        # all-reduces or dispatch/combine all-to-alls of the FFN side


@attrs.define(eq=False, slots=False)  # many precomputed tables, set in post-init
class StepModel:
    """Precomputed cost tables of one model on one replica's GPUs."""

    model: ModelConfig
    gpu: GPUSpec
    layout: Layout
    efficiency: Efficiency
    cluster: Cluster
    router: Router | None = None
    overlap: bool = False
    # Rows feeding at most this many tokens run the decode path (features.py; make_devices
    # says which values engines use).
    decode_threshold: int = 1

    def __attrs_post_init__(self):
        m, lay, gpu, eff = self.model, self.layout, self.gpu, self.efficiency
        op_list, self._experts = O.build_ops(m, lay, gpu)
        self.op_names = [o.name for o in op_list]
        F = np.array([o.flops for o in op_list])
        B = np.array([o.bytes for o in op_list])
        peak = np.array([o.peak for o in op_list])[:, None]
        # one product gives compute time, memory time, FLOPs and bytes of every op
        self._M = np.vstack([F / (peak * eff.compute), B / (gpu.memory_bandwidth * eff.memory),
                             F, B])
        self._n = n = len(op_list)
        p = lay.pp
        dense = [float(d) for d in lay.stage_dense_layers]
        moe = [float(e) for e in lay.stage_moe_layers]
        layers = [d + e for d, e in zip(dense, moe)]
        first, last = [1.0] + [0.0] * (p - 1), [0.0] * (p - 1) + [1.0]
        count = {O.EVERY: layers, O.DENSE: dense, O.MOE: moe, O.FIRST: first, O.LAST: last}
        self._K = np.array([count[o.where] for o in op_list], float).T  # stages x ops
        self._KT = np.ascontiguousarray(self._K.T)
        self._K0 = np.ascontiguousarray(self._K[0])  # stage 0's row (one-stage steps)
        self._Ktot = self._K.sum(axis=0)
        self._part = {part: np.array([o.part == part for o in op_list], float)
                      for part in (O.ATTENTION, O.FFN, O.HEAD)}
        # one MoE layer's ops on each side of the dispatch (two-batch overlap's phases)
        self._attn_ops = np.array([o.where == O.EVERY for o in op_list], float)
        self._moe_ops = np.array([o.where == O.MOE for o in op_list], float)
        # launch overheads per stage: every op of every layer, and the routed experts
        kov = eff.kernel_overhead
        self._ovh = [float(x) + (e * kov if m.is_moe else 0.0)
                     for x, e in zip(self._K @ np.full(n, kov), moe)]
        self._size = lay.stage_size
        self._scale = 1.0 / lay.attention_dp  # kept for DecodePricer (dense: always 1)
        self._groups = lay.attention_dp
        self._group_gpus = lay.tp  # a group's GPUs split its tokens for the dispatch
        self._h_bytes = m.hidden_size * m.act_bytes
        c, ce = self.cluster, eff.communication
        self._stages = []
        for s in range(p):
            ar = c.all_reduce(lay.tp_group(s))
            xc = (ExpertComm.build(c, lay.stage_gpus[s], m, ce, eff.overlapped_communication)
                  if m.is_moe and lay.ep > 1 else None)
            self._stages.append((layers[s], dense[s], moe[s], ar.latency, ar.seconds_per_byte / ce,
                                 xc))
        self._links = []
        for s in range(p - 1):
            x = c.p2p(lay.stage_gpus[s][0], lay.stage_gpus[s + 1][0])
            self._links.append((x.latency, x.seconds_per_byte / ce))
        self._moe_ar = lay.ep == 1  # experts tensor-parallel: their output is all-reduced
        self._ep, self._etp = lay.ep, lay.expert_tp
        self._moe_cum = np.concatenate([[0], np.cumsum(moe)]).astype(int)
        if self._experts is not None:
            ex = self._experts
            self._ex_c = ex.flops_per_assignment / (ex.peak * eff.compute)
            self._ex_ma = ex.bytes_per_assignment / (gpu.memory_bandwidth * eff.memory)
            self._ex_me = ex.bytes_per_expert / (gpu.memory_bandwidth * eff.memory)
            self._top_k = m.num_experts_per_tok
        self._kernels = MeasuredKernels(op_list, self._experts, gpu, m, eff,  # kernels.py
                                        getattr(self, "_ex_c", 0.0), self._M)
        self.peak_flops = gpu.matmul_flops(m.weight_dtype) * lay.num_gpus
        self.peak_bandwidth = gpu.memory_bandwidth * lay.num_gpus

    # ---- pieces --------------------------------------------------------------------------
    def _features(self, batch):  # see features.py
        return batch_features(batch, self.decode_threshold)

    def _busiest_group(self, batch, feats):  # see groups.py
        """(features of the busiest attention group, tokens of the group sending the most)."""
        if self._groups == 1:
            return feats, feats[0]
        return busiest_group(batch, feats, self._groups, self._group_seconds,
                             self.decode_threshold)

    def _group_seconds(self, group) -> float:
        """Seconds of one pass of a group's ops (no micro-batches): which group waits."""
        out = self._op_out(group, 1)
        return float(np.maximum(out[0], out[1]) @ self._Ktot)

    def _op_out(self, group, m):
        """Per op, one GPU, one micro-batch of the busiest attention group's features: rows of
        compute time, memory time, FLOPs, bytes."""
        T, R, Tp, Cp, Ap, Rd, Cd, Td, Qd = group
        s = 1.0 / m  # ops are per GPU of a group already (build_ops splits them over tp)
        if m == 1:  # x 1.0 changes no bit: the features as they are (most steps)
            f = np.array([1.0, T, R, Tp, Cp, Ap, Rd, Cd, Td, Qd])
        else:
            f = np.array([1.0, T * s, R * s, Tp * s, Cp * s, Ap * s, Rd * s, Cd * s, Td * s,
                          Qd * s])
        # ndarray.dot: the same BLAS product as @ (gemv), without matmul's ufunc dispatch
        # (~0.25 us a call here and below; the same bits)
        out = self._M.dot(f).reshape(4, self._n)
        if self._kernels.measured:  # else apply changes nothing (most models and GPUs)
            self._kernels.apply(out, T * s)
        return out

    def _work(self, feats, group, m, out):
        """Per op, one GPU, one micro-batch: FLOPs and bytes of an even share of the batch
        (the totals count work done, not waiting), from `out` when no group waits."""
        if group is feats:
            return out[2:]
        return self._op_out(tuple(x / self._groups for x in feats), m)[2:]

    def _experts_time(self, tokens, is_decode=False):
        """Routed experts of each stage for one micro-batch (busiest rank): time, compute
        share (lists per stage), distinct experts touched per layer."""
        st = self.router.route(tokens)
        moe = self.layout.stage_moe_layers
        if isinstance(st.rank_load, float):
            tc = st.rank_load * self._kernels.expert_seconds(st, is_decode)
            t = max(tc, st.rank_touched * self._ex_me + st.rank_load * self._ex_ma)
            c = t if tc >= t else 0.0
            return [e * t for e in moe], [e * c for e in moe], float(st.touched)
        tc = st.rank_load * self._kernels.expert_seconds(st, is_decode)
        t_rank = np.maximum(tc, st.rank_touched * self._ex_me + st.rank_load * self._ex_ma)
        worst = t_rank.argmax(axis=1)
        rows = np.arange(len(worst))
        t_layer = t_rank[rows, worst]
        c_layer = np.where(tc[rows, worst] >= t_layer, t_layer, 0.0)
        if len(t_layer) == 1:  # expected routing: every MoE layer alike
            t, c = float(t_layer[0]), float(c_layer[0])
            return [e * t for e in moe], [e * c for e in moe], float(st.touched[0])
        k = self._moe_cum
        cum = np.concatenate([[0.0], np.cumsum(t_layer)])  # split layers over the stages
        ccum = np.concatenate([[0.0], np.cumsum(c_layer)])
        return ((cum[k[1:]] - cum[k[:-1]]).tolist(), (ccum[k[1:]] - ccum[k[:-1]]).tolist(),
                float(st.touched.mean()))

    def _per_gpu_tokens(self, tokens, group_tokens):
        """Tokens each GPU dispatches: the busiest group's over its GPUs, or an even share."""
        return group_tokens / self._group_gpus if self._groups > 1 else tokens / self._ep

    def _comm(self, tokens_stage, group_tokens, is_decode=False):
        """Collective seconds of one micro-batch per stage: (attention side, FFN side) lists;
        `group_tokens` is the busiest attention group's share of `tokens_stage`."""
        msg = group_tokens * self._h_bytes  # all-reduce: one attention group
        per_gpu = self._per_gpu_tokens(tokens_stage, group_tokens)  # tokens each GPU dispatches
        attn, ffn = [], []
        for layers, dense, moe, ar_l, ar_s, xc in self._stages:
            ar = ar_l + msg * ar_s if ar_s and msg > 0 else 0.0
            f = dense * ar
            if moe:
                if self._moe_ar:
                    f += moe * ar
                elif xc is not None:
                    f += moe * xc.time(per_gpu, is_decode)
            attn.append(layers * ar)
            ffn.append(f)
        return attn, ffn

    # ---- the step ------------------------------------------------------------------------
    def _evaluate(self, batch):
        """Per stage, one micro-batch: op time, its compute share, launch overhead and
        collectives (lists), link times, micro-batches, and the step's totals."""
        feats = self._features(batch)
        T, R = feats[0], feats[1]
        m = max(1, min(int(batch.num_micro_batches), int(R)))
        group, sent = self._busiest_group(batch, feats)
        out = self._op_out(group, m)  # rows: compute time, memory time, FLOPs, bytes
        out[2:] = self._work(feats, group, m, out)
        bound = out[0] >= out[1]
        np.maximum(out[0], out[1], out=out[1])  # row 1 becomes the op's roofline time
        np.multiply(out[1], bound, out=out[0])  # row 0 its compute-bound share
        s_comp, s_time, s_flops, s_bytes = (out @ self._KT).tolist()  # 4 x stages
        scale = self._size * m
        flops = sum(s_flops) * scale
        nbytes = sum(s_bytes) * scale
        t_mb = T / m
        touched = tpe = 0.0
        if self._experts is not None:
            e_time, e_comp, touched = self._experts_time(t_mb, feats[2] == 0)
            s_time = [a + b for a, b in zip(s_time, e_time)]
            s_comp = [a + b for a, b in zip(s_comp, e_comp)]
            k, ex, etp = self._top_k, self._experts, self.layout.expert_tp
            tpe = t_mb * k / touched if touched else 0.0
            n_moe = self.model.num_moe_layers * m * etp
            flops += n_moe * t_mb * k * ex.flops_per_assignment
            nbytes += n_moe * (touched * ex.bytes_per_expert + t_mb * k * ex.bytes_per_assignment)
        attn_c, ffn_c = self._comm(t_mb, sent / m, feats[2] == 0)
        s_comm = [a + b for a, b in zip(attn_c, ffn_c)]
        act = t_mb * self._h_bytes / self._size
        links = [lat + act * spb for lat, spb in self._links]
        return (s_time, s_comp, self._ovh, s_comm, links, m,
                flops, nbytes, touched, tpe)

    def pipeline_times(self, batch) -> tuple[list[float], int]:
        """The chain one micro-batch runs through (stage 0, link 0, stage 1, ...), in seconds,
        and the number of micro-batches: the step's flow shop."""
        s_time, _, s_ovh, s_comm, links, m = self._evaluate(batch)[:6]
        chain = []
        for j, (a, b, c) in enumerate(zip(s_time, s_ovh, s_comm)):
            chain.append(a + b + c)
            if j < len(links):
                chain.append(links[j])
        return chain, m

    def cost(self, batch) -> tuple[float, StepCost]:
        """Duration (s) and breakdown of one step of `batch`."""
        if len(batch.num_new_tokens) == 0:
            eff = self.efficiency
            return eff.step_overhead, StepCost(overhead=eff.step_overhead)
        if self.layout.pp == 1:
            return self._cost_one_stage(batch)
        return self._cost_pipeline(batch)

    def cost_as_row(self, batch) -> tuple[float, tuple]:
        """`cost` as (duration, the breakdown as a row in `COST_FIELDS` order): for a caller
        that keeps rows of a cost matrix (the simulator's stretches), without a StepCost made
        and read back on the simulator's path (~1 us a step)."""
        if self.layout.pp == 1 and len(batch.num_new_tokens):
            return self._cost_one_stage(batch, as_row=True)
        duration, cost = self.cost(batch)
        return duration, cost_row(cost)

    def _cost_one_stage(self, batch, as_row: bool = False) -> tuple[float, StepCost]:
        """`cost` without pipeline stages, in scalars: the common case, and the hot path of
        the simulator (tests check it agrees with `_cost_pipeline`). as_row: the breakdown
        as a tuple in `COST_FIELDS` order (`cost_as_row`) instead of a StepCost."""
        eff = self.efficiency
        feats = batch_features(batch, self.decode_threshold)  # _features, without its call
        T = feats[0]
        is_decode = feats[2] == 0
        m = batch.num_micro_batches
        if self.overlap and feats[1] >= 2:
            m = 2  # two micro-batches, each hiding the other's communication
        elif type(m) is not int or m != 1:  # else 1 already (a batch has rows here)
            m = max(1, min(int(m), int(feats[1])))
        # One attention group (most layouts): _busiest_group's answer without the call.
        group, sent = (feats, T) if self._groups == 1 else self._busiest_group(batch, feats)
        out = self._op_out(group, m)
        if group is not feats:
            out[2:] = self._work(feats, group, m, out)
        comp_op, mem_op = out[0], out[1]  # each row's view made once
        bound = comp_op >= mem_op
        np.maximum(comp_op, mem_op, out=mem_op)
        np.multiply(mem_op, bound, out=comp_op)
        comp, time, flops, nbytes = out.dot(self._K0).tolist()  # .dot: see _op_out
        scale = self._size * m
        flops *= scale
        nbytes *= scale
        ovh = self._ovh[0]
        t_mb = T / m
        layers, dense, moe, ar_l, ar_s, xc = self._stages[0]
        g_mb = sent / m
        msg = g_mb * self._h_bytes
        ar = ar_l + msg * ar_s if ar_s else 0.0
        comm = (layers + dense) * ar
        touched = tpe = 0.0
        if self._experts is not None:
            st = self.router.route(t_mb)
            if isinstance(st.rank_load, float):
                tc = st.rank_load * self._kernels.expert_seconds(st, is_decode)
                t = max(tc, st.rank_touched * self._ex_me + st.rank_load * self._ex_ma)
                time += moe * t
                if tc >= t:
                    comp += moe * t
                touched = st.touched
            else:
                e_time, e_comp, touched = self._experts_time(t_mb, is_decode)
                time += e_time[0]
                comp += e_comp[0]
                t = e_time[0] / moe if moe else 0.0
            k, ex = self._top_k, self._experts
            tpe = t_mb * k / touched if touched else 0.0
            n_moe = moe * m * self._etp
            flops += n_moe * t_mb * k * ex.flops_per_assignment
            nbytes += n_moe * (touched * ex.bytes_per_expert + t_mb * k * ex.bytes_per_assignment)
            if self._moe_ar:
                comm += moe * ar
            elif xc is not None:
                comm += moe * xc.time(self._per_gpu_tokens(t_mb, g_mb), is_decode)
        if self.overlap and m == 2:
            share = xc.sm_share(is_decode) if xc is not None else 0.0
            ph, slower = self._phases(out[1], t if self._experts is not None else 0.0, ar, xc,
                                      self._per_gpu_tokens(t_mb, g_mb), is_decode)
            o = two_batch_overlap(comp, time - comp, ovh, comm + moe * slower, ph, share)
            duration = o.duration + eff.step_overhead
            cost = StepCost(
                compute=o.compute, memory=o.memory, communication=o.exposed,
                communication_hidden=o.hidden, overhead=o.overhead + eff.step_overhead,
                flops=flops, bytes=nbytes, experts_touched=touched, tokens_per_expert=tpe,
                bubble_fraction=0.0, padded_tokens=batch.num_padded_tokens)
            return duration, (cost_row(cost) if as_row else cost)
        duration = m * (time + ovh + comm) + eff.step_overhead
        # Positional (compute, memory, communication, overhead, flops, bytes, experts
        # touched, tokens per expert, bubble fraction, padded tokens): attrs binds them
        # faster than keywords, on the path of most simulated steps.
        row = (m * comp, m * (time - comp), m * comm, m * ovh + eff.step_overhead, flops, nbytes,
               touched, tpe, 0.0, batch.num_padded_tokens)
        return duration, (row if as_row else StepCost(*row))

    def _phases(self, op_time, experts, ar, xc, per_gpu, is_decode) -> tuple[Phases, float]:
        """One micro-batch's MoE layer in overlap phases, from the ops' seconds for one layer
        (`op_time`), the routed experts' seconds per layer and the collectives; and the
        seconds a layer's expert transfers take overlapped beyond their time alone."""
        slower = 0.0
        if self._moe_ar or xc is None:
            dispatch, combine = ar, (ar if self._moe_ar else 0.0)
        else:
            dispatch, combine = xc.phases(per_gpu, is_decode)
            f = xc.overlap_slowdown(is_decode)
            slower = (f - 1.0) * (dispatch + combine)
            dispatch, combine = f * dispatch + ar, f * combine
        kov = self.efficiency.kernel_overhead
        return Phases(self._stages[0][2], float(op_time @ self._attn_ops),
                      float(op_time @ self._moe_ops) + experts, kov * self._attn_ops.sum(),
                      kov * (self._moe_ops.sum() + 1.0), dispatch, combine), slower

    def _cost_pipeline(self, batch) -> tuple[float, StepCost]:
        """`cost` through pipeline stages and the links between them, as a flow shop."""
        eff = self.efficiency
        s_time, s_comp, s_ovh, s_comm, links, m, flops, nbytes, touched, tpe = \
            self._evaluate(batch)
        stages = [a + b + c for a, b, c in zip(s_time, s_ovh, s_comm)]
        times = stages + links
        worst = max(times)
        makespan = sum(times) + (m - 1) * worst
        compute = sum(s_comp)
        memory = sum(s_time) - compute
        overhead = sum(s_ovh) + eff.step_overhead
        communication = sum(s_comm) + sum(links)
        if m > 1:  # the critical path runs the bottleneck m - 1 more times
            b = times.index(worst)
            if b < len(stages):
                compute += (m - 1) * s_comp[b]
                memory += (m - 1) * (s_time[b] - s_comp[b])
                overhead += (m - 1) * s_ovh[b]
                communication += (m - 1) * s_comm[b]
            else:
                communication += (m - 1) * links[b - len(stages)]
        bubble = bubble_fraction(stages, m, makespan) if len(stages) > 1 else 0.0
        return makespan + eff.step_overhead, StepCost(
            compute=compute, memory=memory, communication=communication, overhead=overhead,
            flops=flops, bytes=nbytes, experts_touched=touched, tokens_per_expert=tpe,
            bubble_fraction=bubble, padded_tokens=batch.num_padded_tokens)

    def _per_op(self, group) -> np.ndarray:
        """Seconds per op, one pass (no micro-batches), all layers and stages: busiest group."""
        out = self._op_out(group, 1)
        return self._Ktot * (np.maximum(out[0], out[1]) + self.efficiency.kernel_overhead)

    def part_times(self, batch) -> PartTimes:
        """Attention-side and FFN-side seconds of one pass of `batch`, over all layers."""
        feats = self._features(batch)
        if feats[1] == 0:
            return PartTimes(0.0, 0.0, 0.0, 0.0, 0.0)
        group, sent = self._busiest_group(batch, feats)
        per_op = self._per_op(group)
        ffn = float(per_op @ self._part[O.FFN])
        if self._experts is not None:
            e_time = self._experts_time(feats[0], feats[2] == 0)[0]
            ffn += sum(e_time) + self.model.num_moe_layers * self.efficiency.kernel_overhead
        attn_c, ffn_c = self._comm(feats[0], sent, feats[2] == 0)
        return PartTimes(attention=float(per_op @ self._part[O.ATTENTION]), ffn=ffn,
                         head=float(per_op @ self._part[O.HEAD]),
                         attention_comm=sum(attn_c), ffn_comm=sum(ffn_c))

    def explain(self, batch) -> dict[str, float]:
        """Seconds per op name for one pass (no micro-batches), summed over layers and
        stages; routed experts and collectives are listed under their own names."""
        feats = self._features(batch)
        if feats[1] == 0:
            return {}
        out: dict[str, float] = {}
        group, sent = self._busiest_group(batch, feats)
        for name, t in zip(self.op_names, self._per_op(group)):
            out[name] = out.get(name, 0.0) + float(t)
        if self._experts is not None:
            out["routed_experts"] = (sum(self._experts_time(feats[0], feats[2] == 0)[0])
                                     + self.model.num_moe_layers * self.efficiency.kernel_overhead)
        attn_c, ffn_c = self._comm(feats[0], sent, feats[2] == 0)
        out["attention_comm"], out["ffn_comm"] = sum(attn_c), sum(ffn_c)
        return out
