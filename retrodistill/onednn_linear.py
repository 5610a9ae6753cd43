"""Inference through oneDNN's fused linear kernel on CPU, where PyTorch's default fp32 GEMM is slow.

PyTorch sends fp32 ``nn.Linear`` to MKL, which on AMD CPUs takes a path without AVX-512 and reaches
about half of what oneDNN does on the same shapes (measured on this project's AMD EPYC machines:
~100 vs ~220 GFLOP/s per core; see benchmarks/teacher_scoring.md). ``torch.ops.mkldnn._linear_pointwise``
is the kernel PyTorch's own compiler uses on CPU; no public switch routes eager linear layers to it,
hence this module. It only swaps ``forward`` on the model's own ``nn.Linear`` instances, only for CPU
inputs of the layer's own dtype with autograd off (training keeps PyTorch's kernels), and only after
checking at run time that the kernel exists and agrees with ``F.linear``.

Two entry points:

* :func:`use_onednn_linear`: fp32 models; the outputs equal PyTorch's to float rounding.
* :func:`use_onednn_bf16`: casts a model to bf16 (weights *and* activations, so no autocast and no
  casts between layers) and runs its linear layers through oneDNN's bf16 kernel, which accumulates
  in fp32. On CPUs with AVX-512 BF16 (AMD Zen 4/5, Intel Cooper Lake and later) that kernel runs at
  about twice the fp32 rate. CPU autocast uses the same kernel but re-casts every weight at every
  call and casts activations around each layer; on the project's Zen 5 machine it was 1.06× to 1.7×
  slower than the cast model (benchmarks/teacher_scoring.md). Layer norms, softmax and GELU take
  bf16 tensors but compute in fp32 inside PyTorch's CPU kernels, so outputs stay within bf16
  rounding of the fp32 ones.
"""

from __future__ import annotations

import types
from typing import Any

LINEAR_BACKENDS = ("auto", "onednn", "torch")


def use_onednn_linear(model: Any, backend: str = "auto", device: str = "cpu", dtype: str = "fp32") -> str:
    """Route the model's ``nn.Linear`` layers through oneDNN where asked and possible; return which.

    Args:
        model: any ``torch.nn.Module`` with fp32 weights; changed in place.
        backend: ``"auto"`` (oneDNN when it applies and checks out), ``"onednn"`` (or raise), ``"torch"``.
        device: where the model runs; only ``"cpu"`` qualifies.
        dtype: the model's dtype name; only ``"fp32"`` qualifies (bf16 models: :func:`use_onednn_bf16`;
            fp32 weights under autocast keep PyTorch's kernels, which autocast knows how to cast).

    Returns:
        ``"onednn"`` or ``"torch"``: the backend in effect, for manifests.
    """
    _check_backend(backend)
    import torch

    if backend == "torch":
        return "torch"
    reason = (
        _onednn_linear_problem(torch.float32)
        if device == "cpu" and dtype == "fp32"
        else "it applies to fp32 on CPU only"
    )
    if reason is not None:
        if backend == "onednn":
            raise ValueError(f"linear_backend 'onednn' is unavailable: {reason}")
        return "torch"
    _patch_linear_layers(model, torch.float32)
    return "onednn"


def use_onednn_bf16(model: Any, backend: str = "auto", device: str = "cpu", patch: bool = True) -> str:
    """Cast the model to bf16 and run its linear layers through oneDNN's bf16 kernel, where asked and possible.

    Args:
        model: any ``torch.nn.Module`` with fp32 weights; changed in place, and only when this
            returns ``"onednn"`` (it is left in fp32 otherwise, for the caller's autocast).
        backend: ``"auto"`` (oneDNN bf16 when it applies and checks out), ``"onednn"`` (or raise),
            ``"torch"`` (leave the model alone).
        device: where the model runs; only ``"cpu"`` qualifies.
        patch: route the linear layers to oneDNN here; ``False`` only casts, for ``torch.compile`` with
            ``freezing``, whose CPU lowering sends bf16 linear layers to the same kernel itself (and
            cannot compile a model whose layers call it directly).

    Returns:
        ``"onednn"`` (the model is now bf16: feed it bf16-compatible inputs, no autocast needed) or
        ``"torch"`` (nothing changed).
    """
    _check_backend(backend)
    import torch

    if backend == "torch":
        return "torch"
    reason = _onednn_linear_problem(torch.bfloat16) if device == "cpu" else "it applies on CPU only"
    if reason is not None:
        if backend == "onednn":
            raise ValueError(f"linear_backend 'onednn' is unavailable for bf16: {reason}")
        return "torch"
    model.to(torch.bfloat16)
    if patch:
        _patch_linear_layers(model, torch.bfloat16)
    return "onednn"


def _check_backend(backend: str) -> None:
    if backend not in LINEAR_BACKENDS:
        raise ValueError(f"linear_backend {backend!r} is not one of {', '.join(LINEAR_BACKENDS)}")


