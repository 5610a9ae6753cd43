"""The bi-encoder student: a sentence-transformers model, optionally cut to its first k layers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrodistill.students.base import STUDENTS
from retrodistill.students.init import truncate_layers
from retrodistill.teachers.model_kind import model_kind, model_load_error

log = logging.getLogger(__name__)


def _looks_like_path(name: str) -> bool:
    """A name the user meant as a folder: hub ids are ``name`` or ``org/name``, never more."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


@STUDENTS.register("bi-encoder")
@dataclass
class BiEncoderStudent:
    """Builds the student model.

    A sentence-transformers model keeps its own pooling and normalisation. The one supported
    fallback: a plain Hugging Face encoder (a ``config.json`` and no ``modules.json``) gets
    sentence-transformers' default, mean pooling without normalisation (the loss's ``similarity``
    decides between dot and cosine), and the build logs that it made that model. A cross-encoder
    checkpoint is refused (its classification head would be dropped without a word). The model's own
    Python code is never run unless ``trust_remote_code`` is set, and a model that does not load is a
    one-line ``ValueError`` naming the model and the cause, never replaced by another model.
    """

    model: str = field(metadata={"help": "hub id or path of a sentence-transformers or HF encoder"})
    layers: int | None = field(default=None, metadata={"help": "keep only the first k transformer layers"})
    max_seq_length: int | None = field(default=256, metadata={"help": "truncate inputs to this many tokens"})
    similarity: str = field(default="cosine", metadata={"help": "dot or cosine"})
    device: str | None = None
    trust_remote_code: bool = field(default=False, metadata={"help": "let the model run its own Python code"})

    def __post_init__(self) -> None:
        if self.similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', got {self.similarity!r}")

    def build(self) -> Any:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Pooling

        if _looks_like_path(self.model) and not Path(self.model).expanduser().exists():
            raise FileNotFoundError(f"student model {self.model}: no such folder")
        kind = model_kind(self.model)
        if kind == "cross-encoder":
            raise ValueError(
                f"the student model {self.model!r} is a cross-encoder (a sequence-classification head on top): "
                "a bi-encoder student would drop that head and mean-pool its token vectors; start from a "
                "sentence-transformers model or a plain encoder instead"
            )
        try:
            model = SentenceTransformer(
                self.model,
                device=self.device,
                trust_remote_code=self.trust_remote_code,
                model_kwargs={"use_safetensors": True},
            )
        except OSError as err:
            refused = model_load_error(self.model, err)
            if refused is not err:
                raise refused from None
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"cannot load the student model {self.model!r}: {first}") from None
        except ValueError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            hint = " (pass --trust-remote-code to allow it)" if "custom code" in str(err) else ""
            raise ValueError(f"cannot load the student model {self.model!r}: {first}{hint}") from None
        except Exception as err:  # a size mismatch, a missing key, a broken module: the cause, in one line
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            cause = f"{type(err).__name__}: {first}" if first else type(err).__name__
            raise ValueError(f"cannot load the student model {self.model!r}: {cause}") from err
        if not any(isinstance(m, Pooling) for m in model):
            raise ValueError(
                f"the student model {self.model!r} has no pooling module: it does not produce one vector per "
                "text, so it cannot be a bi-encoder student"
            )
        if kind == "encoder":
            log.warning(
                "student model %r is a plain Hugging Face encoder (no sentence-transformers modules.json): "
                "built %s with mean pooling and no normalisation",
                self.model,
                " -> ".join(type(m).__name__ for m in model),
            )
        if self.layers is not None:
            truncate_layers(model[0].auto_model, self.layers)
        if self.max_seq_length is not None:
            model.max_seq_length = self.max_seq_length
        return model
