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

``negative_sampling`` chooses how an example's negatives are drawn, and ``batch_sampling:
tas-balanced`` draws each batch from one k-means cluster of the training queries (still without
repeated texts for in-batch losses): :mod:`retrodistill.train.sampling`.

Losses with in-batch inputs are batched with sentence-transformers' ``NO_DUPLICATES`` sampler, so
no text appears twice in a batch. ``stage: corpus`` trains on single texts (no (query, documents)
rows, no teacher-score store) with an embedding loss, each text pulled toward the teacher's vector
of it: the ``corpus_texts`` among the drawn documents, the split's training queries and
pseudo-queries, random word spans and titles of the drawn documents
(:mod:`retrodistill.train.pseudo_queries`); queries and pseudo-queries take the teacher's query
vectors, so a compressed student learns the query side of the teacher's space too. It is the
first half of the recipe "embedding distillation over the unlabeled corpus, then Margin-MSE on the
training queries" (the second half is a ``queries`` run whose ``student.model`` is the first
run's output)::

    OUT/
      (sentence-transformers model files)   load with SentenceTransformer(OUT)
      manifest.json                         config, loss parameters (every term's), inputs, sampling, versions,
                                            counts
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
from pathlib import Path
from typing import Any

import yaml

from retrodistill.artifacts import (
    model_revision,
    publish_dir,
    read_manifest,
    write_manifest,
    write_text_atomic,
)
from retrodistill.config import TrainConfig, to_dict
from retrodistill.outputs import check_output, clean_stale_staging, output_lock
from retrodistill.train.hub import HubTarget, push_student
from retrodistill.train.model_card import CARD, model_card
from retrodistill.train.reporting import LOGS, check_report_to, publish_logs, reporting
from retrodistill.train.training_data import corpus_data, query_data

logger = logging.getLogger(__name__)

STAGE = "train-student"
STAGES = ("queries", "corpus")
_IN_BATCH_INPUTS = frozenset({"student_in_batch", "positive_index"})


def _evaluation_arguments(config: TrainConfig, evaluator: Any, *, resuming: bool) -> dict[str, Any]:
    """The trainer's evaluation arguments: every ``eval_steps`` steps, the best checkpoint kept if asked.

    A fresh run also evaluates the student it starts from (step 0: where the curves begin); a resumed
    run's log already has that point.
    """
    if evaluator is None:
        return {"eval_strategy": "no"}
    return {
        "eval_strategy": "steps",
        "eval_steps": config.eval_steps,
        "eval_on_start": not resuming,
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
    manifest_extra: dict[str, Any] | None = None,
) -> Path:
    """Train and publish the student at ``config.out``; then push it to ``push_to_hub`` if given.

    A config with ``stages`` runs them all (:func:`retrodistill.train.multistage.run_stages`), each
    through this function; ``manifest_extra`` adds fields to the student's manifest (the recipe's record).

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
    if config.stages:
        if resume_from is not None:
            raise ValueError("resume_from is for one training run; a recipe with stages resumes by itself")
        from retrodistill.train.multistage import run_stages

        return run_stages(config, show_progress=show_progress, overwrite=overwrite, push_to_hub=push_to_hub)
    check_output(config.out, inputs=training_inputs(config), overwrite=overwrite)
    from retrodistill.train.evaluation import check_eval_settings
    from retrodistill.train.sampling import check_sampling

    _check_checkpointing(config)
    check_eval_settings(config)
    check_sampling(config)
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
            manifest_extra=manifest_extra or {},
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
    manifest_extra: dict[str, Any],
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
    prepare = corpus_data if config.stage == "corpus" else query_data
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
        if main_process:  # one line per run, not per rank
            logger.warning("resuming %s from %s", out, resume)

    from retrodistill.train.evaluation import build_evaluator

    evaluator = build_evaluator(
        config, collection, data.candidates, data.holdout, data.teacher_rankings, max_seq_length=saved_max_seq_length
    )
    work.mkdir(parents=True, exist_ok=True)
    in_batch = bool(needs & _IN_BATCH_INPUTS)
    # The manifest's record (the config holds the settings; this, what they became for this data).
    sampling: dict[str, Any] = {"negative_sampling": config.negative_sampling, "batch_sampling": config.batch_sampling}
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
            **_evaluation_arguments(config, evaluator, resuming=resume is not None),
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
            batch_sampler=batch_sampler(in_batch=in_batch, world_size=world_size),
        )
        if config.batch_sampling == "tas-balanced" and data.examples is not None:  # stage: queries (checked)
            from retrodistill.train.sampling import tas_batch_sampler

            # After the arguments: they start the process group, and every rank takes rank 0's clusters.
            args.batch_sampler, sampling["tas"] = tas_batch_sampler(
                model, collection, data.examples, dataset, config, world_size=world_size, in_batch=in_batch
            )
            sampling["tas"]["margin_balanced"] = bool(data.counts.get("margin_balanced"))
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
                    "sampling": sampling,
                    "counts": counts,
                    "train_loss": mean_loss,
                    "wall_time_s": round(time.perf_counter() - start, 3),
                    **manifest_extra,
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
