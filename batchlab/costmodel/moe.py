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
from a seeded generator instead (exactly top-k distinct experts per token for small batches, a
multinomial for large ones, where the difference vanishes).

`skew` > 0 makes some experts more popular than others (Zipf weights over a seeded random
order of the experts), which is what real routers show; 0 is uniform routing.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from batchlab.core import ConfigError

_EXACT_LIMIT = 1 << 16  # layers * tokens * experts below which sampling is exact top-k


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
    _rng: np.random.Generator = attrs.field(init=False, repr=False)
    _p: np.ndarray = attrs.field(init=False, repr=False)
    _q: np.ndarray = attrs.field(init=False, repr=False)
    _q_rank: np.ndarray = attrs.field(init=False, repr=False)
    _memo: dict = attrs.field(init=False, repr=False, factory=dict)

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
        self._q_rank = self._q.reshape(self.ep, -1)

    @property
    def experts_per_rank(self) -> int:
        return self.num_experts // self.ep

    def route(self, num_tokens: float) -> RouteStats:
        if self.mode == "sampled":
            return self._sampled(int(round(num_tokens)))
        # expected routing depends on the token count alone, and steps repeat counts a lot
        stats = self._memo.get(num_tokens)
        if stats is None:
            if len(self._memo) > 65536:
                self._memo.clear()
            stats = (self._expected_uniform(num_tokens) if self.skew == 0
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
        layers, e, k = self.num_layers, self.num_experts, self.top_k
        if num_tokens <= 0:
            z = np.zeros((layers, self.ep))
            return RouteStats(np.zeros(layers), z, z)
        if layers * num_tokens * e <= _EXACT_LIMIT:
            # Gumbel top-k: exactly k distinct experts per token, drawn by popularity
            keys = np.log(self._p) - np.log(-np.log(self._rng.random((layers, num_tokens, e))))
            chosen = np.argpartition(-keys, k - 1, axis=2)[:, :, :k].reshape(layers, -1)
            offsets = (np.arange(layers) * e)[:, None]
            counts = np.bincount((chosen + offsets).ravel(), minlength=layers * e)
            counts = counts.reshape(layers, e)
        else:
            counts = self._rng.multinomial(num_tokens * k, self._p, size=layers)
        hit = counts > 0
        per_rank = counts.reshape(layers, self.ep, -1)
        return RouteStats(hit.sum(axis=1).astype(float), per_rank.sum(axis=2).astype(float),
                          hit.reshape(layers, self.ep, -1).sum(axis=2).astype(float))