def _patch_linear_layers(model: Any, dtype: Any) -> None:
    """Give every ``nn.Linear`` of ``model`` a ``forward`` that calls oneDNN for CPU ``dtype`` inference.

    A BERT-style feed-forward block (a module whose ``dense`` linear layer is followed by an exact or
    tanh GELU in ``intermediate_act_fn``: BERT, RoBERTa, XLM-R, ELECTRA, MiniLM) also gets the GELU fused
    into the kernel as a post-op: the activation is computed on the product while it is still in cache
    instead of in a second pass over a tensor four times the hidden size (about 10% of a MiniLM
    cross-encoder's CPU time, in fp32 and bf16; benchmarks/teacher_scoring.md).
    """
    import torch

    linear = torch.ops.mkldnn._linear_pointwise

    def inference(input: torch.Tensor, weight: torch.Tensor) -> bool:
        return not torch.is_grad_enabled() and input.device.type == "cpu" and input.dtype == weight.dtype == dtype

    def forward(module: torch.nn.Linear, input: torch.Tensor) -> torch.Tensor:
        if not inference(input, module.weight):
            return torch.nn.functional.linear(input, module.weight, module.bias)
        return linear(input, module.weight, module.bias, "none", [], "")

    def fused_forward(module: Any, hidden: torch.Tensor) -> torch.Tensor:
        dense = module.dense
        if not inference(hidden, dense.weight):
            return module.intermediate_act_fn(dense(hidden))
        return linear(hidden, dense.weight, dense.bias, "gelu", [], module._onednn_gelu)

    # A bound method pickles as getattr(module, its __name__): named "forward", a pickled model (a
    # multi-process encoding pool's workers get one) unpickles with its class's own forward, which
    # computes the same thing, instead of failing on a missing attribute.
    fused_forward.__name__ = "forward"

    for module in model.modules():
        if type(module) is torch.nn.Linear:
            # An instance attribute shadows nn.Linear.forward for this model only.
            setattr(module, "forward", types.MethodType(forward, module))  # noqa: B010
        elif type(getattr(module, "dense", None)) is torch.nn.Linear:
            algorithm = _gelu_algorithm(getattr(module, "intermediate_act_fn", None))
            if algorithm is not None:
                module._onednn_gelu = algorithm
                setattr(module, "forward", types.MethodType(fused_forward, module))  # noqa: B010


def _gelu_algorithm(activation: Any) -> str | None:
    """oneDNN's name for ``activation`` when it is a GELU it can fuse (``"none"``: erf, ``"tanh"``), else ``None``.

    Recognised: ``nn.GELU`` and transformers' ``GELUActivation`` (erf) and ``NewGELUActivation`` /
    ``GELUTanh`` / ``PytorchGELUTanh`` (tanh); anything else (a Python-level GELU, a clipped one, ReLU)
    keeps its own module.
    """
    import torch

    if type(activation) is torch.nn.GELU:
        return "tanh" if activation.approximate == "tanh" else "none"
    name = type(activation).__name__
    if name == "GELUActivation" and getattr(activation, "act", None) is torch.nn.functional.gelu:
        return "none"
    if name in ("NewGELUActivation", "GELUTanh", "PytorchGELUTanh"):
        return "tanh"
    return None


def _onednn_linear_problem(dtype: Any) -> str | None:
    """``None`` when oneDNN's fused linear runs ``dtype`` here and agrees with ``F.linear``, else why not.

    fp32 must agree to 1e-5. bf16 must be native (``torch.ops.mkldnn._is_mkldnn_bf16_supported``:
    AVX-512 BF16 or AMX; without it oneDNN emulates bf16 slowly) and agree with the fp32 product of
    the same bf16-rounded operands to bf16 rounding of the output (relative 2⁻⁸, with slack).
    """
    import torch

    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return "this PyTorch build has no oneDNN linear kernel"
    if dtype == torch.bfloat16:
        supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        if supported is None or not supported():
            return "this CPU has no native bf16 support for oneDNN (AVX-512 BF16 or AMX)"
    generator = torch.Generator().manual_seed(0)
    # Two shapes (3-D with an odd row count, 2-D) and each fused GELU: a kernel that fails or disagrees
    # on any of them, however it fails, is not used.
    for shape, out_features, post_op, algorithm in (
        ((3, 5, 64), 48, "none", ""),
        ((7, 40), 33, "none", ""),
        ((3, 5, 64), 96, "gelu", "none"),
        ((3, 5, 64), 96, "gelu", "tanh"),
    ):
        x = torch.randn(*shape, generator=generator).to(dtype)
        weight = torch.randn(out_features, shape[-1], generator=generator).to(dtype)
        bias = torch.randn(out_features, generator=generator).to(dtype)
        try:
            with torch.inference_mode():
                got = torch.ops.mkldnn._linear_pointwise(x, weight, bias, post_op, [], algorithm)
                want = torch.nn.functional.linear(x.float(), weight.float(), bias.float())
                if post_op == "gelu":
                    want = torch.nn.functional.gelu(want, approximate=algorithm)
        except Exception as err:  # noqa: BLE001 - any failure of a private kernel means "not usable here"
            return f"oneDNN linear ({post_op}) failed: {type(err).__name__}: {err}"
        # bf16 outputs of magnitude ~sqrt(64) = 8 are rounded by up to 8 * 2^-9; allow a few roundings.
        rtol, atol = (1e-5, 1e-5) if dtype == torch.float32 else (2**-6, 0.1)
        if got.shape != want.shape or got.dtype != dtype:
            return f"oneDNN linear returned {got.dtype} {tuple(got.shape)} for {dtype} {tuple(want.shape)}"
        if not torch.allclose(got.float(), want, rtol=rtol, atol=atol):
            return f"oneDNN linear ({post_op}) disagrees with torch.nn.functional.linear"
    return None
