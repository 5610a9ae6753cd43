"""Inference through oneDNN's fused linear kernel on CPU, where PyTorch's default fp32 GEMM is slow.

PyTorch sends fp32 ``nn.Linear`` to MKL, which on AMD CPUs takes a path without AVX-512 and reaches
about half of what oneDNN does on the same shapes (measured on this project's AMD EPYC machines:
~100 vs ~220 GFLOP/s per core; see benchmarks/teacher_scoring.md). ``torch.ops.mkldnn._linear_pointwise``
is the kernel PyTorch's own compiler uses on CPU; no public switch routes eager fp32 linear layers to
it, hence this module. It only swaps ``forward`` on the model's own ``nn.Linear`` instances, only for
fp32 CPU inputs with autograd off (training keeps PyTorch's kernels), and only after checking at
run time that the kernel exists and agrees with ``F.linear``.
"""

from __future__ import annotations

import types
from typing import Any

LINEAR_BACKENDS = ("auto", "onednn", "torch")


def use_onednn_linear(model: Any, backend: str = "auto", device: str = "cpu", dtype: str = "fp32") -> str:
    """Route the model's ``nn.Linear`` layers through oneDNN where asked and possible; return which.

    Args:
        model: any ``torch.nn.Module``; changed in place.
        backend: ``"auto"`` (oneDNN when it applies and checks out), ``"onednn"`` (or raise), ``"torch"``.
        device: where the model runs; only ``"cpu"`` qualifies.
        dtype: the model's dtype name; only ``"fp32"`` qualifies.

    Returns:
        ``"onednn"`` or ``"torch"``: the backend in effect, for manifests.
    """
    if backend not in LINEAR_BACKENDS:
        raise ValueError(f"linear_backend {backend!r} is not one of {', '.join(LINEAR_BACKENDS)}")
    import torch

    if backend == "torch":
        return "torch"
    reason = (
        _onednn_linear_problem() if device == "cpu" and dtype == "fp32" else "it applies to fp32 on CPU only"
    )
    if reason is not None:
        if backend == "onednn":
            raise ValueError(f"linear_backend 'onednn' is unavailable: {reason}")
        return "torch"
    linear = torch.ops.mkldnn._linear_pointwise

    def forward(module: torch.nn.Linear, input: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or input.dtype != torch.float32 or input.device.type != "cpu":
            return torch.nn.functional.linear(input, module.weight, module.bias)
        return linear(input, module.weight, module.bias, "none", [], "")

    for module in model.modules():
        if type(module) is torch.nn.Linear:
            # An instance attribute shadows nn.Linear.forward for this model only.
            setattr(module, "forward", types.MethodType(forward, module))  # noqa: B010
    return "onednn"


def _onednn_linear_problem() -> str | None:
    """``None`` when oneDNN's fused linear is present and agrees with ``F.linear``, else why not."""
    import torch

    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return "this PyTorch build has no oneDNN linear kernel"
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 64, generator=generator)
    weight = torch.randn(48, 64, generator=generator)
    bias = torch.randn(48, generator=generator)
    try:
        with torch.inference_mode():
            got = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
            want = torch.nn.functional.linear(x, weight, bias)
    except RuntimeError as err:
        return f"oneDNN linear failed: {err}"
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-5, atol=1e-5):
        return "oneDNN linear disagrees with torch.nn.functional.linear"
    return None
