"""ColBERT checkpoints: recognising the Stanford ColBERT and PyLate layouts, and loading their parts.

Split out of :mod:`retrodistill.teachers.colbert`, whose docstring tabulates the two layouts (where
each keeps its settings, encoder and projection; its markers, defaults and skiplist) and which still
exports :class:`Layout`, :class:`Conventions` and :func:`detect_layout`. Here: :func:`detect_layout`
finds the parts, :func:`read_stanford` / :func:`read_pylate` turn each library's settings into
:class:`Conventions`, :func:`special_ids` checks the markers against the tokenizer, and
:func:`load_encoder` / :func:`load_projection` read the weights (safetensors, else ``pytorch_model.bin``
with ``torch.load(weights_only=True)``). :func:`local_dir` fetches a Hub checkpoint's snapshot.
"""

from __future__ import annotations

import dataclasses
import json
import string
from pathlib import Path
from typing import Any

_STANFORD_DEFAULTS: dict[str, Any] = {
    "query_token_id": "[unused0]",
    "doc_token_id": "[unused1]",
    "query_maxlen": 32,
    "doc_maxlen": 220,
    "mask_punctuation": True,
    "attend_to_mask_tokens": False,
    "similarity": "cosine",
    "interaction": "colbert",
}
_PYLATE_DEFAULTS: dict[str, Any] = {
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 32,
    "document_length": 180,
    "do_query_expansion": True,
    "attend_to_expansion_tokens": False,
    "skiplist_words": list(string.punctuation),
}


