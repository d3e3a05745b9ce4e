"""`ExpertComm`: the dispatch and combine of expert parallelism, priced as DeepEP runs them.

A MoE layer under expert parallelism sends each token to the GPUs holding its top-k experts
(dispatch) and brings the k results back (combine). DeepEP, the library DeepSeek serves
DeepSeek-V3 with (github.com/deepseek-ai/DeepEP), has two modes, and SGLang's
`--deepep-mode auto` picks the low-latency one for decode batches and the high-throughput
one for batches with prefill; so does this model:

- low-latency (decode): every GPU writes each of its token's k copies straight into the
  receiving GPU's buffer, to all peers at once: same-server peers over NVLink, the others
  through the GPU's own NIC. Time = one path latency + the busiest link's bytes / bandwidth.
  It runs on no SMs (the receive is a hook), so it takes nothing from the computation it
  overlaps.
- high-throughput (prefill): a token crosses the network once per *server* that holds one of
  its experts (to the GPU of the same rail there), then is forwarded over NVLink to the GPUs
  that need it. NIC bytes per token = expected distinct remote servers among k draws; NVLink
  carries the forwarded copies; the busier of the two bounds the transfer. It runs on SMs
  (`HT_SMS` of them), which the overlapped computation loses, and it runs slower while
  overlapped than alone (`Efficiency.overlapped_communication`, source below).

Dispatch is sent in FP8 when the model's weights are FP8 (DeepSeek-V3: 1 byte per value plus
one fp32 scale per 128 values, the 1x128 tile quantisation of the technical report, sec.
3.3), combine in the activation dtype (BF16). The link bandwidths and latencies come from the
cluster graph (`topology.py`), the achieved share of them from `Efficiency.communication`.

Against DeepEP's published low-latency table (H800, CX7 400 Gb/s, 128 tokens per GPU, top-8,
hidden 7168, FP8 dispatch, BF16 combine; docs/legacy.md of the repository): EP128 dispatch
192 us, combine 369 us; this model with the default 0.75 communication efficiency gives 189
and 372 us for each alone (194 and 372 us as `phases` splits one layer's `time`, the two path
latencies shared evenly); tests/test_costmodel_scale.py holds it within 15% of that table.
"""

from __future__ import annotations

import attrs

from .models import ModelConfig
from .topology import Cluster

# DeepSeek-V3 technical report (arXiv 2412.19437), sec. 3.2.2: "only 20 SMs are sufficient to
# fully utilize the bandwidths of IB and NVLink" for the dispatch/combine kernels.
HT_SMS = 20
# The high-throughput kernels under two-batch overlap take 1.32x their time alone (the default
# `Efficiency.overlapped_communication` is its inverse). SGLang's prefill breakdown ("Deploying
# DeepSeek with PD Disaggregation and Large-scale Expert Parallelism on 96 H100 GPUs", LMSYS
# blog, 2025-05-05): "Both DeepSeek and SGLang have a communication time slower than unit test
# results, while the latter is achievable when disabling TBO"; the blog's figures with the
# times are images. The factor is fitted to the same blog's ablation of overlap (prefill +27%
# to +35% over no overlap at the same tokens per GPU, EP32 on H100): at 8K tokens/GPU the model
# gains the middle of that range, 31%, at 1.32 (27% at 1.38, 35% at 1.27). DeepSeek's prefill
# profile (62,713 tokens/s per node as the blog reads it) is not used in the fit: it is the
# check (docs/costmodel.md). The low-latency decode kernels are not slowed: DeepSeek's decode
# profile has them at DeepEP's published standalone times (187 + 394 us against 192 + 369 us).
FP8_SCALE_GROUP = 128  # values per fp32 scale in FP8 dispatch (tech report sec. 3.3)


