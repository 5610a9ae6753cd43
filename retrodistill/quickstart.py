"""The quickstart: the whole pipeline on BEIR SciFact with defaults that run on a laptop CPU.

1. ``mine-negatives``: BM25 top-100 for each SciFact train query;
2. ``score-teacher``: the teacher (all-MiniLM-L6-v2, a bi-encoder, cosine) scores every candidate pair;
3. the student before distillation (the teacher's first 2 layers) is saved;
4. ``train-student``: Margin-MSE on the teacher's scores (texts cut to 128 tokens while training,
   the cost that dominates on a CPU; evaluation uses the model's full 256);
5. ``evaluate``: the teacher (from the embeddings it cached while scoring: no second corpus pass),
   the student before and the student after distillation on SciFact test, as one table through
   :func:`~retrodistill.evaluate.suite.evaluate_suite`, the code behind ``retrodistill evaluate``:
   ``OUT/eval`` is an evaluation folder like any other (``retrodistill report OUT/eval`` works on it),
   with the columns labelled ``teacher``, ``student-before`` and ``student-after``.

Everything lands in ``OUT/`` (candidates, scores, student, eval/…), and ``OUT/summary.json`` holds
the three nDCG@10 figures and the wall time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrodistill.artifacts import write_json_atomic, write_manifest
from retrodistill.config import (
    DataConfig,
    LossConfig,
    MineConfig,
    ScoreTeacherConfig,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
    to_dict,
)


@dataclass
class QuickstartConfig:
    dataset: str = "scifact"
    data_dir: str | None = None
    out: str = "runs/quickstart"
    teacher: str = "sentence-transformers/all-MiniLM-L6-v2"
    layers: int = 2
    loss: str = "margin-mse"
    loss_params: dict[str, Any] = field(default_factory=dict)
    negatives: int = 7
    epochs: int = 2
    train_max_seq_length: int | None = 128
    batch_size: int = 16
    # Chosen on a dev split of SciFact train, never on test (benchmarks/quickstart_lr.md): dev nDCG@10
    # 0.4345 at 2e-4, 0.4537 at 5e-4, 0.4888 at 1e-3, 0.2598 at 2e-3.
    learning_rate: float = 1e-3
    max_steps: int = -1
    k: int = 100
    seed: int = 42


@dataclass
class QuickstartResult:
    ndcg10: dict[str, float]
    metrics: dict[str, dict[str, float]]
    wall_time_s: float
    out: Path


#: The quickstart's columns, in table order.
COLUMNS = ("teacher", "student-before", "student-after")


def _evaluate(models: dict[str, str], encoders: dict[str, Any], config: QuickstartConfig, out: Path) -> Any:
    """One evaluation folder, ``OUT/eval``, with a column per entry of ``models`` (label -> model)."""
    from retrodistill.data.registry import load_entry
    from retrodistill.evaluate.suite import evaluate_suite

    entry = load_entry(config.dataset, "test", config.data_dir)
    return evaluate_suite(
        [f"{label}={model}" for label, model in models.items()],
        [entry],
        out_dir=out / "eval",
        k=config.k,
        encoders=encoders,
        show_progress=False,
    )


def suite_dataset(suite: Any) -> str:
    """The one dataset row of the quickstart's table."""
    (name,) = suite.datasets
    return str(name)


#: The stage name in ``OUT/manifest.json``: a re-run may write into its own earlier output.
STAGE = "quickstart"


def teacher_score_config(config: QuickstartConfig, data: DataConfig, out: Path) -> ScoreTeacherConfig:
    """The quickstart's ``score-teacher`` step: the bi-encoder teacher's cosine scores of ``out/candidates``."""
    params: dict[str, Any] = {"model": config.teacher, "similarity": "cosine"}
    return ScoreTeacherConfig(
        data=data,
        candidates=str(out / "candidates"),
        teacher=TeacherConfig("bi-encoder", params),
        out=str(out / "teacher-scores"),
    )


