"""Initialising a student from the first layers of a BERT-like encoder (the DistilBERT recipe).

Sanh et al. (2019) initialise the student from the teacher's layers; keeping the first ``k`` is the
simplest variant and the one the quickstart uses. Which attribute holds the layer stack differs
between architectures, so the known places are listed here and anything else is refused loudly.
"""

from __future__ import annotations

from typing import Any

# (path to the nn.ModuleList of transformer blocks, config attribute holding their count)
_LAYER_STACKS = (
    ("encoder.layer", "num_hidden_layers"),  # BERT, RoBERTa, XLM-R, ELECTRA, MiniLM, MPNet
    ("transformer.layer", "n_layers"),  # DistilBERT
    ("layers", "num_hidden_layers"),  # ModernBERT
    ("encoder.layers", "num_hidden_layers"),  # NomicBERT-like encoders
)


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def truncate_layers(hf_model: Any, k: int) -> Any:
    """Keep the first ``k`` transformer blocks of a Hugging Face encoder, in place; return it."""
    import torch

    for path, count_attr in _LAYER_STACKS:
        stack = _get(hf_model, path)
        if isinstance(stack, torch.nn.ModuleList):
            total = len(stack)
            if not 1 <= k <= total:
                raise ValueError(f"cannot keep {k} layers of a {total}-layer {type(hf_model).__name__}")
            parent_path, _, name = path.rpartition(".")
            parent = _get(hf_model, parent_path) if parent_path else hf_model
            setattr(parent, name, torch.nn.ModuleList(list(stack)[:k]))
            setattr(hf_model.config, count_attr, k)
            return hf_model
    raise ValueError(
        f"do not know where {type(hf_model).__name__} keeps its layers; "
        f"supported layouts: {', '.join(p for p, _ in _LAYER_STACKS)}"
    )
