"""The student's ``README.md``: a sentence-transformers model card written from the run's manifest.

Every figure on the card is one the run recorded (``manifest.json``), never a default or a guess:

* YAML front matter: ``library_name: sentence-transformers``, ``pipeline_tag: sentence-similarity``,
  ``tags``, ``base_model`` (the student's starting point, when it is a Hub id), ``datasets`` (the
  ``BeIR/NAME`` dataset when the training data is a BEIR set by name) and ``license`` (the base
  model's, read from its own card when that is on disk);
* what the model is and how to load it (the Hub repository when it was pushed, else the folder);
* a training-details table: teacher, loss and its parameters, data, examples, epochs and steps
  actually run, batch size, learning rate, seed, retrodistill version;
* evaluation figures when a run recorded them (``manifest["evaluation"]`` or the ``evaluation``
  argument: ``{dataset: {measure: value}}``), else a line saying how to measure the model;
* BibTeX for sentence-transformers and for the loss's paper(s); the training data's references when
  it is a registered dataset (:data:`retrodistill.data.registry.DATASETS`).

No widget examples and no dataset statistics: the card stays a few kilobytes. :func:`write_model_card`
rewrites it in place (e.g. after an evaluation, or with the repository id before a push).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from retrodistill.artifacts import MANIFEST, read_manifest, write_text_atomic

CARD = "README.md"

SENTENCE_TRANSFORMERS_CITATION = """
@inproceedings{reimers-2019-sentence-bert,
    title = "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks",
    author = "Reimers, Nils and Gurevych, Iryna",
    booktitle = "Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing",
    month = "11",
    year = "2019",
    publisher = "Association for Computational Linguistics",
    url = "https://arxiv.org/abs/1908.10084",
}
"""


def _is_hub_id(name: str | None) -> bool:
    """A Hub model id (``name`` or ``org/name``), not a local folder."""
    if not name or Path(name).expanduser().exists():
        return False
    return not name.startswith((".", "/", "~")) and name.count("/") <= 1 and "\\" not in name


def _front_matter_of(model: str) -> dict[str, Any]:
    """The YAML front matter of ``model``'s own README (a folder or a cached Hub snapshot); ``{}`` if none."""
    path = Path(model).expanduser() / CARD
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, CARD)
        except Exception:  # an id the Hub library rejects: nothing cached to read
            return {}
        if not isinstance(cached, str):
            return {}
        path = Path(cached)
    try:
        text = path.read_text(encoding="utf-8")
        if not text.startswith("---"):
            return {}
        data = yaml.safe_load(text.split("---", 2)[1])
    except (OSError, ValueError, yaml.YAMLError, IndexError):
        return {}
    return data if isinstance(data, dict) else {}


def _model_name(description: Mapping[str, Any]) -> str:
    model = description.get("model") or description.get("name") or "unknown"
    kind = description.get("name")
    return f"`{model}` ({kind})" if kind and kind != model else f"`{model}`"


def describe_teacher(teacher: Mapping[str, Any]) -> str:
    """The teacher(s) a run distilled, in one line of Markdown; ``"none (teacher-free loss)"`` if none."""
    parts = []
    members = teacher.get("members")
    if isinstance(members, list):
        names = ", ".join(_model_name(m.get("teacher", {})) for m in members if isinstance(m, Mapping))
        parts.append(f"ensemble of {names} (normalisation `{teacher.get('normalization', 'none')}`)")
    elif teacher.get("model") or teacher.get("name"):
        parts.append(_model_name(teacher))
    if isinstance(teacher.get("pairwise"), Mapping) and teacher["pairwise"]:
        parts.append(f"pairwise: {_model_name(teacher['pairwise'])}")
    if isinstance(teacher.get("embeddings"), Mapping) and teacher["embeddings"]:
        parts.append(f"embeddings: {_model_name(teacher['embeddings'])}")
    return "; ".join(parts) if parts else "none (teacher-free loss)"


def _value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | bool) or value is None else str(value)


def describe_loss(loss: Mapping[str, Any]) -> str:
    """``name`` and its parameters (``combined``: each weighted term), in one line of Markdown."""
    name = loss.get("name", "unknown")
    params = {k: v for k, v in loss.items() if k != "name"}
    terms = params.pop("terms", None)
    own = ", ".join(f"{k}={_value(v)}" for k, v in params.items())
    text = f"`{name}`" + (f" ({own})" if own else "")
    if isinstance(terms, list):
        described = [
            f"{term.get('weight', 1)} × {describe_loss({'name': term.get('name'), **(term.get('params') or {})})}"
            for term in terms
            if isinstance(term, Mapping)
        ]
        text += ": " + " + ".join(described)
    return text


