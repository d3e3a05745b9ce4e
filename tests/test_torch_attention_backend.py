"""The torch backend's attention must not run on cuDNN: cuDNN builds an execution plan on the
host for every new shape, and a decode step's key length is new every step (on an H200 that
cost 22 ms of host time per call; docs/backend.md). CPU-only machines cannot run cuDNN, so
the test checks the switch torch's dispatcher reads while attention runs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from batchlab.backends.torch import model as model_module  # noqa: E402
from batchlab.backends.torch.device import TorchDevice  # noqa: E402
from batchlab.core import Batch  # noqa: E402


def test_attention_runs_with_cudnn_switched_off(monkeypatch):
    seen = []
    real = model_module.F.scaled_dot_product_attention

    def spy(*args, **kw):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return real(*args, **kw)

    monkeypatch.setattr(model_module.F, "scaled_dot_product_attention", spy)
    before = torch.backends.cuda.cudnn_sdp_enabled()
    dev = TorchDevice("a", "tiny-dense", 4096, device="cpu")
    for rid in (0, 1):
        dev.register(rid, 8)
    dev.run(Batch([0, 1], [8, 8], [0, 0]))
    dev.run(Batch.decode(np.array([0, 1]), np.array([8, 8])))
    assert seen and not any(seen)
    assert torch.backends.cuda.cudnn_sdp_enabled() == before  # restored after the step


def test_an_outer_choice_of_attention_kernel_is_respected(monkeypatch):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    seen = []
    real = model_module.F.scaled_dot_product_attention

    def spy(*args, **kw):
        seen.append((torch.backends.cuda.flash_sdp_enabled(),
                     torch.backends.cuda.math_sdp_enabled()))
        return real(*args, **kw)

    monkeypatch.setattr(model_module.F, "scaled_dot_product_attention", spy)
    dev = TorchDevice("a", "tiny-dense", 4096, device="cpu")
    dev.register(0, 8)
    with sdpa_kernel(SDPBackend.MATH):
        dev.run(Batch([0], [8], [0]))
    assert seen and all(s == (False, True) for s in seen)


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (8, 2), (6, 6)])
def test_grouped_query_attention_matches_a_per_head_reference(heads, kv_heads):
    """The folded grouped-query attention (query heads sharing a KV head run as one longer
    query) gives what each head gets alone: softmax over its own KV head's keys up to its
    position. Decodes and prefill chunks over cached context, mixed in one step."""
    from batchlab.backends.torch.config import TransformerConfig
    from batchlab.backends.torch.model import TinyTransformer, pack

    cfg = TransformerConfig("gqa", hidden_size=heads * 8, num_heads=heads,
                            num_kv_heads=kv_heads, num_layers=1)
    m = TinyTransformer(cfg, "cpu")
    pool = m.new_pool()
    gen = torch.Generator().manual_seed(0)
    cached = np.array([5, 0, 3, 9])     # rows 0 and 3 decode; row 1 a prompt; row 2 a chunk
    num_new = np.array([1, 6, 4, 1])
    num_fed = np.array([1, 7, 4, 1])    # row 1 carries one padding token
    for rid in range(4):
        pool.slot(rid)
    key_len = int((cached + num_fed).max())
    pool.ensure_len(key_len)
    pool.k.copy_(torch.randn(pool.k.shape, generator=gen))
    pool.v.copy_(torch.randn(pool.v.shape, generator=gen))
    slots = np.array([pool.slot(r) for r in range(4)])
    p = pack(np.zeros(int(num_fed.sum()), np.int64), cached, num_new, num_fed, slots, key_len,
             "cpu", q_per_kv=heads // kv_heads)
    d = cfg.dim
    q = torch.randn(int(num_fed.sum()), heads, d, generator=gen)
    out = torch.empty(q.shape[0], heads * d)
    for g in p.groups:
        tok = slice(None) if g.tok is None else g.tok
        out[tok] = m._attend(0, q[tok], g, pool)

    start = np.cumsum(num_fed) - num_fed
    for i in range(4):
        for f in range(num_new[i]):          # padding tokens' outputs are dropped
            pos = cached[i] + f
            for h in range(heads):
                kvh = h // (heads // kv_heads)
                keys = pool.k[0, slots[i], :pos + 1, kvh]
                vals = pool.v[0, slots[i], :pos + 1, kvh]
                w = torch.softmax(keys @ q[start[i] + f, h] / d ** 0.5, dim=0)
                want = w @ vals
                got = out[start[i] + f, h * d:(h + 1) * d]
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
