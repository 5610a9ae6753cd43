"""GradCache: embed a large batch in mini-batches, with the loss and gradients of one forward pass.

A loss with in-batch negatives is not decomposable over the rows of its batch, so the batch's size
is bounded by the encoder's activations, which grow with ``B * (2+N)`` texts. GradCache (Gao et al.,
2021) keeps only one mini-batch of activations alive at a time:

1. embed every column in mini-batches of ``mini_batch_size`` rows without autograd, recording each
   mini-batch's RNG state;
2. compute the loss on the full ``(B, D)`` embeddings as usual; its backward pass stops at them
   and yields ``dL/d embedding``;
3. re-embed each mini-batch with autograd, the RNG state restored (dropout draws the same masks),
   and back-propagate ``dL/d embedding`` of its rows into the encoder.

This is sentence-transformers' ``CachedMultipleNegativesRankingLoss`` (and its ``RandContext``),
with one difference of plumbing: there the loss backs up to the embeddings inside ``forward`` and
returns a detached value with a hook, which fits a loss that sees only embeddings. Ours also holds
parameters of its own (the embedding loss's projection) and a ``combined`` loss returns a dict of
terms that the trainer sums, so :func:`cached_embed_columns` instead returns the embeddings as the
outputs of an autograd function whose backward runs step 3: everything downstream of the
embeddings (in-batch scores, every term, the projection) is differentiated by autograd as in the
uncached pass, under whatever scaling the trainer's backward applies (gradient accumulation, fp16
loss scale). The loss value and every gradient equal the uncached ones up to float rounding when
the encoder is deterministic (eval mode); in train mode dropout masks are drawn per mini-batch,
which no RNG handling can make equal to the masks of one full-batch forward pass.

Losses that accept ``cached`` and ``mini_batch_size`` (``infonce``, ``in-batch-kl`` and
``combined``, for the whole batch of all its terms) declare them with :func:`cached_field` and
:func:`mini_batch_size_field`; the training adapter asks :func:`cache_mini_batch_size` whether to
embed through :func:`cached_embed_columns`.

References:
    Gao, Zhang, Han and Callan, *Scaling Deep Contrastive Learning Batch Size under Memory Limited
    Setup*, RepL4NLP 2021. https://arxiv.org/abs/2101.06983
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor, nn

CACHE_FIELDS: tuple[str, ...] = ("cached", "mini_batch_size")
"""The loss parameters that choose GradCache; ``config()`` reports them only when ``cached`` is on."""


def cached_field() -> Any:
    """The ``cached`` dataclass field (keyword-only, default off) of a loss that can be cached."""
    return field(
        default=False,
        kw_only=True,
        metadata={"help": "GradCache: embed the batch in mini-batches (same loss and gradients, less memory)"},
    )


def mini_batch_size_field() -> Any:
    """The ``mini_batch_size`` dataclass field (keyword-only, default 32) that goes with ``cached``."""
    return field(default=32, kw_only=True, metadata={"help": "with cached: rows embedded at once per column; >= 1"})


def check_cache_options(where: str, cached: object, mini_batch_size: object) -> None:
    """Raise ``ValueError`` unless ``cached`` is a bool and ``mini_batch_size`` a positive integer."""
    if not isinstance(cached, bool):
        raise ValueError(f"{where}: cached must be true or false, got {cached!r}")
    if isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, int) or mini_batch_size < 1:
        raise ValueError(f"{where}: mini_batch_size must be a positive integer, got {mini_batch_size!r}")


def without_idle_cache_fields(loss: object, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` less ``cached`` and ``mini_batch_size`` when the loss is not cached.

    Caching changes neither the loss nor its gradients, so an uncached run's manifest reads as it
    did before the option existed, and a cached one records how it was embedded.
    """
    if getattr(loss, "cached", False):
        return config
    return {name: value for name, value in config.items() if name not in CACHE_FIELDS}


def cache_mini_batch_size(loss: Any) -> int | None:
    """The mini-batch size to embed a batch with for ``loss``, or ``None`` when it is not cached."""
    return int(loss.mini_batch_size) if getattr(loss, "cached", False) else None


def cached_embed_columns(model: nn.Module, features: list[dict[str, Any]], mini_batch_size: int) -> list[Tensor]:
    """Embed each tokenized column in mini-batches, with GradCache's backward pass.

    Args:
        model: The sentence-transformers model (or its DDP wrapper); ``model(batch)`` returns a dict
            holding ``"sentence_embedding"``.
        features: One tokenized batch of ``B`` rows per text column (queries, ``doc_0 … doc_N``).
        mini_batch_size: Rows embedded at once; ``>= B`` embeds each column in one forward pass.

    Returns:
        One ``(B, D)`` embedding tensor per column, as ``embed_columns`` returns them. With autograd
        enabled they require grad, and back-propagating into them re-embeds every mini-batch with
        autograd and carries the gradient into ``model``; without, no RNG state is kept.

    Raises:
        ValueError: If ``mini_batch_size`` is not a positive integer or a column has no rows.
    """
    import torch

    check_cache_options("cached_embed_columns", True, mini_batch_size)
    replay = _Replay(model, [dict(column) for column in features], mini_batch_size, torch.is_grad_enabled())
    if not replay.keep_graph:
        return replay.embed_without_grad()
    anchor = torch.empty(0, requires_grad=True)  # an input that needs grad, so that backward is called
    return list(_grad_cache_function().apply(anchor, replay))


