"""A small decoder-only transformer in torch: random weights, KV pool, packing and forward.

Nothing is downloaded: the weights are drawn from a seed (on the CPU, then moved, so CPU and
CUDA runs of one config hold the same weights). The model is Llama-shaped: RMSNorm, rotary
positions, grouped-query attention, and a SwiGLU FFN that is either dense or a mixture of E
experts with top-k routing (softmax over the k chosen router logits, as Mixtral does).

One forward pass runs a whole step of `Batch` rows at once: every row's new tokens are packed
into one token matrix for the projections and the FFN (that is where batching pays), and
attention runs over a [rows x longest query x longest context] layout with a mask, so a row
sees only its own cached keys and, causally, its own new tokens. A padded row (bucketing) and
the padding between rows cost compute but never change a result.

The KV cache is a pool: per layer one [slots x max_len x kv_heads x head_dim] tensor for keys
and one for values, one slot per request, grown by doubling when a request or a batch needs
more. Only this module and the other modules of `batchlab.backends.torch` import torch.
"""

from __future__ import annotations

import math

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import _DTYPES, TransformerConfig, pick_device

class KVPool:
    """Keys and values of every request a device holds, one slot per request."""

    def __init__(self, config: TransformerConfig, device, dtype, num_slots: int = 4,
                 max_len: int = 64):
        self.config, self.device, self.dtype = config, device, dtype
        self.slot_of: dict[int, int] = {}
        self.length: dict[int, int] = {}
        self._free: list[int] = []
        self.k = self.v = None
        self._alloc(num_slots, max_len)
        self._free = list(range(num_slots - 1, -1, -1))

    def _alloc(self, num_slots: int, max_len: int) -> None:
        c = self.config
        shape = (c.num_layers, num_slots, max_len, c.num_kv_heads, c.dim)
        k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        v = torch.zeros(shape, device=self.device, dtype=self.dtype)
        if self.k is not None:
            _, s, n = self.k.shape[:3]
            k[:, :s, :n] = self.k
            v[:, :s, :n] = self.v
        self.k, self.v = k, v

    @property
    def num_slots(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    @property
    def num_tokens(self) -> int:
        return sum(self.length.values())

    def ensure_len(self, max_len: int) -> None:
        if max_len > self.max_len:
            self._alloc(self.num_slots, max(max_len, 2 * self.max_len))

    def slot(self, rid: int) -> int:
        """The slot of request `rid`, allocated (empty) if it has none."""
        s = self.slot_of.get(rid)
        if s is None:
            if not self._free:
                old = self.num_slots
                self._alloc(2 * old, self.max_len)
                self._free = list(range(2 * old - 1, old - 1, -1))
            s = self._free.pop()
            self.slot_of[rid] = s
            self.length[rid] = 0
        return s

    def release(self, rid: int) -> None:
        s = self.slot_of.pop(rid, None)
        if s is not None:
            self.length.pop(rid, None)
            self._free.append(s)

    def export(self, rid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of rid's cached keys and values, [layers x tokens x kv_heads x head_dim]."""
        s, n = self.slot_of[rid], self.length[rid]
        return self.k[:, s, :n].clone(), self.v[:, s, :n].clone()

    def load(self, rid: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Install a cache exported by another pool (moved to this pool's device)."""
        n = k.shape[1]
        self.ensure_len(n)
        s = self.slot(rid)
        self.k[:, s, :n] = k.to(self.device, self.dtype)
        self.v[:, s, :n] = v.to(self.device, self.dtype)
        self.length[rid] = n


@attrs.frozen(slots=True)
class AttnGroup:
    """Rows whose attention runs as one [rows x longest query x longest context] call.

    A step that mixes decodes with prefill chunks runs two groups, so that a decode row is
    not padded to the longest chunk's query length (which made mixed steps cost about as
    much again as their two halves)."""

    tok: torch.Tensor | None  # [Fg] flat indices of the group's fed tokens; None: all tokens
    row: torch.Tensor        # [Fg] row (within the group) of each fed token
    col: torch.Tensor        # [Fg] index of the token within its row
    slots: torch.Tensor      # [Bg] KV pool slot of each row
    mask: torch.Tensor       # [Bg, 1, Fmax * q_per_kv, Lk] bool: which keys each query may
    #                          attend to, each fed token's row repeated for its q_per_kv
    #                          query heads (see TinyTransformer._attend)
    num_rows: int
    max_fed: int
    key_len: int
    is_decode: bool          # every row feeds one real token and no padding: fast path


@attrs.frozen(slots=True)
class Packed:
    """One forward pass's inputs, built from batch rows (see `pack`). All tensors live on the
    model's device; F is the number of token positions fed (padding included), B the rows."""

    ids: torch.Tensor        # [F] token ids
    pos: torch.Tensor        # [F] absolute positions
    row: torch.Tensor        # [F] row of each fed token
    real: torch.Tensor       # [F] bool: a real token (not padding); its K/V is cached
    slots: torch.Tensor      # [B] KV pool slot of each row
    last: torch.Tensor       # [B] flat index of each row's last real token
    groups: tuple            # AttnGroups: one, or decodes and prefills apart
    key_len: int
    is_decode: bool          # every row feeds one real token and no padding


def _group(tok, cached, num_new, num_fed, slots, t, q_per_kv: int = 1) -> AttnGroup:
    rows = len(cached)
    row = np.repeat(np.arange(rows), num_fed)
    start = np.cumsum(num_fed) - num_fed
    col = np.arange(int(num_fed.sum())) - start[row]
    max_fed = int(num_fed.max())
    key_len = int((cached + num_fed).max())
    # A query sees keys up to its own position, and never past its row's last real token
    # (padding queries are clamped there: their outputs are dropped, but no row of the mask
    # may be empty, or softmax would give NaN).
    limit = np.minimum(cached[:, None] + np.arange(max_fed)[None, :],
                       (cached + num_new - 1)[:, None])
    mask = np.arange(key_len)[None, None, :] <= limit[:, :, None]
    if q_per_kv > 1:
        mask = np.repeat(mask, q_per_kv, axis=1)
    return AttnGroup(
        tok=None if tok is None else t(tok), row=t(row), col=t(col), slots=t(slots),
        mask=t(mask[:, None], torch.bool), num_rows=rows, max_fed=max_fed, key_len=key_len,
        is_decode=bool(max_fed == 1 and (num_new == 1).all()))


def pack(ids: np.ndarray, cached: np.ndarray, num_new: np.ndarray, num_fed: np.ndarray,
         slots: np.ndarray, key_len: int, device, q_per_kv: int = 1) -> Packed:
    """Lay out rows for one pass. Row i feeds num_fed[i] tokens at positions cached[i]...,
    of which the first num_new[i] are real (ids holds all fed tokens, row after row).
    q_per_kv: query heads per KV head of the model that will run it (the attention masks
    are laid out for that many queries per fed token)."""
    rows = len(cached)
    total = int(num_fed.sum())
    row = np.repeat(np.arange(rows), num_fed)
    start = np.cumsum(num_fed) - num_fed
    col = np.arange(total) - start[row]
    pos = cached[row] + col
    real = col < num_new[row]
    t = lambda a, dt=torch.long: torch.from_numpy(np.ascontiguousarray(a)).to(device, dt)
    single = num_fed == 1
    if single.all() or not single.any():
        groups = (_group(None, cached, num_new, num_fed, slots, t, q_per_kv),)
    else:
        groups = tuple(
            _group(np.flatnonzero(which[row]), cached[which], num_new[which], num_fed[which],
                   slots[which], t, q_per_kv)
            for which in (single, ~single))
    return Packed(
        ids=t(ids), pos=t(pos), row=t(row), real=t(real, torch.bool), slots=t(slots),
        last=t(start + num_new - 1), groups=groups, key_len=int(key_len),
        is_decode=bool((num_fed == 1).all()))


# Attention kernels the forward pass may use: any but cuDNN's. cuDNN's builds an execution
# plan for each new shape on the host, and a decode step's key length grows by one every
# step: on an H200 (torch 2.11) each call took 22 ms of host time for 12 us on the GPU,
# so a decode step of a 2-layer model took 56 ms whatever the batch.
_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
_ENABLED = {SDPBackend.FLASH_ATTENTION: torch.backends.cuda.flash_sdp_enabled,
            SDPBackend.EFFICIENT_ATTENTION: torch.backends.cuda.mem_efficient_sdp_enabled,
            SDPBackend.MATH: torch.backends.cuda.math_sdp_enabled}


def _attention_backends() -> list:
    """Of _ATTENTION, those the caller has not switched off (an outer `sdpa_kernel` is
    respected; math if nothing else is left). `sdpa_kernel` sets process-wide switches for
    the duration of a step: run one device's steps at a time per process (as the engines do)."""
    return [b for b in _ATTENTION if _ENABLED[b]()] or [SDPBackend.MATH]


class TinyTransformer:
    """Weights of a TransformerConfig on one torch device, and the forward pass."""

    def __init__(self, config: TransformerConfig, device=None):
        self.config = c = config
        self.device = pick_device(device) if not isinstance(device, torch.device) else device
        self.dtype = _DTYPES[c.dtype]
        g = torch.Generator().manual_seed(c.seed)
        h, d, L = c.hidden_size, c.dim, c.num_layers

        def w(*shape, fan_in):
            x = torch.randn(*shape, generator=g, dtype=torch.float64) / math.sqrt(fan_in)
            return x.to(self.device, self.dtype)

        self.embed = w(c.vocab_size, h, fan_in=1)
        qkv = (c.num_heads + 2 * c.num_kv_heads) * d
        self.w_qkv = [w(h, qkv, fan_in=h) for _ in range(L)]
        self.w_o = [w(c.num_heads * d, h, fan_in=c.num_heads * d) for _ in range(L)]
        ones = lambda: torch.ones(h, device=self.device, dtype=self.dtype)
        self.attn_norm = [ones() for _ in range(L)]
        self.ffn_norm = [ones() for _ in range(L)]
        self.final_norm = ones()
        if c.is_moe:
            e, i = c.num_experts, c.expert_size
            self.router = [w(h, e, fan_in=h) for _ in range(L)]
            self.w_gate_up = [w(e, h, 2 * i, fan_in=h) for _ in range(L)]
            self.w_down = [w(e, i, h, fan_in=i) for _ in range(L)]
        else:
            i = c.intermediate_size
            self.w_gate_up = [w(h, 2 * i, fan_in=h) for _ in range(L)]
            self.w_down = [w(i, h, fan_in=i) for _ in range(L)]
        self.lm_head = w(h, c.vocab_size, fan_in=h)
        self._rope_len = 0
        self._ensure_rope(256)

    @property
    def num_params(self) -> int:
        tensors = [self.embed, self.lm_head, self.final_norm, *self.w_qkv, *self.w_o,
                   *self.attn_norm, *self.ffn_norm, *self.w_gate_up, *self.w_down,
                   *getattr(self, "router", [])]
        return sum(t.numel() for t in tensors)

    def new_pool(self) -> KVPool:
        return KVPool(self.config, self.device, self.dtype)

    def _ensure_rope(self, n: int) -> None:
        if n <= self._rope_len:
            return
        n = max(n, 2 * self._rope_len)
        d = self.config.dim
        inv = 1.0 / self.config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        angles = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
        self._cos = angles.cos().to(self.device, self.dtype)
        self._sin = angles.sin().to(self.device, self.dtype)
        self._rope_len = n

    def _rms(self, x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight

    def _rope(self, x, cos, sin):
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)

    def _ffn(self, layer: int, x) -> tuple[torch.Tensor, int]:
        """FFN output and, for MoE, the number of distinct experts that got tokens."""
        if not self.config.is_moe:
            gate, up = (x @ self.w_gate_up[layer]).chunk(2, dim=-1)
            return (F.silu(gate) * up) @ self.w_down[layer], 0
        c = self.config
        k = c.num_experts_per_tok
        top_logits, top = (x @ self.router[layer]).topk(k, dim=-1)
        weight = top_logits.softmax(dim=-1)
        flat = top.reshape(-1)
        order = torch.argsort(flat, stable=True)  # assignments grouped by expert
        token = order // k
        wsorted = weight.reshape(-1)[order]
        counts = torch.bincount(flat, minlength=c.num_experts).tolist()
        out = torch.zeros_like(x)
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            tok = token[start:start + n]
            gate, up = (x[tok] @ self.w_gate_up[layer][e]).chunk(2, dim=-1)
            y = (F.silu(gate) * up) @ self.w_down[layer][e]
            out.index_add_(0, tok, y * wsorted[start:start + n, None])
            start += n
        return out, sum(1 for n in counts if n)

    def _attend(self, layer: int, q, g: AttnGroup, pool: KVPool):
        """Attention output [Fg x heads*head_dim] of one group's queries q [Fg x heads x d].

        Grouped-query attention runs as plain multi-head attention over the KV heads: the
        G = heads / kv_heads query heads that share a KV head are folded into the query
        length ([B, KV, Fmax*G, d] against [B, KV, Lk, d]; the mask repeats each fed token's
        row G times). torch's own `enable_gqa` with a mask runs only on its math kernel,
        which copies the keys out to every query head: on an H200 that made a decode step
        grow linearly with the batch (125 ms for 256 rows of Llama-3-8B's 8 layers,
        docs/backend.md); folded, the fused memory-efficient kernel takes the mask (14 ms).
        The price: the mask holds G rows per fed token (on a CPU, where torch's fused
        kernel took `enable_gqa` with a mask, a prefill's mask is G times larger than it
        was; still far below the scores the math kernel materialised on a GPU)."""
        c = self.config
        H, KV, d = c.num_heads, c.num_kv_heads, c.dim
        G = c.q_per_kv
        B, Fm, Lk = g.num_rows, g.max_fed, g.key_len
        keys = pool.k[layer, g.slots, :Lk].transpose(1, 2)    # [B, KV, Lk, d]
        values = pool.v[layer, g.slots, :Lk].transpose(1, 2)
        if g.is_decode:
            queries = q.view(B, 1, H, d)
        else:
            queries = q.new_zeros(B, Fm, H, d)
            queries[g.row, g.col] = q
        # [B, Fm, KV, G, d] -> [B, KV, Fm*G, d]: query f*G + j is fed token f's head kv*G + j
        folded = queries.view(B, Fm, KV, G, d).transpose(1, 2).reshape(B, KV, Fm * G, d)
        out = F.scaled_dot_product_attention(folded, keys, values, attn_mask=g.mask)
        out = out.view(B, KV, Fm, G, d).transpose(1, 2)      # [B, Fm, KV, G, d]
        return out.reshape(B, H * d) if g.is_decode else out[g.row, g.col].reshape(-1, H * d)

    @torch.inference_mode()
    def forward(self, p: Packed, pool: KVPool) -> tuple[torch.Tensor, float]:
        """Logits of each row's last real token [B x vocab], and the mean number of distinct
        experts that received tokens per MoE layer (0 for a dense model). Writes the real
        tokens' keys and values into the pool."""
        Lk = p.key_len
        self._ensure_rope(max(Lk, int(p.pos.max()) + 1))
        pool.ensure_len(Lk)
        cos, sin = self._cos[p.pos][:, None, :], self._sin[p.pos][:, None, :]
        all_real = p.is_decode or bool(p.real.all())
        w_slot = p.slots[p.row] if all_real else p.slots[p.row[p.real]]
        w_pos = p.pos if all_real else p.pos[p.real]
        x = self.embed[p.ids]
        with sdpa_kernel(_attention_backends()):
            return self._layers(p, pool, x, cos, sin, w_slot, w_pos, all_real)

    def _layers(self, p: Packed, pool: KVPool, x, cos, sin, w_slot, w_pos, all_real):
        """`forward` from the embeddings on: every layer, then the last rows' logits."""
        c = self.config
        H, KV, d = c.num_heads, c.num_kv_heads, c.dim
        touched = 0
        for layer in range(c.num_layers):
            q, k, v = (self._rms(x, self.attn_norm[layer]) @ self.w_qkv[layer]).split(
                [H * d, KV * d, KV * d], dim=-1)
            q = self._rope(q.view(-1, H, d), cos, sin)
            k = self._rope(k.view(-1, KV, d), cos, sin)
            v = v.view(-1, KV, d)
            if all_real:
                pool.k[layer, w_slot, w_pos] = k
                pool.v[layer, w_slot, w_pos] = v
            else:
                pool.k[layer, w_slot, w_pos] = k[p.real]
                pool.v[layer, w_slot, w_pos] = v[p.real]
            if len(p.groups) == 1:
                out = self._attend(layer, q, p.groups[0], pool)
            else:
                out = q.new_empty(q.shape[0], H * d)
                for g in p.groups:
                    out[g.tok] = self._attend(layer, q[g.tok], g, pool)
            x = x + out @ self.w_o[layer]
            y, n = self._ffn(layer, self._rms(x, self.ffn_norm[layer]))
            x = x + y
            touched += n
        last = self._rms(x[p.last], self.final_norm)
        return last @ self.lm_head, touched / c.num_layers


# The name the backend's issue uses for the config.
TinyConfig = TransformerConfig  # the name the torch backend's issue used
