"""The teacher interface: a model that gives one raw relevance score per (query, document) pair.

A teacher is a plug-in registered in :data:`TEACHERS` and built from YAML by name::

    teacher = TEACHERS.build("cross-encoder", {"model": "cross-encoder/ms-marco-MiniLM-L6-v2"})
    teacher.score(["what is bm25"], ["BM25 is a ranking function ..."])  # array([7.31], dtype=float32)
    teacher.describe()  # written into the teacher-score store's manifest

Contract of :meth:`Teacher.score`: one float32 score per pair, in input order, the teacher's raw
output (a logit, a similarity) with no activation applied, so that scores of the same pairs are the
same whatever batch they were computed in (up to floating-point rounding).

Contract of :meth:`Teacher.describe`: a JSON-serialisable dict that identifies the scores, with at
least ``name``, ``model``, ``revision`` (the Hub commit hash when the model came from the Hub cache,
else a sha256 of its weight files), ``max_length``, ``dtype`` and ``device``, plus every convention
that changes the numbers (``similarity``, which logit is the score, ...). Keys in
:data:`RUNTIME_FIELDS` say how the scores were computed, not which scores they are; a resumed
scoring run may change them.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from retrodistill.registry import Registry

TEACHERS: Registry[type[Teacher]] = Registry("teacher")

RUNTIME_FIELDS = frozenset({"device", "batch_size", "max_tokens_per_batch", "linear_backend", "compile"})
"""Fields of :meth:`Teacher.describe` that may differ between the sessions of one resumed run."""


DTYPES = ("fp32", "bf16", "fp16")


class Teacher(abc.ABC):
    """A scorer of (query, document) pairs; see the module docstring for the contract."""

    @abc.abstractmethod
    def score(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Score each pair ``(queries[i], docs[i])``.

        Args:
            queries: query texts, one per pair.
            docs: document texts, one per pair (same length as ``queries``).
            show_progress: show a progress bar.

        Returns:
            float32 array of shape ``(len(queries),)``: the raw score of each pair, in input order.
        """

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Identify the scores this teacher produces (written into manifests, compared on resume)."""

    def prepare(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> None:  # noqa: B027
        """See every text of a scoring run before its parts are scored (default: nothing to do).

        A teacher whose scores depend on what it computed for other pairs (a shared embedding
        cache) uses this to compute everything in one canonical pass, so a resumed run ends with
        exactly the scores of an uninterrupted one.
        """


def check_pairs(queries: Sequence[str], docs: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``queries`` and ``docs`` are two sequences of strings of equal length."""
    if len(queries) != len(docs):
        raise ValueError(f"got {len(queries)} queries but {len(docs)} documents; expected one of each per pair")
    for kind, texts in (("query", queries), ("document", docs)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"{kind} {i} is a {type(text).__name__}, expected a string")


def resolve_device(device: str | None) -> str:
    """``device`` as given, or ``"cuda"`` when a GPU is available and ``"cpu"`` otherwise."""
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_dtype(dtype: str, device: str) -> None:
    """Validate a ``dtype`` name (``fp32``, ``bf16``, ``fp16``) for ``device``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if dtype == "fp16" and not device.startswith("cuda"):
        raise ValueError(f"dtype 'fp16' needs a CUDA device (device is {device!r}); use 'bf16' or 'fp32' on CPU")


def torch_dtype(dtype: str) -> Any:
    """The ``torch.dtype`` for a ``dtype`` name."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def pair_progress(
    total: int, description: str, enabled: bool
) -> contextlib.AbstractContextManager[Callable[[int], None]]:
    """A progress bar over ``total`` pairs (:func:`retrodistill.progress.progress_bar`); yields ``advance(n)``."""
    from retrodistill.progress import progress_bar

    return progress_bar(total, description, "pairs", enabled)