@dataclass
class _Replay:
    """What step 3 needs of step 1: the model, the columns, the mini-batch bounds and their RNG states."""

    model: nn.Module
    features: list[dict[str, Any]]
    mini_batch_size: int
    keep_graph: bool
    bounds: list[list[tuple[int, int]]] = field(default_factory=list)
    states: list[list[Any]] = field(default_factory=list)
    autocast: tuple[str, bool, Any] | None = None

    def __post_init__(self) -> None:
        for index, column in enumerate(self.features):
            rows = _rows(column)
            if rows < 1:
                raise ValueError(f"cached_embed_columns: column {index} has no rows")
            size = self.mini_batch_size
            self.bounds.append([(begin, min(begin + size, rows)) for begin in range(0, rows, size)])

    def embed_without_grad(self) -> list[Tensor]:
        """Step 1: ``(B, D)`` per column, one mini-batch at a time; records the RNG and autocast state."""
        import torch
        from sentence_transformers.base.losses.gradcache import RandContext

        device = _device(self.features[0])
        self.autocast = (device.type, *_autocast_state(device.type))
        columns = []
        with torch.no_grad():
            for column, bounds in zip(self.features, self.bounds, strict=True):
                parts, states = [], []
                for begin, end in bounds:
                    batch = _slice(column, begin, end)
                    if self.keep_graph:  # only the replay needs them
                        states.append(RandContext(*batch.values()))
                    parts.append(self.model(batch)["sentence_embedding"])
                columns.append(torch.cat(parts))  # (B, D)
                self.states.append(states)
        return columns

    def backward(self, grads: tuple[Tensor, ...]) -> None:
        """Step 3: re-embed every mini-batch with autograd and back-propagate its rows of ``grads``."""
        import torch

        assert self.autocast is not None  # set by step 1
        device_type, autocast_enabled, autocast_dtype = self.autocast
        todo = [
            (column, begin, end, state, grad)
            for column, bounds, states, grad in zip(self.features, self.bounds, self.states, grads, strict=True)
            for (begin, end), state in zip(bounds, states, strict=True)
        ]
        no_sync = getattr(self.model, "no_sync", None)  # DDP: synchronise the gradients once, after the last
        with torch.enable_grad(), torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_enabled):
            for index, (column, begin, end, state, grad) in enumerate(todo):
                last = index == len(todo) - 1
                with state, nullcontext() if last or no_sync is None else no_sync():
                    embeddings = self.model(_slice(column, begin, end))["sentence_embedding"]  # (b, D)
                    # The rows' share of the loss, linearised at the cached gradient: its gradient
                    # with respect to every parameter is that parameter's part of dL/dθ.
                    dtype = torch.promote_types(torch.promote_types(embeddings.dtype, grad.dtype), torch.float32)
                    surrogate = torch.dot(embeddings.flatten().to(dtype), grad[begin:end].flatten().to(dtype))
                    surrogate.backward()


@cache
def _grad_cache_function() -> Any:
    """The autograd function, defined on first use so that importing this module does not import torch."""
    import torch

    class GradCacheEmbeddings(torch.autograd.Function):
        """Outputs the embeddings of step 1; its backward is step 3."""

        @staticmethod
        def forward(ctx: Any, anchor: Tensor, replay: _Replay) -> tuple[Tensor, ...]:  # type: ignore[override]
            ctx.replay = replay
            return tuple(replay.embed_without_grad())

        @staticmethod
        def backward(ctx: Any, *grads: Tensor) -> tuple[None, None]:  # type: ignore[override]
            replay, ctx.replay = ctx.replay, None  # frees the batch; a second backward fails anyway
            replay.backward(grads)
            return None, None

    return GradCacheEmbeddings


def _autocast_state(device_type: str) -> tuple[bool, Any]:
    """Whether autocast is on for ``device_type`` and its dtype (torch < 2.4 has per-device functions)."""
    import torch

    if hasattr(torch, "get_autocast_dtype"):
        return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    if device_type == "cuda":
        return torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    if device_type == "cpu":
        return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    return False, torch.float32


def _rows(column: dict[str, Any]) -> int:
    """The number of rows of a tokenized column (its ``input_ids``, else its first tensor)."""
    import torch

    value = column.get("input_ids")
    if not isinstance(value, torch.Tensor):
        value = next(v for v in column.values() if isinstance(v, torch.Tensor) and v.ndim > 0)
    return int(value.shape[0])


def _device(column: dict[str, Any]) -> Any:
    import torch

    return next(v.device for v in column.values() if isinstance(v, torch.Tensor))


def _slice(column: dict[str, Any], begin: int, end: int) -> dict[str, Any]:
    """Rows ``begin:end`` of a tokenized column, trailing padding that all of them share trimmed.

    The trim keeps short mini-batches from being embedded at the width of the batch's longest text;
    it changes no embedding, since the trimmed positions are masked out of attention and pooling.
    """
    import torch

    rows = _rows(column)
    mask = column.get("attention_mask")
    width: int | None = None
    if isinstance(mask, torch.Tensor) and mask.ndim == 2:
        used = mask[begin:end].bool().any(dim=0).nonzero()
        width = int(used.max()) + 1 if len(used) else None
        full = mask.shape[1]
    batch: dict[str, Any] = {}
    for key, value in column.items():
        if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != rows:
            batch[key] = value
        elif width is not None and value.ndim >= 2 and value.shape[1] == full:
            batch[key] = value[begin:end, :width]
        else:
            batch[key] = value[begin:end]
    return batch


__all__ = [
    "CACHE_FIELDS",
    "cache_mini_batch_size",
    "cached_embed_columns",
    "cached_field",
    "check_cache_options",
    "mini_batch_size_field",
    "without_idle_cache_fields",
]