def _datasets(config: Mapping[str, Any]) -> list[str]:
    from retrodistill.data.download import BEIR_MD5

    dataset = (config.get("data") or {}).get("dataset")
    return [f"BeIR/{dataset}"] if isinstance(dataset, str) and dataset in BEIR_MD5 else []


def _dataset_citation(config: Mapping[str, Any]) -> str:
    """The training data's references as the dataset registry gives them (a registered name only)."""
    from retrodistill.data.registry import DATASETS

    spec = DATASETS.get(str((config.get("data") or {}).get("dataset")))
    return str(getattr(spec, "citation", "") or "")


def _front_matter(manifest: Mapping[str, Any]) -> dict[str, Any]:
    config = manifest.get("config") or {}
    student = manifest.get("student") or {}
    loss = (manifest.get("loss") or {}).get("name")
    tags = ["sentence-transformers", "sentence-similarity", "feature-extraction", "knowledge-distillation"]
    tags += ["retrodistill"] + ([str(loss)] if loss else [])
    front: dict[str, Any] = {
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        "tags": tags,
    }
    base = student.get("model")
    if _is_hub_id(base):
        front["base_model"] = base
    if datasets := _datasets(config):
        front["datasets"] = datasets
    license_ = _front_matter_of(base).get("license") if isinstance(base, str) else None
    if isinstance(license_, str) and license_:
        front["license"] = license_
    return front


def _epochs(manifest: Mapping[str, Any]) -> str:
    config = manifest.get("config") or {}
    counts = manifest.get("counts") or {}
    planned = config.get("epochs")
    run = counts.get("epochs")
    if run is None:
        return f"{planned} (planned; the run did not record how many it completed)"
    text = f"{run:g}"
    if planned is not None and run != planned:
        text += f" of {planned} planned (stopped at max_steps={config.get('max_steps')})"
    return text


def _data(manifest: Mapping[str, Any]) -> str:
    config = manifest.get("config") or {}
    counts = manifest.get("counts") or {}
    data = config.get("data") or {}
    dataset = data.get("dataset")
    if counts.get("training_stage") == "corpus":
        kinds = [
            f"{counts[key]:,} {label}"
            for key, label in (
                ("documents", "documents"),
                ("queries", "training queries"),
                ("pseudo_queries", "pseudo-queries"),
            )
            if counts.get(key)
        ]
        return f"`{dataset}`: {', '.join(kinds) or 'no texts'} (embedding distillation)"
    text = f"`{dataset}` split `{data.get('split')}`"
    if config.get("store"):
        text += f"; teacher scores from `{config['store']}`"
    if config.get("pair_store"):
        text += f"; pairwise scores from `{config['pair_store']}`"
    return text


