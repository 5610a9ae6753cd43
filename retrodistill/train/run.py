"""The ``train-student`` stage: distil a teacher into a bi-encoder.

Recipe (``stage: queries``, the default): load the collection split and the teacher-score store;
refuse a store made for another corpus, other queries or other candidates; build examples (query,
1 + N documents, the teacher's data for them); train the student with sentence-transformers'
trainer (Hugging Face Trainer + accelerate, so ``accelerate launch`` / ``torchrun`` scale it out)
and our loss; write the student directory.

What the examples carry follows from what the loss needs (``retrodistill.losses.required_inputs``):

* score losses: the teacher's ``1 + N`` scores per row (the ``scores`` label layout);
* teacher-free losses (``infonce``, ``self-distill``): nothing; ``store`` may be null, then
  ``candidates`` names the negatives;
* ``in-batch-kl`` and ``embedding``: row ids into a teacher table holding every stored score among
  the training queries and documents and, for ``embedding``, the teacher's embeddings from a
  teacher-embedding store (computed first with ``teacher_embeddings.model`` when missing);
* ``pairwise-kl`` (alone or as a ``combined`` term beside a pointwise loss, as PairDistill trains):
  row ids too; the table also holds the ``score-pairwise`` store named by ``pair_store``, checked
  against the collection and candidates, and each batch gets the ``(B, 1+N, 1+N)`` probabilities of
  its rows' documents (``PairStore.matrices``, NaN where unscored). Only pairs among a query's top-m
  candidates are scored, so a row may have none; the run refuses a store that scores no pair of
  any training row, and records how many rows have one (``counts.pairwise_rows``). A batch whose
  rows all lack scored pairs makes ``pairwise-kl`` raise: build the store from the training
  candidates with an ``m`` that covers the negative pool, or use larger batches.

Losses with in-batch inputs are batched with sentence-transformers' ``NO_DUPLICATES`` sampler, so
no text appears twice in a batch. ``stage: corpus`` trains on the corpus's documents alone (no
queries, no store) with an embedding loss: the first half of the recipe "embedding distillation over
the unlabeled corpus, then Margin-MSE on the training queries" (the second half is a ``queries``
run whose ``student.model`` is the first run's output)::

    OUT/
      (sentence-transformers model files)   load with SentenceTransformer(OUT)
      manifest.json                         config, loss parameters (every term's), inputs, versions, counts
      config.yaml                           the resolved training config
      train_log.json                        the trainer's log history (loss, and loss_<term> per logging step)
      README.md                             the model card, written from the manifest (train/model_card.py)
      teacher_projection.safetensors        the learned student -> teacher map, when an embedding loss used one;
                                            not part of the model, kept for inspection and reuse
      logs/                                 TensorBoard event files, with report_to: [tensorboard]
                                            (:mod:`.reporting`; wandb keeps its own)

The student is trained in ``.OUT.training/`` beside ``OUT`` and renamed onto it once complete; with
``save_steps`` that folder holds the checkpoints a re-run resumes from (:mod:`.checkpoints`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from retrodistill.artifacts import (
    MANIFEST,
    ArtifactMismatchError,
    check_inputs,
    model_revision,
    publish_dir,
    read_manifest,
    recorded_input,
    write_manifest,
    write_text_atomic,
)
from retrodistill.config import TrainConfig, to_dict
from retrodistill.data.candidates import CandidateSet, read_candidates, triples_candidates
from retrodistill.data.collections import Collection
from retrodistill.data.pair_store import PairStore
from retrodistill.data.store import TeacherStore
from retrodistill.data.teacher_embeddings import TeacherEmbeddings
from retrodistill.outputs import check_output, clean_stale_staging, output_lock
from retrodistill.train.examples import Examples, build_examples, corpus_columns, sample_corpus
from retrodistill.train.hub import HubTarget, push_student
from retrodistill.train.model_card import CARD, model_card
from retrodistill.train.reporting import LOGS, check_report_to, publish_logs, reporting
from retrodistill.train.teacher_table import TeacherTable, build_teacher_table

logger = logging.getLogger(__name__)

STAGE = "train-student"
STAGES = ("queries", "corpus")
_TABLE_INPUTS = frozenset({"teacher_in_batch", "teacher_embeddings", "teacher_pairwise"})
_IN_BATCH_INPUTS = frozenset({"student_in_batch", "positive_index"})
_CORPUS_INPUTS = frozenset({"student_embeddings", "teacher_embeddings"})


@dataclass
class _TrainingData:
    """What the trainer reads and everything the manifest says about where it came from.

    The ``queries`` stage has :attr:`examples` (integer arrays; texts looked up per batch) and, for
    the ``ids`` label layout, :attr:`label`; the ``corpus`` stage has plain :attr:`columns`.
    """

    examples: Examples | None = None
    label: Any = None  # (n, 2 + N) int64 rows into table, when a loss reads a TeacherTable
    columns: dict[str, list[object]] | None = None
    table: TeacherTable | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    candidates: CandidateSet | None = None
    holdout: frozenset[str] = frozenset()  # training queries held out as the dev split
    teacher_rankings: dict[str, Any] = field(default_factory=dict)  # held-out query -> TeacherRanking

    def dataset(self, collection: Collection) -> Any:
        import datasets

        if self.examples is not None:
            return self.examples.dataset(collection, self.label)
        return datasets.Dataset.from_dict(self.columns or {})


def _load_candidates(config: TrainConfig, store: TeacherStore | None) -> CandidateSet:
    """The candidates the store was scored from: ``--candidates``, else the store's own record."""
    if config.candidates:
        return read_candidates(config.candidates)
    if store is None:
        raise ValueError(
            "without a teacher-score store, set candidates: the candidates artifact to draw negatives from"
        )
    triples = recorded_input(store.path, store.manifest, "triples")
    if triples is not None:
        import pyarrow.compute as pc

        read = triples_candidates(triples)
        # Grouped by query, each query's documents in file order (a stable sort), as sampling expects.
        table = read.table.take(pc.sort_indices(read.table, sort_keys=[("query_id", "ascending")]))
        return CandidateSet(read.path, table, read.manifest)
    candidates = recorded_input(store.path, store.manifest, "candidates")
    if candidates is None:
        raise ValueError(f"the store {store.path} does not say which candidates it was scored from; pass --candidates")
    return read_candidates(candidates)


