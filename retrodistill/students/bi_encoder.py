"""The bi-encoder student: a sentence-transformers model, optionally cut to its first k layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from retrodistill.students.base import STUDENTS
from retrodistill.students.init import truncate_layers


@STUDENTS.register("bi-encoder")
@dataclass
class BiEncoderStudent:
    """Builds the student model.

    A sentence-transformers model keeps its own pooling and normalisation; a plain Hugging Face
    encoder gets mean pooling (and L2 normalisation when ``similarity`` is cosine).
    """

    model: str = field(metadata={"help": "hub id or path of a sentence-transformers or HF encoder"})
    layers: int | None = field(default=None, metadata={"help": "keep only the first k transformer layers"})
    max_seq_length: int | None = field(default=256, metadata={"help": "truncate inputs to this many tokens"})
    similarity: str = field(default="cosine", metadata={"help": "dot or cosine"})
    device: str | None = None

    def __post_init__(self) -> None:
        if self.similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', got {self.similarity!r}")

    def build(self) -> Any:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

        try:
            model = SentenceTransformer(self.model, device=self.device, trust_remote_code=False)
        except (OSError, ValueError):
            model = None
        if model is None or not any(isinstance(m, Pooling) for m in model):
            transformer = Transformer(self.model)
            modules: list[Any] = [transformer, Pooling(transformer.get_embedding_dimension(), "mean")]
            if self.similarity == "cosine":
                modules.append(Normalize())
            model = SentenceTransformer(modules=modules, device=self.device)
        if self.layers is not None:
            truncate_layers(model[0].auto_model, self.layers)
        if self.max_seq_length is not None:
            model.max_seq_length = self.max_seq_length
        return model
