"""``retrodistill train-student``: distil a teacher-score store into a bi-encoder."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from retrodistill.cli.common import (
    ConfigOption,
    DataDirOption,
    OverwriteOption,
    SetOption,
    console,
    resolve,
    user_errors,
)


def train_student(
    store: Annotated[str | None, typer.Option(help="Teacher-score store (default: runs/teacher-scores).")] = None,
    student: Annotated[str | None, typer.Option(help="Student model: hub id or path.")] = None,
    layers: Annotated[int | None, typer.Option(help="Keep only the student's first k layers.")] = None,
    loss: Annotated[
        str | None, typer.Option(help="Loss plug-in (see `retrodistill plugins`) (default: margin-mse).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="BEIR name or folder the store was made from.")] = None,
    data_dir: DataDirOption = None,
    split: Annotated[str | None, typer.Option(help="Qrels split of the training queries (default: train).")] = None,
    candidates: Annotated[str | None, typer.Option(help="Candidates artifact (default: the store's).")] = None,
    out: Annotated[str | None, typer.Option(help="Output model directory (default: runs/student).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the positives, fresh negatives each.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (-1: no limit).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Examples per step and process (torchrun: global batch = this x processes).")
    ] = None,
    negatives: Annotated[int | None, typer.Option(help="Negatives per example (N of 1+N).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling and training.")] = None,
    save_steps: Annotated[
        int | None,
        typer.Option(
            help="Save a checkpoint every N steps (and at the end) in .OUT.training beside --out; "
            "running the same command again resumes from the newest complete one."
        ),
    ] = None,
    resume_from: Annotated[
        str | None,
        typer.Option(
            "--resume-from",
            metavar="DIR",
            help="Resume from this checkpoint (a checkpoint-N folder, or a folder of them: the newest) "
            "of a run with the same settings.",
        ),
    ] = None,
    report_to: Annotated[
        list[str] | None,
        typer.Option(
            "--report-to",
            metavar="NAME",
            help="Also log every loss term and eval figure to tensorboard (event files in .OUT.training/logs, "
            "published as OUT/logs) or wandb (a run named after OUT); repeatable.",
        ),
    ] = None,
    eval_steps: Annotated[
        int | None,
        typer.Option(
            help="Evaluate every N steps (nDCG@10, RR@10 and the teacher-student Kendall tau, logged with "
            "the loss); needs --eval-holdout or --eval-dataset."
        ),
    ] = None,
    eval_holdout: Annotated[
        int | None,
        typer.Option(help="Hold N training queries out of training, as the dev split --eval-steps evaluates."),
    ] = None,
    eval_dataset: Annotated[
        str | None,
        typer.Option(
            help="Evaluate on this BEIR name or folder instead (its dev split; --set eval_split=NAME for another)."
        ),
    ] = None,
    bf16: Annotated[
        bool,
        typer.Option("--bf16", help="Train under bf16 autocast (CPU or GPU); weights, scores and loss stay fp32."),
    ] = False,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="Train under fp16 autocast with a loss scaler (CUDA only).")
    ] = False,
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            "--trust-remote-code",
            help="Let a student model run its own Python code (configuration_*.py, modeling_*.py). Off by default.",
        ),
    ] = False,
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub",
            metavar="REPO",
            help="Once the student is complete, upload it to this Hub repository (user/name); "
            "the token comes from HF_TOKEN.",
        ),
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="With --push-to-hub: create the repository private.")
    ] = False,
    overwrite: OverwriteOption = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Train a bi-encoder student on teacher scores with the sentence-transformers trainer.

    Example: retrodistill train-student -c configs/margin_mse.yaml
    --store runs/scifact/minilm-scores --out runs/scifact/student

    Long runs: add --save-steps 1000; after a crash, the same command resumes from the newest checkpoint.
    Watch one with --report-to tensorboard: tensorboard --logdir runs/scifact/.student.training/logs

    Publish it: HF_TOKEN=... retrodistill train-student ... --push-to-hub you/scifact-student --private
    """
    from retrodistill.config import TrainConfig
    from retrodistill.train import run as train_run
    from retrodistill.train.hub import hub_target

    with user_errors():
        if private and not push_to_hub:
            raise ValueError("--private applies to --push-to-hub REPO, which was not given")
        # Checked before anything is loaded: a missing token must not cost a training run.
        target = hub_target(push_to_hub, private=private) if push_to_hub else None
        cfg = resolve(
            TrainConfig,
            config,
            set_,
            {
                "store": store,
                "student": {
                    "model": student,
                    "layers": layers,
                    "trust_remote_code": True if trust_remote_code else None,
                },
                "loss": {"name": loss},
                "data": {"dataset": dataset, "data_dir": data_dir, "split": split},
                "candidates": candidates,
                "out": out,
                "epochs": epochs,
                "max_steps": max_steps,
                "batch_size": batch_size,
                "negatives": negatives,
                "seed": seed,
                "save_steps": save_steps,
                "report_to": report_to or None,
                "eval_steps": eval_steps,
                "eval_holdout": eval_holdout,
                "eval_dataset": eval_dataset,
                "bf16": True if bf16 else None,
                "fp16": True if fp16 else None,
            },
        )
        path = train_run.run(cfg, overwrite=overwrite, push_to_hub=target, resume_from=resume_from)
        from retrodistill.train.distributed import leave_process_group

        leave_process_group()
    if os.environ.get("RANK", "0") != "0":  # under torchrun / accelerate launch, rank 0 writes and reports
        return
    console.print(f"[green]wrote[/] student {path}  (load it with SentenceTransformer({str(path)!r}))")
    if target is not None:
        console.print(f"[green]pushed[/] it to https://huggingface.co/{target.repo_id}")