def _teacher_embeddings(
    config: TrainConfig, collection: Collection, query_ids: list[str], doc_ids: list[str], show_progress: bool
) -> TeacherEmbeddings:
    """Open the teacher-embedding store, or compute it with ``teacher_embeddings.model`` when missing."""
    settings = config.teacher_embeddings
    if not settings.path:
        raise ValueError(
            f"loss {config.loss.name!r} needs teacher embeddings: set teacher_embeddings.path (a store, "
            "or where to write one) and teacher_embeddings.model (the bi-encoder teacher that computes it)"
        )
    path = Path(settings.path)
    fingerprints = {k: v for k, v in collection.fingerprints.items() if k in ("corpus", "queries")}
    if (path / MANIFEST).is_file():
        store = TeacherEmbeddings.open(path)
        check_inputs(
            store.inputs,
            fingerprints,
            artifact=f"teacher-embedding store {path}",
            given=f"collection {config.data.dataset}",
        )
        stored_model = store.manifest.get("teacher", {}).get("model")
        if settings.model and stored_model != settings.model:
            raise ArtifactMismatchError(
                f"teacher-embedding store {path} holds embeddings of {stored_model!r}, not of "
                f"teacher_embeddings.model {settings.model!r}"
            )
        # Fail here, before the model is built, rather than at table building.
        store.vectors("queries", query_ids)
        store.vectors("documents", doc_ids)
        return store
    if not settings.model:
        raise ValueError(
            f"{path} holds no teacher-embedding store ({MANIFEST} is missing) and teacher_embeddings.model "
            "is not set, so none can be computed there"
        )
    from retrodistill.stages.embed_teacher import embed_teacher, load_teacher

    # The embed-teacher stage's core, for exactly these ids; documents go through the shared corpus cache.
    teacher = load_teacher(settings.model, settings.similarity, settings.batch_size, settings.max_length)
    return embed_teacher(path, teacher, collection, query_ids, doc_ids, show_progress=show_progress)


