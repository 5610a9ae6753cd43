from __future__ import annotations

import pytest
import torch

from retrodistill.onednn_linear import use_onednn_linear


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(), torch.nn.Linear(96, 8))


def test_same_outputs_and_training_keeps_torch_kernels() -> None:
    reference, patched = _mlp(), _mlp()
    assert use_onednn_linear(patched, "auto", "cpu", "fp32") in ("onednn", "torch")
    x = torch.randn(4, 7, 64)
    with torch.inference_mode():
        assert torch.allclose(patched(x), reference(x), rtol=1e-5, atol=1e-5)
    # With autograd on, the patched layers fall back to F.linear, so gradients exist and agree.
    patched(x).sum().backward()
    reference(x).sum().backward()
    assert torch.allclose(patched[0].weight.grad, reference[0].weight.grad, rtol=1e-5, atol=1e-5)


def test_backend_choice() -> None:
    assert use_onednn_linear(_mlp(), "torch") == "torch"
    assert use_onednn_linear(_mlp(), "auto", "cuda", "fp32") == "torch"
    assert use_onednn_linear(_mlp(), "auto", "cpu", "bf16") == "torch"
    with pytest.raises(ValueError, match="not one of"):
        use_onednn_linear(_mlp(), "mkl")
    with pytest.raises(ValueError, match="unavailable"):
        use_onednn_linear(_mlp(), "onednn", "cpu", "bf16")