@dataclasses.dataclass(frozen=True)
class Conventions:
    """How a checkpoint turns a text into token ids, and which tokens MaxSim uses.

    See the table of the two layouts in :mod:`retrodistill.teachers.colbert`.
    """

    layout: str
    query_marker: str
    doc_marker: str
    query_maxlen: int
    doc_maxlen: int
    query_expansion: bool
    attend_to_mask_tokens: bool
    skiplist_ids: tuple[int, ...]
    lowercase: bool = False


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a checkpoint keeps its parts: ``name`` is ``"stanford"`` or ``"pylate"``."""

    name: str
    encoder_path: str
    projection_files: tuple[Path, ...]


def detect_layout(root: Path) -> Layout:
    """Recognise a Stanford ColBERT or PyLate checkpoint directory, or raise ``ValueError`` saying why not."""
    modules_file = root / "modules.json"
    if modules_file.is_file():
        modules = _read_json(modules_file)
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        if len(modules) >= 2 and kinds[0] == "Transformer" and all(k == "Dense" for k in kinds[1:]):
            encoder_path = str(modules[0].get("path", ""))
            dense = tuple(_weights_file(root / str(m["path"]), "Dense module") for m in modules[1:])
            return Layout("pylate", encoder_path, dense)
    config_file = root / "config.json"
    architectures = (_read_json(config_file).get("architectures") or []) if config_file.is_file() else []
    if "HF_ColBERT" in architectures or (root / "artifact.metadata").is_file():
        return Layout("stanford", "", (_weights_file(root, "Stanford ColBERT checkpoint"),))
    raise ValueError(
        f"{root} is neither a Stanford ColBERT checkpoint (config.json with architectures ['HF_ColBERT'] or an "
        "artifact.metadata file, weights with linear.weight) nor a PyLate model (modules.json listing a "
        "Transformer then Dense modules); a plain encoder has no ColBERT projection to score with"
    )


def read_stanford(
    root: Path, layout: Layout, tokenizer: Any, query_maxlen: int | None, doc_maxlen: int | None
) -> Conventions:
    metadata_file = root / "artifact.metadata"
    settings = dict(_STANFORD_DEFAULTS)
    if metadata_file.is_file():
        loaded = _read_json(metadata_file)
        settings.update({k: v for k, v in loaded.get("config", loaded).items() if k in settings})
    if settings["similarity"] != "cosine" or settings["interaction"] != "colbert":
        raise ValueError(
            f"{metadata_file}: similarity {settings['similarity']!r}, interaction {settings['interaction']!r}; "
            "only similarity 'cosine' with interaction 'colbert' is supported"
        )
    skiplist: set[int] = set()
    if settings["mask_punctuation"]:
        encoded = (tokenizer.encode(mark, add_special_tokens=False) for mark in string.punctuation)
        skiplist = {ids[0] for ids in encoded if ids} | {tokenizer.pad_token_id}
    return Conventions(
        layout="stanford",
        query_marker=str(settings["query_token_id"]),
        doc_marker=str(settings["doc_token_id"]),
        query_maxlen=query_maxlen or int(settings["query_maxlen"]),
        doc_maxlen=doc_maxlen or int(settings["doc_maxlen"]),
        query_expansion=True,
        attend_to_mask_tokens=bool(settings["attend_to_mask_tokens"]),
        skiplist_ids=tuple(sorted(skiplist)),
    )


def read_pylate(
    root: Path, layout: Layout, tokenizer: Any, query_maxlen: int | None, doc_maxlen: int | None
) -> Conventions:
    settings = dict(_PYLATE_DEFAULTS)
    config_file = root / "config_sentence_transformers.json"
    if config_file.is_file():
        settings.update({k: v for k, v in _read_json(config_file).items() if k in settings and v is not None})
    st_config_file = root / layout.encoder_path / "sentence_bert_config.json"
    lowercase = bool(_read_json(st_config_file).get("do_lower_case", False)) if st_config_file.is_file() else False
    skiplist = {int(tokenizer.convert_tokens_to_ids(word)) for word in settings["skiplist_words"]}
    return Conventions(
        layout="pylate",
        query_marker=str(settings["query_prefix"]),
        doc_marker=str(settings["document_prefix"]),
        query_maxlen=query_maxlen or int(settings["query_length"]),
        doc_maxlen=doc_maxlen or int(settings["document_length"]),
        query_expansion=bool(settings["do_query_expansion"]),
        attend_to_mask_tokens=bool(settings["attend_to_expansion_tokens"]),
        skiplist_ids=tuple(sorted(skiplist)),
        lowercase=lowercase,
    )


def special_ids(tokenizer: Any, conventions: Conventions, model: str) -> dict[str, int]:
    """Token ids of the markers and of [MASK] / pad, checked to exist in the vocabulary."""
    ids: dict[str, int] = {}
    for side, marker in (("query", conventions.query_marker), ("document", conventions.doc_marker)):
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"{model}: the {side} marker {marker!r} is not a token of its tokenizer (a PyLate model saves "
                "its prefixes as added tokens; a Stanford one uses vocabulary tokens such as [unused0])"
            )
        ids[side] = int(token_id)
    if conventions.query_expansion and tokenizer.mask_token_id is None:
        raise ValueError(f"{model}: the tokenizer has no [MASK] token to augment queries with")
    ids["mask"] = int(tokenizer.mask_token_id) if tokenizer.mask_token_id is not None else -1
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.mask_token_id
    if pad is None:
        raise ValueError(f"{model}: the tokenizer has neither a pad nor a [MASK] token to pad batches with")
    ids["pad"] = int(pad)
    return ids


def load_encoder(path: Path, trust_remote_code: bool) -> Any:
    """The transformer, from safetensors when there are any, else ``pytorch_model.bin`` (``weights_only``)."""
    import torch
    from transformers import AutoModel

    safetensors = any(path.glob("*.safetensors"))
    model, info = AutoModel.from_pretrained(
        path,
        use_safetensors=safetensors,
        weights_only=True,
        trust_remote_code=trust_remote_code,
        dtype=torch.float32,
        output_loading_info=True,
    )
    # A pooler is never used by ColBERT; any other missing weight would be silently random.
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("pooler.")]
    if missing:
        raise ValueError(f"{path}: weights missing from the checkpoint: {', '.join(sorted(missing)[:8])}")
    return model


def load_projection(weights_file: Path, in_features: int) -> Any:
    """An ``nn.Linear`` holding ``linear.weight`` (and ``linear.bias`` when present) of ``weights_file``."""
    import torch

    if weights_file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights_file), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in ("linear.weight", "linear.bias") if k in f.keys()}  # noqa: SIM118
    else:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        tensors = {k: state[k] for k in ("linear.weight", "linear.bias") if k in state}
    if "linear.weight" not in tensors:
        raise ValueError(f"{weights_file}: no linear.weight (the ColBERT projection)")
    weight = tensors["linear.weight"].float()
    if weight.ndim != 2 or weight.shape[1] != in_features:
        raise ValueError(
            f"{weights_file}: linear.weight has shape {tuple(weight.shape)}, expected (dim, {in_features})"
        )
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias="linear.bias" in tensors)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if linear.bias is not None:
            linear.bias.copy_(tensors["linear.bias"].float())
    return linear


def _weights_file(directory: Path, what: str) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return directory / name
    raise ValueError(f"{directory}: {what} without model.safetensors or pytorch_model.bin")


def local_dir(model: str, revision: str | None) -> Path:
    """``model`` itself when it is a directory, else its Hub snapshot (cached, or downloaded when online)."""
    path = Path(model)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    common = ["*.json", "*.txt", "*.model", "artifact.metadata"]
    snapshot = Path(snapshot_download(model, revision=revision, allow_patterns=[*common, "*.safetensors"]))
    if not any(snapshot.rglob("*.safetensors")):  # an older checkpoint: pickled weights, read weights_only
        snapshot = Path(snapshot_download(model, revision=revision, allow_patterns=[*common, "*.bin"]))
    return snapshot


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None


__all__ = [
    "Conventions",
    "Layout",
    "detect_layout",
    "load_encoder",
    "load_projection",
    "local_dir",
    "read_pylate",
    "read_stanford",
    "special_ids",
]
