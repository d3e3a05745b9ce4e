"""Mixture-of-experts routing: how many experts a batch touches, and how unevenly.

With B tokens each routed to k of E experts, an expert is missed by one token with
probability 1 - k/E, so the expected number of distinct experts touched is
    E * (1 - (1 - k/E)^B),
which is k for one token and tends to E as B grows: a small batch reads only a few experts'
weights (cheap) but feeds each one or two tokens (wasteful); a large batch reads all of them.

Experts are spread over `ep` ranks; the layer waits for the busiest rank. In "expected" mode
the busiest rank's load is the mean plus the usual extreme-value term of a sum of
independent choices, mu + sigma * sqrt(2 ln ep) (mu = Bk/ep, sigma^2 = Bk(1/ep)(1-1/ep)),
capped at what one rank can receive; its distinct experts follow from the same formula at
the tokens that load implies. "sampled" mode draws the routing of every MoE layer each step
from a seeded generator instead: exactly k distinct experts for a single token, and for more
tokens each rank's load (multinomial) and its distinct experts (normal approximation of the
occupancy distribution), which costs layers x ranks draws per step instead of layers x
experts.

`skew` > 0 makes some experts more popular than others (Zipf weights over a seeded random
order of the experts), which is what real routers show; 0 is uniform routing.

`redundant` > 0 places copies of experts as DeepSeek's expert-parallel load balancer (EPLB,
github.com/deepseek-ai/EPLB) does: each copy goes to the expert with the highest load per
copy so far, a copy takes an equal share of its expert's tokens, and the E + N slots are
packed onto the ranks heaviest first, each to the least loaded rank with a free slot. Every
rank is then evaluated (as with skew) and the slowest counts.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from batchlab.core import ConfigError



def expected_experts_touched(num_experts: int, top_k: int, num_tokens: float) -> float:
    """E (1 - (1 - k/E)^B): expected distinct experts that B tokens routed top-k reach."""
    if num_tokens <= 0:
        return 0.0
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** num_tokens)


def _inclusion(p: np.ndarray, k: int) -> np.ndarray:
    """Chance that one token picks each expert among its k: min(1, c p), with c chosen so the
    chances sum to k (a token always picks exactly k experts, however skewed the router)."""
    c = float(k)
    for _ in range(100):
        q = np.minimum(1.0, c * p)
        if abs(q.sum() - k) < 1e-12:
            break
        free = q < 1.0
        c = (k - (~free).sum()) / p[free].sum()
    return q


@attrs.frozen(slots=True)
class RouteStats:
    """Routing of one micro-batch. Floats in expected mode; per-layer arrays when sampled.

    touched: distinct routed experts with at least one token (per layer).
    rank_load: token-expert assignments on each EP rank; rank_touched: distinct experts there.
    Uniform expected routing gives floats for the busiest rank (all layers alike); skewed
    expected routing gives arrays of shape (1, ep) (all layers alike); sampled routing gives
    (layers,) and (layers, ep).
    """

    touched: object
    rank_load: object
    rank_touched: object


@attrs.define(eq=False)
class Router:
    """Routing statistics for one device; holds the seeded generator of sampled mode."""

    num_experts: int
    top_k: int
    ep: int
    num_layers: int
    mode: str = "expected"
    skew: float = 0.0
    seed: int = 0
    redundant: int = 0
    _rng: np.random.Generator = attrs.field(init=False, repr=False)
    _p: np.ndarray = attrs.field(init=False, repr=False)
    _q: np.ndarray = attrs.field(init=False, repr=False)
    _q_rank: np.ndarray = attrs.field(init=False, repr=False)
    _memo: dict = attrs.field(init=False, repr=False, factory=dict)
    _rank_share: np.ndarray = attrs.field(init=False, repr=False)
    _inner: np.ndarray = attrs.field(init=False, repr=False)
    _expert_rank: object = attrs.field(init=False, repr=False, default=None)

    def __attrs_post_init__(self):
        if self.mode not in ("expected", "sampled"):
            raise ConfigError(f"routing mode {self.mode!r} is unknown; use 'expected' "
                              "(closed form) or 'sampled' (seeded draws every step)")
        if not (isinstance(self.skew, (int, float)) and math.isfinite(self.skew)
                and self.skew >= 0):
            raise ConfigError(f"routing skew must be a finite number >= 0, not {self.skew!r}")
        self._rng = np.random.default_rng(self.seed)
        order = np.random.default_rng([self.seed, 7919]).permutation(self.num_experts)
        w = (1.0 + order) ** -float(self.skew)
        self._p = w / w.sum()
        self._q = _inclusion(self._p, self.top_k)
        if self.redundant:
            self._q_rank, self._expert_rank = _place(self._q, self.redundant, self.ep)
        else:
            self._q_rank = self._q.reshape(self.ep, -1)
        self._rank_share = self._q_rank.sum(axis=1) / self.top_k
        self._inner = self._q_rank / self._q_rank.sum(axis=1, keepdims=True)

    @property
    def experts_per_rank(self) -> int:
        """Expert slots per rank (redundant copies included)."""
        return (self.num_experts + self.redundant) // self.ep

    def route(self, num_tokens: float) -> RouteStats:
        if self.mode == "sampled":
            return self._sampled(int(round(num_tokens)))
        # expected routing depends on the token count alone, and steps repeat counts a lot
        stats = self._memo.get(num_tokens)
        if stats is None:
            if len(self._memo) > 65536:
                self._memo.clear()
            stats = (self._expected_uniform(num_tokens)
                     if self.skew == 0 and not self.redundant
                     else self._expected_skewed(num_tokens))
            self._memo[num_tokens] = stats
        return stats

    # ---- expected ------------------------------------------------------------------------
    def _busiest_load(self, mu: float, share: float, num_tokens: float) -> float:
        sigma = math.sqrt(num_tokens * self.top_k * share * (1.0 - share))
        cap = num_tokens * min(self.top_k, self.experts_per_rank)
        return min(cap, mu + sigma * math.sqrt(2.0 * math.log(self.ep)))

    def _expected_uniform(self, num_tokens: float) -> RouteStats:
        e, k, ep = self.num_experts, self.top_k, self.ep
        touched = expected_experts_touched(e, k, num_tokens)
        if ep == 1:
            return RouteStats(touched, num_tokens * k, touched)
        mu = num_tokens * k / ep
        load = self._busiest_load(mu, 1.0 / ep, num_tokens)
        eff_tokens = num_tokens * load / mu if mu > 0 else 0.0
        rank_touched = expected_experts_touched(e, k, eff_tokens) / ep
        return RouteStats(touched, load, rank_touched)

    def _expected_skewed(self, num_tokens: float) -> RouteStats:
        """Every rank: its expected load (plus the fluctuation term) and distinct experts;
        the step model takes the slowest, which may be the busiest or the widest rank."""
        if num_tokens <= 0:
            z = np.zeros((1, self.ep))
            return RouteStats(np.zeros(1), z, z)
        touched = self.num_experts - float(((1.0 - self._q) ** num_tokens).sum())
        share = self._q_rank.sum(axis=1) / self.top_k  # each rank's share of assignments
        mu = num_tokens * self.top_k * share
        sigma = np.sqrt(num_tokens * self.top_k * share * (1.0 - share))
        cap = num_tokens * min(self.top_k, self.experts_per_rank)
        load = np.minimum(cap, mu + sigma * math.sqrt(2.0 * math.log(self.ep)))
        eff = (num_tokens * load / np.maximum(mu, 1e-300))[:, None]
        rank_touched = self.experts_per_rank - ((1.0 - self._q_rank) ** eff).sum(axis=1)
        return RouteStats(np.array([touched]), load[None, :], rank_touched[None, :])

    # ---- sampled -------------------------------------------------------------------------
    def _sampled(self, num_tokens: int) -> RouteStats:
        layers, k, ep = self.num_layers, self.top_k, self.ep
        if num_tokens <= 0:
            z = np.zeros((layers, ep))
            return RouteStats(np.zeros(layers), z, z)
        if num_tokens == 1:
            return self._sampled_one()
        # Several tokens: draw how many assignments each rank gets (per layer), then how many
        # distinct experts that many assignments reach on the rank, from the normal
        # approximation of the occupancy distribution (mean and variance of the number of
        # bins l balls hit). Drawing every expert's count would cost layers x experts
        # variates a step; this costs layers x ranks, and agrees closely with it. A token's
        # chance to pick an expert is its inclusion probability q (k distinct per token).
        loads = (self._rng.multinomial(num_tokens * k, self._rank_share, size=layers)
                 if ep > 1 else np.full((layers, 1), num_tokens * k))
        per = self.experts_per_rank
        stay = 1.0 - 1.0 / per
        if self.skew == 0 and not self.redundant:
            mean = per * (1.0 - stay ** loads)
        else:  # popularity inside each rank: experts' shares of their rank's assignments
            mean = per - ((1.0 - self._inner[None]) ** loads[..., None]).sum(axis=2)
        var = (per * (per - 1) * (1.0 - 2.0 / per) ** loads + per * stay ** loads
               - (per * stay ** loads) ** 2) if per > 1 else np.zeros(loads.shape)
        touched = np.rint(mean + np.sqrt(np.maximum(var, 0.0))
                          * self._rng.standard_normal(loads.shape))
        touched = np.clip(touched, np.minimum(loads, 1), np.minimum(loads, per)).astype(float)
        return RouteStats(touched.sum(axis=1), loads.astype(float), touched)

    def _sampled_one(self) -> RouteStats:
        """One token: exactly k distinct experts per layer, drawn by popularity."""
        layers, e, k, ep = self.num_layers, self.num_experts, self.top_k, self.ep
        if self.redundant:  # an expert's copies share its token: expected split over ranks
            keys = np.log(self._p) - np.log(-np.log(self._rng.random((layers, e))))
            chosen = np.argpartition(-keys, k - 1, axis=1)[:, :k]
            hit = np.zeros((layers, e))
            np.put_along_axis(hit, chosen, 1.0, axis=1)
            loads = hit @ self._expert_rank
            return RouteStats(np.full(layers, float(k)), loads, loads)
        if self.skew == 0:  # a uniform k-subset: ranks' shares are multivariate hypergeometric
            loads = self._rng.multivariate_hypergeometric(
                [self.experts_per_rank] * ep, k, size=layers).astype(float)
        else:  # Gumbel top-k over the popularity weights
            keys = np.log(self._p) - np.log(-np.log(self._rng.random((layers, e))))
            chosen = np.argpartition(-keys, k - 1, axis=1)[:, :k]
            hit = np.zeros((layers, e))
            np.put_along_axis(hit, chosen, 1.0, axis=1)
            loads = hit.reshape(layers, ep, -1).sum(axis=2)
        return RouteStats(np.full(layers, float(k)), loads, loads)


def _place(q: np.ndarray, redundant: int, ep: int) -> tuple[np.ndarray, np.ndarray]:
    """EPLB-style placement of E experts and `redundant` copies on `ep` ranks: each rank's
    slots' inclusion chances (ep x slots per rank), and each expert's share on each rank
    (E x ep)."""
    e = len(q)
    copies = np.ones(e)
    for _ in range(redundant):  # a copy for the expert with the most load per copy
        copies[int(np.argmax(q / copies))] += 1
    slot_q = np.repeat(q / copies, copies.astype(int))
    slot_expert = np.repeat(np.arange(e), copies.astype(int))
    per = len(slot_q) // ep
    rank_load, rank_used = np.zeros(ep), np.zeros(ep, int)
    q_rank = np.zeros((ep, per))
    expert_rank = np.zeros((e, ep))
    for s in np.argsort(-slot_q, kind="stable"):  # heaviest first, to the lightest free rank
        free = np.where(rank_used < per, rank_load, np.inf)
        r = int(np.argmin(free))
        q_rank[r, rank_used[r]] = slot_q[s]
        expert_rank[slot_expert[s], r] += 1.0 / copies[slot_expert[s]]
        rank_load[r] += slot_q[s]
        rank_used[r] += 1
    return q_rank, expert_rank