def _pair_store(config: TrainConfig, loss_name: str, collection: Collection, candidates: CandidateSet) -> PairStore:
    """Open ``pair_store`` and refuse one made for another corpus, other queries or other candidates."""
    if not config.pair_store:
        raise ValueError(
            f"loss {loss_name!r} needs pairwise teacher probabilities: run `retrodistill score-pairwise` on "
            "the training candidates and set pair_store to the store it writes"
        )
    pairs = PairStore.open(config.pair_store)
    check_inputs(
        {k: v for k, v in pairs.inputs.items() if k in ("corpus", "queries", "candidates")},
        {**collection.fingerprints, "candidates": candidates.fingerprint},
        artifact=f"pairwise teacher store {pairs.path}",
        given=f"collection {config.data.dataset} and candidates {candidates.path}",
    )
    return pairs


def _rows_with_scored_pairs(pairs: PairStore, query_ids: list[str], doc_ids: list[list[str]]) -> int:
    """How many examples have at least one scored (off-diagonal) pair in ``pairs``."""
    import numpy as np

    return sum(int(np.isfinite(pairs.matrix(q, docs)).any()) for q, docs in zip(query_ids, doc_ids, strict=True))


def _query_data(
    config: TrainConfig, collection: Collection, loss_name: str, needs: frozenset[str], show_progress: bool
) -> _TrainingData:
    """Examples (query, 1 + N documents) and the teacher's data for them."""
    from retrodistill.losses.combined import TEACHER_INPUTS

    needs_teacher = bool(needs & TEACHER_INPUTS)
    store = None
    if config.store:
        store = TeacherStore.open(config.store)
        check_inputs(
            {k: v for k, v in store.inputs.items() if k in ("corpus", "queries")},
            collection.fingerprints,
            artifact=f"teacher-score store {store.path}",
            given=f"collection {config.data.dataset}",
        )
    elif needs & {"teacher_scores", "teacher_in_batch"}:
        raise ValueError(f"loss {loss_name!r} needs the teacher's scores: set store (a teacher-score store)")
    candidates = _load_candidates(config, store)
    if store is not None and store.inputs.get("candidates") != candidates.fingerprint:
        raise ArtifactMismatchError(
            f"teacher-score store {store.path} was not scored from candidates {candidates.path}:\n"
            f"  candidates: store has {store.inputs.get('candidates')}, given {candidates.fingerprint}"
        )
    pairs = _pair_store(config, loss_name, collection, candidates) if "teacher_pairwise" in needs else None
    wants_scores = store is not None and bool(needs & {"teacher_scores", "teacher_in_batch"})
    # One float per candidate row, joined column-wise: never a dict of every stored score.
    scores = store.scores_for(candidates) if store is not None and wants_scores else None
    holdout = _holdout(config, collection, candidates)
    examples = build_examples(
        collection,
        candidates,
        scores,
        negatives=config.negatives,
        negative_pool=config.negative_pool,
        epochs=config.epochs,
        seed=config.seed,
        exclude=holdout,
    )
    if not len(examples):
        raise ValueError(
            f"no training examples: {examples.skipped_queries or 'no candidates'} "
            f"(split {config.data.split!r}, negatives={config.negatives}, negative_pool={config.negative_pool})"
        )
    data = _TrainingData(
        examples=examples,
        inputs={k: v for k, v in collection.fingerprints.items()} | {"candidates": candidates.fingerprint},
        counts={
            "examples": len(examples),
            "documents_per_example": examples.width,
            "skipped_queries": examples.skipped_queries,
        },
    )
    if holdout:
        from retrodistill.train.evaluation import teacher_rankings

        data.holdout = holdout
        data.counts["held_out_queries"] = len(holdout)
        if store is not None:
            held_scores = scores if scores is not None else store.scores_for(candidates)
            data.teacher_rankings = teacher_rankings(candidates, held_scores, holdout)
    data.candidates = candidates
    if store is not None and needs_teacher:
        data.inputs["teacher_scores"] = store.fingerprint
        data.teacher = store.manifest.get("teacher", {})
    if pairs is not None:
        scored_rows = _rows_with_scored_pairs(pairs, examples.example_query_ids(), examples.example_doc_ids())
        if not scored_rows:
            raise ValueError(
                f"the pairwise teacher store {pairs.path} scores no pair among the documents of any of the "
                f"{len(examples)} training examples: score it with `retrodistill score-pairwise` over these "
                "candidates with an m that covers the negative pool"
            )
        data.inputs["pair_store"] = pairs.fingerprint
        data.teacher = {**data.teacher, "pairwise": pairs.manifest.get("teacher", {})}
        data.counts["pairwise_rows"] = scored_rows
    if needs & _TABLE_INPUTS:
        # Losses that look past a row's own documents: a table over the examples' ids (small sets).
        embeddings = None
        if "teacher_embeddings" in needs:
            # The store covers every document the negatives can be drawn from, so other seeds reuse it.
            pool = _negative_pool_documents(candidates, set(examples.query_ids), config.negative_pool)
            embeddings = _teacher_embeddings(config, collection, sorted(examples.query_ids), pool, show_progress)
            data.inputs["teacher_embeddings"] = str(embeddings.manifest["fingerprint"])
            data.teacher = {**data.teacher, "embeddings": embeddings.manifest.get("teacher", {})}
        stored = store.scores() if store is not None and wants_scores else None
        data.table = build_teacher_table(examples.query_ids, examples.distinct_doc_ids(), stored, embeddings, pairs)
        data.label = _table_label(examples, data.table)
        data.counts["teacher_pairs"] = len(data.table.pair_keys)
    return data