def student_train_config(config: QuickstartConfig, data: DataConfig, inputs: Path, student: Path) -> TrainConfig:
    """The quickstart's ``train-student`` step, on the candidates and teacher scores under ``inputs``."""
    return TrainConfig(
        data=data,
        store=str(inputs / "teacher-scores"),
        candidates=str(inputs / "candidates"),
        out=str(student),
        student=StudentConfig(model=config.teacher, layers=config.layers, similarity="cosine"),
        loss=LossConfig(config.loss, dict(config.loss_params)),
        negatives=config.negatives,
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        max_steps=config.max_steps,
        train_max_seq_length=config.train_max_seq_length,
        seed=config.seed,
    )


def run(config: QuickstartConfig, *, log: Any = print, overwrite: bool = False) -> QuickstartResult:
    """Run every step into ``config.out``.

    ``out`` must be absent, empty or an earlier quickstart's output (its ``manifest.json`` says so);
    any other folder is refused (:class:`~retrodistill.outputs.OutputExistsError`) unless ``overwrite``,
    and then only the quickstart's own subfolders are written, nothing else there is touched.
    """
    from retrodistill.outputs import check_output
    from retrodistill.stages import mine_negatives, score_teacher
    from retrodistill.students import BiEncoderStudent
    from retrodistill.teachers.bi_encoder import BiEncoderTeacher, CachedTeacherEncoder
    from retrodistill.train import run as train
    from retrodistill.train.model_card import write_model_card

    start = time.perf_counter()
    out = Path(config.out)
    check_output(out, resumable={STAGE}, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, {"stage": STAGE, "config": to_dict(config)})
    data = DataConfig(dataset=config.dataset, data_dir=config.data_dir, split="train")

    log(f"[1/6] mining BM25 negatives for {config.dataset} train")
    mine_negatives.run(MineConfig(data=data, out=str(out / "candidates"), k=config.k))

    log(f"[2/6] scoring candidates with the teacher {config.teacher}")
    score_config = teacher_score_config(config, data, out)
    teacher = BiEncoderTeacher(**score_config.teacher.params)
    score_teacher.run(score_config, teacher=teacher)

    log(f"[3/6] saving the student before distillation (first {config.layers} layers)")
    before = out / "student-before"
    # Saved, so the undistilled baseline is an artifact that can be re-evaluated like any model.
    BiEncoderStudent(config.teacher, layers=config.layers).build().save(str(before))

    log(f"[4/6] distilling with {config.loss}")
    train_config = student_train_config(config, data, out, out / "student")
    # A student from an earlier quickstart in this folder is replaced; anything else there is refused.
    earlier = check_output(train_config.out, resumable={train.STAGE}) == "resume"
    student_dir = train.run(train_config, overwrite=earlier)

    log(f"[5/6] evaluating the teacher and both students on {config.dataset} test")
    # The teacher's embedding cache already holds nearly every document: no second corpus pass.
    models = dict(zip(COLUMNS, (config.teacher, str(before), str(student_dir)), strict=True))
    suite = _evaluate(models, {config.teacher: CachedTeacherEncoder(teacher)}, config, out)
    del teacher
    metrics = {label: dict(suite.results[label][suite_dataset(suite)]) for label in COLUMNS}
    # The student's model card gets the figures it was just measured at.
    write_model_card(student_dir, evaluation={f"{suite_dataset(suite)} (test)": metrics["student-after"]})

    log(f"[6/6] the table is in {out / 'eval'} (retrodistill report {out / 'eval'} draws it)")
    wall = time.perf_counter() - start
    ndcg = {name: m["nDCG@10"] for name, m in metrics.items()}
    write_json_atomic(
        out / "summary.json",
        {"config": to_dict(config), "nDCG@10": ndcg, "metrics": metrics, "wall_time_s": round(wall, 1)},
    )
    return QuickstartResult(ndcg, metrics, wall, out)
