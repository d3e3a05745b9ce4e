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