def _holdout(config: TrainConfig, collection: Collection, candidates: CandidateSet) -> frozenset[str]:
    """The ``eval_holdout`` training queries left out as a dev split: drawn among those with a judged candidate."""
    if not config.eval_holdout:
        return frozenset()
    import pyarrow.compute as pc

    from retrodistill.train.evaluation import holdout_queries

    table = candidates.table
    judged = pc.unique(table.column("query_id").filter(pc.greater(table.column("label"), 0))).to_pylist()
    return holdout_queries([q for q in judged if q in collection.queries], config.eval_holdout, config.seed)


def _negative_pool_documents(candidates: CandidateSet, queries: set[str], negative_pool: int) -> list[str]:
    """Sorted ids of the documents the examples of ``queries`` can draw: positives and pooled negatives."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = candidates.table
    keep = pc.and_(
        pc.is_in(table.column("query_id"), value_set=pa.array(sorted(queries), type=pa.string())),
        pc.or_(pc.greater(table.column("label"), 0), pc.less_equal(table.column("rank"), negative_pool)),
    )
    return sorted(pc.unique(table.column("doc_id").filter(keep)).to_pylist())


def _table_label(examples: Examples, table: TeacherTable) -> Any:
    """The ``ids`` label layout: ``[query_row, doc_row_0, …, doc_row_N]`` into ``table``, per example."""
    import numpy as np

    query_row, doc_row = table.query_rows(), table.doc_rows()
    queries = np.array([query_row[q] for q in examples.query_ids], dtype=np.int64)[examples.query_rows]
    docs = np.array([doc_row[d] for d in examples.doc_column.take(examples.candidate_rows.ravel()).to_pylist()])
    return np.concatenate([queries[:, None], docs.reshape(examples.candidate_rows.shape)], axis=1)


def _corpus_data(
    config: TrainConfig, collection: Collection, loss_name: str, needs: frozenset[str], show_progress: bool
) -> _TrainingData:
    """The corpus stage: documents alone, each with its teacher embedding."""
    extra = sorted(needs - _CORPUS_INPUTS)
    if extra:
        raise ValueError(
            f"the corpus stage trains on documents alone, but loss {loss_name!r} needs {', '.join(extra)}: "
            "use the 'embedding' loss there (stage: queries for the others)"
        )
    doc_ids = sample_corpus(collection, config.corpus_documents, config.seed)
    embeddings = _teacher_embeddings(config, collection, [], doc_ids, show_progress)
    table = build_teacher_table([], doc_ids, None, embeddings)
    return _TrainingData(
        columns=corpus_columns(collection, doc_ids, table, config.epochs),
        table=table,
        inputs={
            "corpus": collection.fingerprints["corpus"],
            "teacher_embeddings": str(embeddings.manifest["fingerprint"]),
        },
        teacher={"embeddings": embeddings.manifest.get("teacher", {})},
        counts={"examples": len(doc_ids) * config.epochs, "documents": len(doc_ids), "documents_per_example": 1},
    )


def _evaluation_arguments(config: TrainConfig, evaluator: Any) -> dict[str, Any]:
    """The trainer's evaluation arguments: every ``eval_steps`` steps, the best checkpoint kept if asked."""
    if evaluator is None:
        return {"eval_strategy": "no"}
    return {
        "eval_strategy": "steps",
        "eval_steps": config.eval_steps,
        "load_best_model_at_end": config.load_best_model_at_end,
        "metric_for_best_model": f"eval_{evaluator.name}_{config.metric_for_best_model}",
        "greater_is_better": True,
    }