def _training_rows(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    config = manifest.get("config") or {}
    counts = manifest.get("counts") or {}
    student = manifest.get("student") or {}
    base = f"`{student.get('model')}`"
    if student.get("layers"):
        base += f", first {student['layers']} layers"
    rows = [
        ("Teacher", describe_teacher(manifest.get("teacher") or {})),
        ("Student initialised from", base),
        ("Loss", describe_loss(manifest.get("loss") or {})),
        ("Data", _data(manifest)),
        ("Training examples", f"{counts.get('examples', 0):,}"),
    ]
    earlier = manifest.get("stages") or []
    if earlier:  # a multi-stage recipe: the stages this one started from, in order
        done = "; ".join(f"{s.get('name')} ({s.get('steps')} steps)" for s in earlier)
        rows.append(("Recipe stages before this one", done))
    if counts.get("training_stage") != "corpus":
        rows.append(("Documents per example", f"1 positive + {config.get('negatives')} negatives"))
    rows += [
        ("Epochs", _epochs(manifest)),
        ("Steps", str(counts.get("steps", "?"))),
        ("Batch size", str(config.get("batch_size"))),
        ("Learning rate", f"{config.get('learning_rate')} (warm-up ratio {config.get('warmup_ratio')})"),
        ("Similarity", f"{student.get('similarity')} (max sequence length {student.get('max_seq_length')})"),
        ("Seed", str(config.get("seed"))),
    ]
    if manifest.get("train_loss") is not None:
        rows.append(("Final training loss", f"{manifest['train_loss']:.4g}"))
    versions = manifest.get("versions") or {}
    libraries = ("retrodistill", "sentence-transformers", "transformers")
    software = [f"{k} {versions[k]}" for k in libraries if k in versions]
    rows.append(("Software", ", ".join(software)))
    return rows


def _evaluation(evaluation: Mapping[str, Mapping[str, float]] | None, model_ref: str) -> str:
    if not evaluation:
        return (
            "This run did not evaluate the model. Measure it with "
            f"`retrodistill evaluate --model {model_ref} --beir scifact`.\n"
        )
    measures = list(dict.fromkeys(m for figures in evaluation.values() for m in figures))
    lines = ["| Dataset | " + " | ".join(measures) + " |", "|---|" + "---|" * len(measures)]
    for dataset, figures in evaluation.items():
        cells = [f"{figures[m]:.4f}" if m in figures else "" for m in measures]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def model_card(
    manifest: Mapping[str, Any],
    *,
    citation: str = "",
    repo_id: str | None = None,
    folder: str | None = None,
    evaluation: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    """The ``README.md`` of a student from its ``train-student`` manifest.

    Args:
        manifest: the student's ``manifest.json``.
        citation: BibTeX of the loss's paper(s) (the loss's ``citation``).
        repo_id: the Hub repository the model is published to, if it is.
        folder: the student's folder, named in the card when there is no ``repo_id``.
        evaluation: ``{dataset: {measure: value}}``; default ``manifest["evaluation"]`` if recorded.

    Returns:
        The card: YAML front matter and Markdown (see the module docstring).
    """
    ref = repo_id or folder or "."
    title = repo_id or Path(folder or ".").resolve().name
    evaluation = evaluation if evaluation is not None else manifest.get("evaluation")
    teacher = describe_teacher(manifest.get("teacher") or {})
    loss = (manifest.get("loss") or {}).get("name", "unknown")
    front = yaml.safe_dump(_front_matter(manifest), sort_keys=False, allow_unicode=True)
    table = "\n".join(f"| {key} | {value} |" for key, value in _training_rows(manifest))
    bibtex = SENTENCE_TRANSFORMERS_CITATION.strip() + ("\n\n" + citation.strip() if citation.strip() else "")
    data_reference = _dataset_citation(manifest.get("config") or {})
    data_line = f"\nTraining data: {data_reference}.\n" if data_reference else ""
    return (
        f"---\n{front}---\n\n"
        f"# {title}\n\n"
        f"A [sentence-transformers](https://www.sbert.net) bi-encoder for retrieval, distilled from the "
        f"teacher {teacher} with the `{loss}` loss by retrodistill. It maps queries and documents to "
        "vectors whose similarity ranks the documents for the query.\n\n"
        "## Usage\n\n"
        "```python\n"
        "from sentence_transformers import SentenceTransformer\n\n"
        f"model = SentenceTransformer({ref!r})\n"
        'queries = model.encode(["what causes tides?"])\n'
        'documents = model.encode(["Tides are caused by the Moon\'s gravity.", "Paris is in France."])\n'
        "print(model.similarity(queries, documents))\n"
        "```\n\n"
        "## Training details\n\n"
        "| | |\n|---|---|\n"
        f"{table}\n\n"
        f"`{MANIFEST}` beside the weights holds the full record (config, input fingerprints, library versions); "
        "`train_log.json` the training loss per logging step.\n\n"
        "## Evaluation\n\n"
        f"{_evaluation(evaluation, ref)}\n"
        "## Citation\n\n"
        f"```bibtex\n{bibtex}\n```\n"
        f"{data_line}"
    )


def loss_citation(manifest: Mapping[str, Any]) -> str:
    """The BibTeX of the loss a manifest records, rebuilt from its config; ``""`` if it cannot be."""
    from retrodistill.losses import LOSSES

    section = (manifest.get("config") or {}).get("loss") or {}
    try:
        return str(LOSSES.build(str(section.get("name")), section.get("params") or {}).citation)
    except (KeyError, TypeError, ValueError):
        return ""


def write_model_card(
    student_dir: str | Path,
    *,
    repo_id: str | None = None,
    evaluation: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """(Re)write ``README.md`` of a ``train-student`` output from its manifest; return its path."""
    student_dir = Path(student_dir)
    manifest = read_manifest(student_dir)
    path = student_dir / CARD
    card = model_card(
        manifest, citation=loss_citation(manifest), repo_id=repo_id, folder=str(student_dir), evaluation=evaluation
    )
    write_text_atomic(path, card)
    return path
