"""Mixed-precision training arguments: ``bf16`` on CPU or GPU, ``fp16`` on CUDA with a loss scaler.

The trainer (through accelerate) wraps each forward pass in ``torch.autocast`` and keeps fp32 master
weights; :func:`retrodistill.train.st_loss.full_precision` then computes the scores, temperatures and
the loss in fp32. Autocast must be entered per step, as accelerate does: one ``torch.autocast``
around the whole of training keeps its cache of bf16 weight copies for the whole run, so every
forward pass uses the initial weights while the optimizer updates the fp32 ones. That was the
"bf16 stall on CPU" (Margin-MSE at nDCG@10 0.0138 against 0.4071 in fp32): a benchmark wrapped
training in one autocast context instead of setting ``bf16``.
"""

from __future__ import annotations

from typing import Any


def precision_arguments(*, bf16: bool, fp16: bool, cuda: bool) -> dict[str, Any]:
    """The trainer's precision arguments for a run on CUDA (``cuda``) or on CPU.

    transformers refuses ``bf16`` without a GPU unless told to train on the CPU (``use_cpu``);
    accelerate then autocasts each forward pass to bf16 on the CPU. ``fp16`` needs CUDA: its
    gradients are kept from underflowing by a loss scaler, which accelerate creates on CUDA.

    Raises:
        ValueError: both ``bf16`` and ``fp16``, or ``fp16`` without CUDA.
    """
    if bf16 and fp16:
        raise ValueError("bf16 and fp16 are exclusive: set one of them")
    if fp16 and not cuda:
        raise ValueError("fp16 needs a CUDA GPU (its loss scaler runs there); on a CPU use bf16")
    arguments: dict[str, Any] = {"bf16": bf16, "fp16": fp16}
    if bf16 and not cuda:
        arguments["use_cpu"] = True
    return arguments