def _trainer_class() -> Any:
    """sentence-transformers' trainer without its model-card callback, whose evaluations draw no randomness.

    The student's card is ours (:mod:`retrodistill.train.model_card`); the callback would only compute
    "widget examples" from the training data when the trainer is built (time, and a tqdm bar of its own).
    ``add_model_card_callback`` is the hook sentence-transformers documents for this.

    An evaluation builds a DataLoader iterator, which draws its base seed from torch's global
    generator, so every dropout mask after it would differ from a run without evaluations. The
    random states are restored after each evaluation: ``eval_steps`` never changes the student.
    """
    import random

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformerTrainer

    class Trainer(SentenceTransformerTrainer):  # type: ignore[misc]
        def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
            return None

        def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
            # transformers 5 calls _save on every rank and checks the rank there; sentence-transformers'
            # override assumes process zero, so every rank would write each checkpoint's model files.
            if self.args.should_save:
                super()._save(output_dir, state_dict)

        def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            python_state, numpy_state = random.getstate(), np.random.get_state()
            try:
                with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
                    return dict(super().evaluate(*args, **kwargs))
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)

    return Trainer


def warmup_arguments(ratio: float) -> dict[str, Any]:
    """The trainer arguments that warm the learning rate up over ``ratio`` of the training steps.

    transformers v5 dropped ``warmup_ratio`` and reads ``warmup_steps`` as a ratio below 1 and as a
    step count from 1 on, so a ratio of 1 or more would silently become a step count: refused here.
    The meaning of a fractional ``warmup_steps`` is checked on this transformers version rather than
    assumed; where it is not a ratio, the older ``warmup_ratio`` is used.

    Raises:
        ValueError: ``ratio`` is not in [0, 1), naming the key.
        RuntimeError: this transformers version reads a fractional ``warmup_steps`` otherwise.
    """
    import math

    from sentence_transformers import SentenceTransformerTrainingArguments

    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio < 1:
        raise ValueError(
            f"warmup_ratio must be a fraction of the training steps in [0, 1), got {ratio!r} "
            "(for a warm-up of k steps out of n, set warmup_ratio to k / n)"
        )
    # A fractional warmup_steps first: sentence-transformers still accepts warmup_ratio but logs a
    # deprecation warning for it on every run. Both give ceil(ratio * steps) warm-up steps.
    probe = SentenceTransformerTrainingArguments(output_dir="unused", warmup_steps=float(ratio), report_to="none")
    if probe.get_warmup_steps(1000) == math.ceil(1000 * ratio):
        return {"warmup_steps": float(ratio)}
    if "warmup_ratio" in getattr(SentenceTransformerTrainingArguments, "__dataclass_fields__", {}):
        return {"warmup_ratio": float(ratio)}
    raise RuntimeError(
        "this transformers version reads a fractional warmup_steps as a step count and has no warmup_ratio; "
        "retrodistill cannot pass warmup_ratio to it"
    )


def training_inputs(config: TrainConfig) -> dict[str, str | None]:
    """What a run reads, by option name: the output may never be (or contain) one of them."""
    return {
        "--store": config.store,
        "--candidates": config.candidates,
        "pair_store": config.pair_store,
        "teacher_embeddings.path": config.teacher_embeddings.path,
        "--student": config.student.model,
        "--dataset": config.data.dataset,
        "--data-dir": config.data.data_dir,
    }


