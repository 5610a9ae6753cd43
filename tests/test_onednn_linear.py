from __future__ import annotations

import pytest
import torch

from retrodistill import onednn_linear
from retrodistill.onednn_linear import use_onednn_bf16, use_onednn_linear


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(), torch.nn.Linear(96, 8))


def _patched(model: torch.nn.Module) -> bool:
    """Whether the layers of ``model`` carry this module's instance-level ``forward``."""
    return all("forward" in vars(m) for m in model.modules() if type(m) is torch.nn.Linear)


@pytest.fixture()
def no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend this CPU has no native bf16 (as on CPUs without AVX-512 BF16 or AMX)."""
    real = onednn_linear._onednn_linear_problem

    def problem(dtype: torch.dtype) -> str | None:
        return "no native bf16 (simulated)" if dtype == torch.bfloat16 else real(dtype)

    monkeypatch.setattr(onednn_linear, "_onednn_linear_problem", problem)


def _needs_onednn_bf16() -> None:
    reason = onednn_linear._onednn_linear_problem(torch.bfloat16)
    if reason is not None:
        pytest.skip(f"oneDNN bf16 unavailable here: {reason}")


def test_same_outputs_and_training_keeps_torch_kernels() -> None:
    reference, patched = _mlp(), _mlp()
    available = onednn_linear._onednn_linear_problem(torch.float32) is None
    assert use_onednn_linear(patched, "auto", "cpu", "fp32") == ("onednn" if available else "torch")
    assert _patched(patched) == available
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


def test_bf16_casts_the_model_and_stays_within_bf16_rounding() -> None:
    _needs_onednn_bf16()
    reference, model = _mlp(), _mlp()
    assert use_onednn_bf16(model, "auto", "cpu") == "onednn"
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert _patched(model)
    x = torch.randn(4, 7, 64)
    with torch.inference_mode():
        want = reference(x)
        got = model(x.bfloat16())
    assert got.dtype == torch.bfloat16
    # Inputs, weights and each layer's output are rounded to 8 significant bits (relative 2^-9).
    scale = want.abs().max()
    assert (got.float() - want).abs().max() <= 0.03 * scale
    assert not torch.equal(got.float(), want)  # it really ran in bf16


def test_bf16_without_patching_only_casts() -> None:
    _needs_onednn_bf16()
    model = _mlp()
    assert use_onednn_bf16(model, "onednn", "cpu", patch=False) == "onednn"
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert not any("forward" in vars(m) for m in model.modules())


def test_bf16_backend_choice_leaves_the_model_alone_when_not_used(no_native_bf16: None) -> None:
    for backend, device in (("torch", "cpu"), ("auto", "cuda"), ("auto", "cpu")):
        model = _mlp()
        assert use_onednn_bf16(model, backend, device) == "torch"
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert not _patched(model)
    with pytest.raises(ValueError, match="unavailable for bf16: no native bf16"):
        use_onednn_bf16(_mlp(), "onednn", "cpu")
    with pytest.raises(ValueError, match="not one of"):
        use_onednn_bf16(_mlp(), "mkl")
    # fp32 is unaffected by the missing bf16 support.
    fp32_here = "onednn" if onednn_linear._onednn_linear_problem(torch.float32) is None else "torch"
    assert use_onednn_linear(_mlp(), "auto", "cpu", "fp32") == fp32_here


class _FeedForward(torch.nn.Module):
    """The shape of BERT's ``BertIntermediate``: a ``dense`` layer and its ``intermediate_act_fn``."""

    def __init__(self, activation: torch.nn.Module) -> None:
        super().__init__()
        self.dense = torch.nn.Linear(64, 256)
        self.intermediate_act_fn = activation

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_feed_forward_gelu_is_fused_and_equal(approximate: str) -> None:
    if onednn_linear._onednn_linear_problem(torch.float32) is not None:
        pytest.skip("oneDNN fp32 linear unavailable here")
    torch.manual_seed(0)
    reference = _FeedForward(torch.nn.GELU(approximate=approximate))
    model = _FeedForward(torch.nn.GELU(approximate=approximate))
    model.load_state_dict(reference.state_dict())
    assert use_onednn_linear(model, "onednn") == "onednn"
    assert "forward" in vars(model)  # the block itself runs the fused kernel
    x = torch.randn(3, 11, 64)
    with torch.inference_mode():
        assert torch.allclose(model(x), reference(x), rtol=1e-5, atol=1e-6)
    # Training falls back to the module's own layers, so gradients flow.
    model(x).sum().backward()
    assert model.dense.weight.grad is not None


def test_transformers_gelu_is_recognised_and_other_activations_are_not() -> None:
    from transformers.activations import ACT2FN

    assert onednn_linear._gelu_algorithm(ACT2FN["gelu"]) == "none"
    assert onednn_linear._gelu_algorithm(ACT2FN["gelu_new"]) == "tanh"
    assert onednn_linear._gelu_algorithm(ACT2FN["gelu_python"]) is None
    assert onednn_linear._gelu_algorithm(torch.nn.ReLU()) is None
    model = _FeedForward(torch.nn.ReLU())
    use_onednn_linear(model, "auto")
    assert "forward" not in vars(model)


def test_a_kernel_that_fails_any_way_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> torch.Tensor:
        raise NotImplementedError("no such primitive")

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", broken)
    problem = onednn_linear._onednn_linear_problem(torch.float32)
    assert problem is not None and "NotImplementedError: no such primitive" in problem
    model = _mlp()
    assert use_onednn_linear(model, "auto") == "torch"
    assert not any("forward" in vars(m) for m in model.modules())
    with pytest.raises(ValueError, match="unavailable"):
        use_onednn_linear(_mlp(), "onednn")


def test_a_patched_model_pickles_and_computes_the_same_after() -> None:
    """Multi-process encoding pools pickle the model into their workers."""
    import pickle

    torch.manual_seed(0)
    model = torch.nn.Sequential(_FeedForward(torch.nn.GELU()), torch.nn.Linear(256, 8))
    use_onednn_linear(model, "auto")
    copy = pickle.loads(pickle.dumps(model))
    x = torch.randn(2, 5, 64)
    with torch.inference_mode():
        assert torch.allclose(copy(x), model(x), rtol=1e-5, atol=1e-6)
