"""The ``train-student`` stage: distil a teacher-score store into a bi-encoder.

Recipe: load the collection split and the store; refuse a store made for another corpus, other
queries or other candidates; build examples (query, 1 + N documents, 1 + N teacher scores); train
the student with sentence-transformers' trainer (Hugging Face Trainer + accelerate, so
``accelerate launch`` / ``torchrun`` scale it out) and our loss; write the student directory::

    OUT/
      (sentence-transformers model files)   load with SentenceTransformer(OUT)
      manifest.json                         config, loss parameters, inputs, versions, counts, wall time
      config.yaml                           the resolved training config
      train_log.json                        the trainer's log history (loss per logging step)
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from retrodistill.artifacts import (
    ArtifactMismatchError,
    check_inputs,
    model_revision,
    write_manifest,
)
from retrodistill.config import TrainConfig, to_dict
from retrodistill.data.candidates import (
    CandidateSet,
    candidate_order,
    candidates_fingerprint,
    read_candidates,
    read_triples,
)
from retrodistill.data.store import TeacherStore
from retrodistill.train.examples import build_examples

STAGE = "train-student"


def _load_candidates(config: TrainConfig, store: TeacherStore) -> CandidateSet:
    """The candidates the store was scored from: ``--candidates``, else the store's own record."""
    if config.candidates:
        return read_candidates(config.candidates)
    recorded = store.manifest.get("config", {})
    if recorded.get("triples"):
        rows = read_triples(recorded["triples"])
        manifest = {"fingerprint": candidates_fingerprint(sorted(rows, key=candidate_order))}
        return CandidateSet(Path(recorded["triples"]), rows, manifest)
    if not recorded.get("candidates"):
        raise ValueError(f"the store {store.path} does not say which candidates it was scored from; pass --candidates")
    return read_candidates(recorded["candidates"])


def run(config: TrainConfig, *, show_progress: bool = True) -> Path:
    import datasets
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from retrodistill.data.download import load_dataset
    from retrodistill.losses import LOSSES
    from retrodistill.students import STUDENTS
    from retrodistill.train.st_loss import StudentDistillationLoss

    start = time.perf_counter()
    if config.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {config.epochs}")
    collection = load_dataset(config.data.dataset, config.data.split, config.data.data_dir)
    store = TeacherStore.open(config.store)
    store_inputs = store.inputs
    check_inputs(
        {k: v for k, v in store_inputs.items() if k in ("corpus", "queries")},
        collection.fingerprints,
        artifact=f"teacher-score store {store.path}",
        given=f"collection {config.data.dataset}",
    )
    candidates = _load_candidates(config, store)
    if store_inputs.get("candidates") != candidates.fingerprint:
        raise ArtifactMismatchError(
            f"teacher-score store {store.path} was not scored from candidates {candidates.path}:\n"
            f"  candidates: store has {store_inputs.get('candidates')}, given {candidates.fingerprint}"
        )

    loss = LOSSES.build(config.loss.name, config.loss.params)
    examples = build_examples(
        collection,
        candidates,
        store.scores(),
        negatives=config.negatives,
        negative_pool=config.negative_pool,
        epochs=config.epochs,
        seed=config.seed,
    )
    if not len(examples):
        raise ValueError(
            f"no training examples: {examples.skipped_queries or 'no candidates'} "
            f"(split {config.data.split!r}, negatives={config.negatives}, negative_pool={config.negative_pool})"
        )
    student_spec = STUDENTS.build(
        "bi-encoder",
        {
            "model": config.student.model,
            "layers": config.student.layers,
            "max_seq_length": config.student.max_seq_length,
            "similarity": config.student.similarity,
        },
    )
    model = student_spec.build()
    saved_max_seq_length = model.max_seq_length
    if config.train_max_seq_length is not None:
        # Training cost grows faster than linearly with length on CPU; inference keeps the full length.
        model.max_seq_length = config.train_max_seq_length
    train_loss = StudentDistillationLoss(model, loss, similarity=config.student.similarity, scale=config.student.scale)
    dataset = datasets.Dataset.from_dict(examples.to_columns())

    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Stage beside the destination so the final rename is atomic (same filesystem).
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        args = SentenceTransformerTrainingArguments(
            output_dir=str(work / "checkpoints"),
            num_train_epochs=1,  # epochs are unrolled into the dataset, each with fresh negatives
            max_steps=config.max_steps,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            warmup_steps=config.warmup_ratio,  # transformers v5: a float below 1 is a ratio of the total steps
            weight_decay=config.weight_decay,
            seed=config.seed,
            data_seed=config.seed,
            bf16=config.bf16,
            logging_steps=config.logging_steps,
            save_strategy="no",
            dataloader_pin_memory=torch.cuda.is_available(),
            report_to="none",
            disable_tqdm=not show_progress,
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=train_loss)
        result = trainer.train()

        if trainer.is_world_process_zero():
            staged = work / "model"
            model.max_seq_length = saved_max_seq_length
            model.save(str(staged))
            cfg = to_dict(config)
            (staged / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            (staged / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=2) + "\n")
            write_manifest(
                staged,
                {
                    "stage": STAGE,
                    "config": cfg,
                    "loss": {"name": config.loss.name, **loss.config()},
                    "student": {
                        "model": config.student.model,
                        "revision": model_revision(config.student.model),
                        "layers": config.student.layers,
                        "similarity": config.student.similarity,
                        "scale": config.student.scale,
                        "max_seq_length": model.max_seq_length,
                    },
                    "teacher": store.manifest.get("teacher", {}),
                    "inputs": {
                        **{k: v for k, v in collection.fingerprints.items()},
                        "candidates": candidates.fingerprint,
                        "teacher_scores": store.fingerprint,
                    },
                    "counts": {
                        "examples": len(examples),
                        "documents_per_example": len(examples.docs[0]),
                        "skipped_queries": examples.skipped_queries,
                        "steps": trainer.state.global_step,
                    },
                    "train_loss": result.training_loss,
                    "wall_time_s": round(time.perf_counter() - start, 3),
                },
            )
            (staged / "README.retrodistill.md").write_text(_card(config, loss.config(), len(examples)))
            if out.exists():
                backup = out.with_name(f".{out.name}.old")
                shutil.rmtree(backup, ignore_errors=True)
                out.rename(backup)
                staged.rename(out)
                shutil.rmtree(backup, ignore_errors=True)
            else:
                staged.rename(out)
    finally:
        # A failed or interrupted run leaves neither a half-written student nor its staging folder.
        shutil.rmtree(work, ignore_errors=True)
    return out


def _card(config: TrainConfig, loss_params: dict[str, Any], n_examples: int) -> str:
    return (
        f"# Student distilled with retrodistill\n\n"
        f"- student: `{config.student.model}`"
        + (f" (first {config.student.layers} layers)" if config.student.layers else "")
        + f"\n- teacher scores: `{config.store}`\n- loss: `{config.loss.name}` {loss_params}\n"
        f"- data: `{config.data.dataset}` split `{config.data.split}`, {n_examples:,} examples, "
        f"1 + {config.negatives} documents each\n\n"
        "Load it with `SentenceTransformer(path)`; `manifest.json` holds the full provenance.\n"
    )