def run(
    config: TrainConfig,
    *,
    show_progress: bool = True,
    overwrite: bool = False,
    push_to_hub: HubTarget | None = None,
    resume_from: str | os.PathLike[str] | None = None,
) -> Path:
    """Train and publish the student at ``config.out``; then push it to ``push_to_hub`` if given.

    An existing, non-empty ``config.out`` is refused unless ``overwrite`` (then it is replaced only
    once the new student is complete); ``config.out`` may never be or contain an input. The push
    (:func:`retrodistill.train.hub.push_student`, main process only) starts after the student folder
    is complete and published.

    Training happens in ``.NAME.training`` beside ``config.out`` (:mod:`retrodistill.train.checkpoints`).
    With ``save_steps`` it holds a checkpoint every ``save_steps`` steps and survives a crash: the
    same command run again resumes from the newest complete one (or from ``resume_from``, a
    checkpoint or a folder of them) and ends with the student the uninterrupted run would have
    made. The folder is removed once the student is published, or when a run fails before its
    first checkpoint.

    Raises:
        ResumeError: the staging folder holds checkpoints of a run with other settings (without
            ``overwrite``), or ``resume_from`` holds no complete checkpoint of this run.
    """
    check_output(config.out, inputs=training_inputs(config), overwrite=overwrite)
    from retrodistill.train.evaluation import check_eval_settings

    _check_checkpointing(config)
    check_eval_settings(config)
    check_report_to(config.report_to)
    out = Path(config.out)
    rank = int(os.environ.get("RANK", "0"))
    # One writer per output: a second run on it refuses while this one lives (rank 0's lock holds for all).
    lock = output_lock(out, STAGE) if rank == 0 else contextlib.nullcontext()
    with lock:
        return _train(
            config,
            out,
            main_process=rank == 0,
            show_progress=show_progress,
            overwrite=overwrite,
            push_to_hub=push_to_hub,
            resume_from=resume_from,
        )