@attrs.frozen(slots=True)
class ExpertComm:
    """Seconds of one dispatch + combine, per token per GPU, in each DeepEP mode."""

    ll_latency: float      # low-latency mode: dispatch + combine, fixed part (s)
    ll_per_token: float    # low-latency mode: s per token dispatched from one GPU
    ht_latency: float
    ht_per_token: float
    ht_sm_share: float     # share of a GPU's SMs the high-throughput kernels occupy
    dispatch_share: float = 0.5  # dispatch's share of the bytes (FP8 out, BF16 back: ~1/3)
    ht_overlap_slowdown: float = 1.0  # high-throughput time overlapped over time alone

    @classmethod
    def build(cls, cluster: Cluster, group, model: ModelConfig, communication: float,
              overlapped: float = 1.0) -> "ExpertComm":
        """communication: the achieved share of link bandwidth; overlapped: the share of
        their speed alone the high-throughput transfers keep under two-batch overlap."""
        group = list(group)
        n = len(group)
        h, k = model.hidden_size, model.num_experts_per_tok
        if model.weight_dtype == "fp8":
            dispatch = h * 1 + h / FP8_SCALE_GROUP * 4
        else:
            dispatch = h * model.act_bytes
        combine = h * model.act_bytes
        both = dispatch + combine
        # low-latency: k copies of a token spread over the n GPUs; the graph prices the
        # busiest link of an all-to-all of that payload (NIC for remote, NVLink for local)
        a2a = cluster.all_to_all(group)
        ll_per_token = k * both * a2a.seconds_per_byte / communication
        ll_latency = 2.0 * a2a.latency
        # high-throughput: once per remote server over the NIC, then NVLink forwarding
        servers: dict[int, list[int]] = {}
        for g in group:
            servers.setdefault(cluster.server_of(g), []).append(g)
        num_servers = len(servers)
        per_server = n / num_servers
        # a token's k experts land on a given other server with chance 1 - (1 - 1/S)^k
        remote = (num_servers - 1) * (1.0 - (1.0 - 1.0 / num_servers) ** k)
        # copies that reach a server go on to the GPUs holding their experts; all but the
        # rail GPU's share cross NVLink (from the sender itself for the home server)
        forwarded = k * (per_server - 1) / per_server
        first = group[0]
        local = [g for g in servers[cluster.server_of(first)] if g != first]
        nvl = cluster.p2p(first, local[0]) if local else None
        far = [g for g in group if cluster.server_of(g) != cluster.server_of(first)]
        nic = cluster.p2p(first, far[0]) if far else None
        t_nic = remote * nic.seconds_per_byte if nic else 0.0
        t_nvl = forwarded * nvl.seconds_per_byte if nvl else 0.0
        ht_per_token = both * max(t_nic, t_nvl) / communication
        ht_latency = 2.0 * ((nic.latency if nic else 0.0) + (nvl.latency if nvl else 0.0))
        sms = cluster.gpu.num_sms
        share = min(HT_SMS / sms, 0.5) if sms else 0.0
        return cls(ll_latency, ll_per_token, ht_latency, ht_per_token, share,
                   dispatch / both, 1.0 / overlapped)

    def time(self, tokens_per_gpu: float, is_decode: bool) -> float:
        """Dispatch + combine seconds of one MoE layer for `tokens_per_gpu` tokens each GPU
        routes; the low-latency kernels for decode batches, high-throughput otherwise."""
        if tokens_per_gpu <= 0:
            return 0.0
        if is_decode:
            return self.ll_latency + tokens_per_gpu * self.ll_per_token
        return self.ht_latency + tokens_per_gpu * self.ht_per_token

    def phases(self, tokens_per_gpu: float, is_decode: bool) -> tuple[float, float]:
        """`time` split into (dispatch, combine): each pays one path latency, and the bytes
        in proportion (dispatch in FP8 where the weights are, combine in BF16)."""
        if tokens_per_gpu <= 0:
            return 0.0, 0.0
        latency, per_token = ((self.ll_latency, self.ll_per_token) if is_decode
                              else (self.ht_latency, self.ht_per_token))
        sent = tokens_per_gpu * per_token
        return (0.5 * latency + self.dispatch_share * sent,
                0.5 * latency + (1.0 - self.dispatch_share) * sent)

    def sm_share(self, is_decode: bool) -> float:
        """Share of SMs the communication kernels take while they run."""
        return 0.0 if is_decode else self.ht_sm_share

    def overlap_slowdown(self, is_decode: bool) -> float:
        """How many times its time alone dispatch and combine take under two-batch overlap."""
        return 1.0 if is_decode else self.ht_overlap_slowdown
