"""What kind of model a checkpoint is, read from its files before any weights are loaded.

A bi-encoder given as a cross-encoder teacher gets a randomly initialised classification head (two
runs give different scores); a cross-encoder given as a bi-encoder is silently mean-pooled. Both
are wrong numbers without a word, so the teachers and the reranker refuse the wrong kind, naming
the right ``--teacher``.

=================  ==========================================================================
kind               recognised by
=================  ==========================================================================
``bi-encoder``     ``modules.json`` (a sentence-transformers model) listing a Pooling module
``cross-encoder``  ``config.json`` ``architectures`` ending in ``ForSequenceClassification``
``encoder``        any other ``config.json``: a bare encoder without a scoring head
``unknown``        no readable ``config.json`` (left to the loader to report)
=================  ==========================================================================
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KINDS = ("bi-encoder", "cross-encoder", "encoder", "unknown")


def _read_json(model: str, name: str, revision: str | None) -> Any:
    """A JSON file of a local model folder or of its Hub cache snapshot; ``None`` when absent."""
    path = Path(model) / name
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, name, revision=revision)
        except Exception:  # an id the Hub library rejects: not a cached Hub model
            return None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def model_kind(model: str, revision: str | None = None) -> str:
    """The kind of ``model`` (a folder or a cached Hub id); see the module docstring."""
    modules = _read_json(model, "modules.json", revision)
    if isinstance(modules, list) and any(
        isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling") for m in modules
    ):
        return "bi-encoder"
    config = _read_json(model, "config.json", revision)
    if not isinstance(config, dict):
        return "unknown"
    architectures = config.get("architectures") or []
    if any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return "cross-encoder"
    return "encoder"


def require_cross_encoder(model: str, revision: str | None = None, *, allow_new_head: bool = False) -> None:
    """Refuse a model that has no trained sequence-classification head, unless ``allow_new_head``.

    Raises:
        ValueError: naming what ``model`` is and what to use instead.
    """
    kind = model_kind(model, revision)
    if kind == "bi-encoder" and not allow_new_head:
        raise ValueError(
            f"{model} is a sentence-transformers bi-encoder (it pools token vectors; it has no classification "
            "head): score with it through --teacher bi-encoder (allow_new_head: true wraps it with an untrained "
            "head, for speed measurements only)"
        )
    if kind == "encoder" and not allow_new_head:
        raise ValueError(
            f"{model} has no sequence-classification head, so its scores would come from a randomly "
            "initialised one: use a cross-encoder checkpoint, --teacher bi-encoder for an embedding model, or "
            "set allow_new_head: true to accept an untrained head"
        )


def require_bi_encoder(model: str, revision: str | None = None) -> None:
    """Refuse a cross-encoder given where a bi-encoder belongs.

    Raises:
        ValueError: naming what ``model`` is and what to use instead.
    """
    if model_kind(model, revision) == "cross-encoder":
        raise ValueError(
            f"{model} is a cross-encoder (a sequence-classification model scoring a query and a document "
            "together); mean-pooling it would not give its scores: use --teacher cross-encoder"
        )


def model_load_error(model: str, err: BaseException) -> BaseException:
    """A one-line error for a model that failed to load (with ``use_safetensors=True``) with ``err``.

    A checkpoint with pickled weights only (``pytorch_model.bin``) is refused with how to convert it;
    a name that is neither a folder nor in the Hugging Face cache while offline says so; any other
    failure is returned unchanged.
    """
    text = str(err)
    if "safetensors" in text.lower():
        return OSError(
            f"{model}: no safetensors weights. retrodistill loads only safetensors (pickled .bin weights can run "
            "code); convert the checkpoint in a trusted environment with "
            "`AutoModel.from_pretrained(path).save_pretrained(new_dir)` (safetensors by default) and pass new_dir"
        )
    if "couldn't connect" in text or "offline mode" in text or "is not a local folder" in text:
        import os

        cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
        return OSError(
            f"{model}: not a model folder, and not in the Hugging Face cache under {cache} "
            "(the hub cannot be reached): check the name or path, or point HF_HOME at the cache that holds it"
        )
    return err