def _check_checkpointing(config: TrainConfig) -> None:
    for key in ("save_steps", "save_total_limit"):
        value = getattr(config, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{key} must be a whole number of at least 1 (or null), got {value!r}")


def _train(
    config: TrainConfig,
    out: Path,
    *,
    main_process: bool,
    show_progress: bool,
    overwrite: bool,
    push_to_hub: HubTarget | None,
    resume_from: str | os.PathLike[str] | None,
) -> Path:
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments

    from retrodistill.data.download import load_dataset
    from retrodistill.losses import LOSSES, required_inputs
    from retrodistill.students import STUDENTS
    from retrodistill.train import checkpoints
    from retrodistill.train.distributed import batch_sampler, ddp_arguments
    from retrodistill.train.precision import precision_arguments
    from retrodistill.train.st_loss import StudentDistillationLoss

    start = time.perf_counter()
    if config.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {config.epochs}")
    if config.stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {config.stage!r}")
    warmup = warmup_arguments(config.warmup_ratio)
    report_to = check_report_to(config.report_to)
    precision = precision_arguments(bf16=config.bf16, fp16=config.fp16, cuda=torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun / accelerate launch processes
    # Merged, not passed side by side: on a CPU-only machine both may ask for use_cpu.
    precision |= ddp_arguments(world_size, cuda=torch.cuda.is_available())
    loss = LOSSES.build(config.loss.name, config.loss.params)
    needs = frozenset(required_inputs(loss))
    collection = load_dataset(config.data.dataset, config.data.split, config.data.data_dir)
    prepare = _corpus_data if config.stage == "corpus" else _query_data
    data = prepare(config, collection, config.loss.name, needs, show_progress)

    # Stage beside the destination so the final rename is atomic (same filesystem).
    work = checkpoints.training_dir(out)
    clean_stale_staging(out)  # process-named staging folders of earlier versions' killed runs
    identity = checkpoints.run_identity(to_dict(config), data.inputs)
    if world_size > 1:  # batch_size is per process: resumed on another count, the run trains other batches
        identity["processes"] = world_size
    # Every rank finds the same checkpoint; only the first deletes what is not resumed.
    resume = checkpoints.prepare_resume(work, identity, resume_from=resume_from, overwrite=overwrite, tidy=main_process)

    student_spec = STUDENTS.build(
        "bi-encoder",
        {
            "model": config.student.model,
            "layers": config.student.layers,
            "max_seq_length": config.student.max_seq_length,
            "similarity": config.student.similarity,
            "trust_remote_code": config.student.trust_remote_code,
        },
    )
    model = student_spec.build()
    saved_max_seq_length = model.max_seq_length
    if config.train_max_seq_length is not None:
        # Training cost grows faster than linearly with length on CPU; inference keeps the full length.
        model.max_seq_length = config.train_max_seq_length
    torch.manual_seed(config.seed)  # the embedding projection's initialisation
    train_loss = StudentDistillationLoss(
        model, loss, similarity=config.student.similarity, scale=config.student.scale, teacher=data.table
    )
    dataset = data.dataset(collection)
    resumed_at = None if resume is None else checkpoints.checkpoint_step(resume)  # rotation may delete it
    if resume is not None:
        checkpoints.load_projection(resume, train_loss.projection)
        logger.warning("resuming %s from %s", out, resume)

    from retrodistill.train.evaluation import build_evaluator

    evaluator = build_evaluator(config, collection, data.candidates, data.holdout, data.teacher_rankings)
    work.mkdir(parents=True, exist_ok=True)
    published = False
    try:
        args = SentenceTransformerTrainingArguments(
            output_dir=str(work / "checkpoints"),
            num_train_epochs=1,  # epochs are unrolled into the dataset, each with fresh negatives
            max_steps=config.max_steps,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            **warmup,
            weight_decay=config.weight_decay,
            seed=config.seed,
            data_seed=config.seed,
            **precision,
            logging_steps=config.logging_steps,
            **_evaluation_arguments(config, evaluator),
            save_strategy="steps" if config.save_steps else "no",
            save_steps=config.save_steps or 500,
            # The trainer would delete the previous checkpoint before the new one is marked complete.
            save_total_limit=None,
            dataloader_pin_memory=torch.cuda.is_available(),
            # Tokenising 1 + N texts per example is the data path's cost (~5k texts/s per core): workers
            # keep a GPU fed; each gets the dataset, whose corpus pickles as its cache folder only.
            dataloader_num_workers=config.dataloader_num_workers,
            report_to=report_to or "none",
            run_name=out.name,  # wandb's run name
            disable_tqdm=True,  # our bar: use_rich_progress below
            # In-batch negatives must not repeat a query's own positive, on any rank.
            batch_sampler=batch_sampler(in_batch=bool(needs & _IN_BATCH_INPUTS), world_size=world_size),
        )
        marker = checkpoints.CheckpointCallback(identity, train_loss.projection, config.save_total_limit)
        trainer = _trainer_class()(
            model=model, args=args, train_dataset=dataset, loss=train_loss, evaluator=evaluator, callbacks=[marker]
        )
        # One rich bar with the current loss instead of tqdm and printed log dicts.
        from retrodistill.train.progress import use_rich_progress

        use_rich_progress(trainer, show_progress)
        with reporting(trainer, report_to, work / LOGS, resumed_at=resumed_at):
            result = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)

        if trainer.is_world_process_zero():
            staged = work / "model"
            shutil.rmtree(staged, ignore_errors=True)
            model.max_seq_length = saved_max_seq_length
            model.save(str(staged))
            if train_loss.projection is not None:
                from safetensors.torch import save_model

                save_model(train_loss.projection, str(staged / "teacher_projection.safetensors"))
            cfg = to_dict(config)
            (staged / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            (staged / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=2) + "\n")
            publish_logs(work, staged)
            counts = {
                **data.counts,
                "training_stage": config.stage,
                "steps": trainer.state.global_step,
                # The dataset holds every epoch (fresh negatives each) and the trainer makes one
                # pass, so the share of it trained is the share of the epochs run.
                "epochs": round(float(trainer.state.epoch or 0.0) * config.epochs, 4),
            }
            mean_loss: float | None = result.training_loss
            if resumed_at is not None:
                counts["resumed_at_step"] = resumed_at
                steps = trainer.state.global_step
                mean_loss = checkpoints.whole_run_loss(
                    trainer.state.log_history, resumed_at, result.training_loss, steps
                )
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
                    "teacher": data.teacher,
                    "inputs": data.inputs,
                    "counts": counts,
                    "train_loss": mean_loss,
                    "wall_time_s": round(time.perf_counter() - start, 3),
                },
            )
            # Replaces the stock card model.save wrote: every figure on it is one the manifest records.
            write_text_atomic(staged / CARD, model_card(read_manifest(staged), citation=loss.citation, folder=str(out)))
            publish_dir(staged, out)
            published = True
            # Only now: until the student is published, the checkpoints are what a re-run resumes from.
            shutil.rmtree(work, ignore_errors=True)
            if push_to_hub is not None:
                push_student(out, push_to_hub)
    finally:
        if main_process and not published and work.is_dir():
            if checkpoints.complete_checkpoints(work / "checkpoints"):
                logger.warning("the checkpoints in %s are kept: run the same command again to resume", work)
            else:  # nothing to resume from: leave no staging folder behind
                shutil.rmtree(work, ignore_errors=True)
    return out
