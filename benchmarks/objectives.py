"""Distillation objectives compared on BEIR SciFact: one teacher, one student init, one budget.

Teacher all-MiniLM-L6-v2 (a bi-encoder, cosine); student its first 2 layers (the quickstart's
student). Every objective trains from the same initialisation, with the same seed, examples
(query, positive, 7 BM25 negatives drawn from the top 30), batch size, learning rate, text length
and number of steps on the training queries; the two-stage recipes add a ``corpus`` stage first
(embedding distillation over the unlabeled corpus, its steps and time reported in their own
columns). Scores are cosines (scale 1), so the temperature losses use tau = 0.05 on both sides,
reading cosines in [-1, 1] as logits in [-20, 20].

Run from the repository root::

    HF_HOME=../shared/hf HF_HUB_OFFLINE=1 RETRODISTILL_DATA=../shared/data/beir \\
        .venv/bin/python benchmarks/objectives.py --out /work/runs/objectives

(the measured table, its exact command and budget: ``benchmarks/objectives.md``).

Layout of ``--out`` (re-runs skip whatever is already there, row by row)::

    inputs/candidates            BM25 top-100 for the training queries
    inputs/teacher-scores        the teacher's scores of those candidates
    inputs/teacher-embeddings    the teacher's embeddings of the whole corpus and the training queries
    inputs/teacher-eval.json     the teacher's metrics on SciFact test (from the cached embeddings)
    students/<objective>/        each trained student
    students/corpus-embedding-<distance>/  the corpus stage, trained once and shared by the two-stage rows
    eval/<objective>/            each evaluation (run file, metrics)
    results.json, results.md     one row per finished objective, rewritten after each

A finished row (and the shared corpus stage) is never retrained: another budget (``--epochs``,
``--max-steps``, ``--corpus-epochs``, ``--bf16``) needs another ``--out``.

``--quick`` (a smoke test: 3 steps per stage, 64 corpus documents, evaluation on 30 test queries
against their judged documents plus 500 others) writes under ``--out``/quick and shares ``inputs/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import random
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrodistill.artifacts import write_json_atomic, write_text_atomic
from retrodistill.config import (
    DataConfig,
    LossConfig,
    MineConfig,
    ScoreTeacherConfig,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
)

TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
LAYERS = 2
TAU = {"temperature_teacher": 0.05, "temperature_student": 0.05}
MARGIN_MSE = {"name": "margin-mse", "weight": 1.0}
# Cosine distance, not MSE: the student's and teacher's embeddings are unit vectors, for which
# MSE = 2 / 384 * (1 - cos): the same objective, with gradients 192x larger (far from Adam's epsilon)
# and a term as large as Margin-MSE's, so weight 1 means something in a sum.
EMBEDDING = {"name": "embedding", "weight": 1.0, "params": {"distance": "cosine"}}


@dataclass(frozen=True)
class Objective:
    """One row of the table: the loss of the queries stage, and whether a corpus stage comes first.

    ``loss`` is ``None`` for the undistilled student (no training). ``corpus_stage`` runs
    ``stage: corpus`` with the ``embedding`` loss (``corpus_distance``) over the whole corpus first,
    and the queries stage starts from its output.
    """

    name: str
    loss: LossConfig | None
    corpus_stage: bool = False
    corpus_distance: str = "cosine"
    note: str = ""


def _combined(*terms: dict[str, Any]) -> LossConfig:
    return LossConfig("combined", {"terms": [dict(t) for t in terms]})


# In priority order: a run that is cut short has the rows that matter most.
OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in [
        Objective("undistilled", None, note="the teacher's first 2 layers, untrained"),
        Objective("margin-mse", LossConfig("margin-mse", {})),
        Objective(
            "embedding>margin-mse",
            LossConfig("margin-mse", {}),
            corpus_stage=True,
            note="corpus stage: embedding (cosine) over the corpus; then Margin-MSE",
        ),
        Objective("listwise-kl", LossConfig("listwise-kl", dict(TAU))),
        Objective(
            "infonce+margin-mse",
            _combined(MARGIN_MSE, {"name": "infonce", "weight": 0.1, "params": {"scale": 20}}),
            note="Margin-MSE + 0.1 InfoNCE (scale 20, in-batch negatives)",
        ),
        Objective(
            "embedding>margin-mse+embedding",
            _combined(MARGIN_MSE, EMBEDDING),
            corpus_stage=True,
            note="corpus stage, then Margin-MSE + embedding (cosine) on the queries and their documents",
        ),
        Objective("margin-mse+embedding", _combined(MARGIN_MSE, EMBEDDING), note="one stage"),
        Objective("listnet", LossConfig("listnet", dict(TAU))),
        Objective("ranknet", LossConfig("ranknet", dict(TAU))),
        Objective("lambdaloss", LossConfig("lambdaloss", dict(TAU))),
        Objective("infonce", LossConfig("infonce", {"scale": 20}), note="no teacher"),
        Objective("self-distill", LossConfig("self-distill", {}), note="no teacher (adaptive margins)"),
    ]
}


@dataclass
class Settings:
    """The budget every objective shares."""

    out: Path
    dataset: str = "scifact"
    data_dir: str | None = None
    epochs: int = 2
    max_steps: int = -1
    corpus_epochs: int = 1
    corpus_documents: int | None = None
    corpus_batch_size: int = 32
    negatives: int = 7
    batch_size: int = 16
    learning_rate: float = 5e-4
    train_max_seq_length: int = 128
    bf16: bool = False
    seed: int = 42
    quick: bool = False

    @property
    def inputs(self) -> Path:
        return self.out / "inputs"

    @property
    def results_dir(self) -> Path:
        return self.out / "quick" if self.quick else self.out


def _data(settings: Settings) -> DataConfig:
    return DataConfig(dataset=settings.dataset, data_dir=settings.data_dir, split="train")


def build_inputs(settings: Settings, log: Any = print) -> dict[str, float]:
    """Candidates, teacher scores, teacher embeddings and the teacher's test metrics, each once.

    One teacher object serves all three, so its embedding cache makes the corpus be encoded once.
    """
    from retrodistill.data.download import load_dataset
    from retrodistill.evaluate.suite import collection_entry, evaluate_suite
    from retrodistill.stages import mine_negatives, score_teacher
    from retrodistill.teachers.bi_encoder import BiEncoderTeacher, CachedTeacherEncoder
    from retrodistill.train.examples import precompute_teacher_embeddings

    inputs = settings.inputs
    data = _data(settings)
    teacher_params: dict[str, Any] = {"model": TEACHER, "similarity": "cosine"}

    @functools.cache
    def teacher() -> BiEncoderTeacher:
        return BiEncoderTeacher(**teacher_params)

    if not (inputs / "candidates" / "manifest.json").is_file():
        log("inputs: mining BM25 candidates")
        mine_negatives.run(MineConfig(data=data, out=str(inputs / "candidates"), k=100), show_progress=False)
    scores_manifest = inputs / "teacher-scores" / "manifest.json"
    # The store's manifest is written when scoring starts; "complete" turns true at the end.
    if not (scores_manifest.is_file() and json.loads(scores_manifest.read_text(encoding="utf-8")).get("complete")):
        log("inputs: scoring the candidates with the teacher")
        score_teacher.run(
            ScoreTeacherConfig(
                data=data,
                candidates=str(inputs / "candidates"),
                teacher=TeacherConfig("bi-encoder", teacher_params),
                out=str(inputs / "teacher-scores"),
            ),
            teacher=teacher(),
            show_progress=False,
        )
    if not (inputs / "teacher-embeddings" / "manifest.json").is_file():
        log("inputs: the teacher's embeddings of the corpus and the training queries")
        collection = load_dataset(settings.dataset, "train", settings.data_dir)
        precompute_teacher_embeddings(
            inputs / "teacher-embeddings",
            CachedTeacherEncoder(teacher()),
            dict(collection.queries),
            {d: collection.doc_text(d) for d in collection.corpus},
            teacher=teacher().describe(),
            inputs={k: v for k, v in collection.fingerprints.items() if k in ("corpus", "queries")},
        )
    teacher_eval = inputs / "teacher-eval.json"
    if not teacher_eval.is_file():
        log("inputs: evaluating the teacher on SciFact test (cached document embeddings)")
        collection = _test_collection(settings.dataset, settings.data_dir, False)
        result = evaluate_suite(
            [TEACHER],
            [collection_entry(collection)],
            out_dir=inputs / "eval-teacher",
            encoders={TEACHER: CachedTeacherEncoder(teacher())},
            use_cache=False,
            show_progress=False,
        )
        write_json_atomic(teacher_eval, dict(result.results[TEACHER][collection.name]))
    return dict(json.loads(teacher_eval.read_text(encoding="utf-8")))


@functools.cache
def _test_collection(dataset: str, data_dir: str | None, quick: bool) -> Any:
    """SciFact test; with ``quick``, 30 queries against their judged documents plus 500 others."""
    from retrodistill.data.download import load_dataset

    collection = load_dataset(dataset, "test", data_dir)
    if not quick:
        return collection
    query_ids = sorted(collection.queries)[:30]
    judged = {d for q in query_ids for d in collection.qrels.get(q, {})}
    others = sorted(random.Random(0).sample(sorted(set(collection.corpus) - judged), 500))
    keep = judged | set(others)
    return dataclasses.replace(
        collection,
        corpus={d: doc for d, doc in collection.corpus.items() if d in keep},
        queries={q: collection.queries[q] for q in query_ids},
        qrels={q: collection.qrels[q] for q in query_ids if q in collection.qrels},
    )


def _train_config(
    settings: Settings, objective: Objective, *, corpus: bool, init: str, layers: int | None
) -> TrainConfig:
    inputs = settings.inputs
    students = settings.results_dir / "students"
    common: dict[str, Any] = {
        "data": _data(settings),
        "student": StudentConfig(model=init, layers=layers, similarity="cosine"),
        "learning_rate": settings.learning_rate,
        "train_max_seq_length": settings.train_max_seq_length,
        "seed": settings.seed,
        "bf16": settings.bf16,
        "teacher_embeddings": dataclasses.replace(
            TrainConfig().teacher_embeddings, path=str(inputs / "teacher-embeddings"), model=TEACHER
        ),
    }
    if corpus:
        return TrainConfig(
            **common,
            stage="corpus",
            store=None,
            corpus_documents=64 if settings.quick else settings.corpus_documents,
            out=str(students / f"corpus-embedding-{objective.corpus_distance}"),
            loss=LossConfig("embedding", {"distance": objective.corpus_distance}),
            epochs=settings.corpus_epochs,
            batch_size=settings.corpus_batch_size,
            max_steps=3 if settings.quick else -1,
        )
    assert objective.loss is not None  # noqa: S101 - callers only train objectives with a loss
    return TrainConfig(
        **common,
        store=str(inputs / "teacher-scores"),
        candidates=str(inputs / "candidates"),
        out=str(students / objective.name),
        loss=objective.loss,
        negatives=settings.negatives,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        max_steps=3 if settings.quick else settings.max_steps,
    )


def _steps(student: Path) -> int:
    manifest = json.loads((student / "manifest.json").read_text(encoding="utf-8"))
    return int(manifest["counts"]["steps"])


def _evaluate(model: str | Path, settings: Settings, name: str) -> dict[str, float]:
    from retrodistill.evaluate.suite import collection_entry, evaluate_suite

    collection = _test_collection(settings.dataset, settings.data_dir, settings.quick)
    result = evaluate_suite(
        [str(model)],
        [collection_entry(collection)],
        out_dir=settings.results_dir / "eval" / name,
        use_cache=False,
        show_progress=False,
    )
    return dict(result.results[str(model)][collection.name])


def _train(config: TrainConfig) -> Path:
    """``train-student`` in this process (its ``bf16`` autocasts each step, as the CLI's ``--bf16`` does)."""
    from retrodistill.train import run as train

    return train.run(config, show_progress=False)


def run_objective(settings: Settings, objective: Objective, log: Any = print) -> dict[str, Any]:
    """Train (both stages where the objective has two) and evaluate one objective: one table row."""
    from retrodistill.students import BiEncoderStudent

    row: dict[str, Any] = {"objective": objective.name, "note": objective.note}
    row["loss"] = dataclasses.asdict(objective.loss) if objective.loss else None
    init: str = TEACHER
    layers: int | None = LAYERS
    if objective.corpus_stage:
        config = _train_config(settings, objective, corpus=True, init=init, layers=layers)
        corpus_dir = Path(config.out)
        timing = corpus_dir.with_name(corpus_dir.name + ".time.json")
        if (corpus_dir / "manifest.json").is_file() and timing.is_file():
            # Same config, seed and data for every two-stage row: trained once, its cost reported on each.
            log(f"  corpus stage: reusing {corpus_dir}")
        else:
            start = time.perf_counter()
            _train(config)
            write_json_atomic(timing, {"train_s": round(time.perf_counter() - start, 1)})
        row["corpus_train_s"] = json.loads(timing.read_text(encoding="utf-8"))["train_s"]
        row["corpus_steps"] = _steps(corpus_dir)
        log(f"  corpus stage: {row['corpus_steps']} steps in {row['corpus_train_s']} s")
        init, layers = str(corpus_dir), None
    if objective.loss is None:
        student = settings.results_dir / "students" / objective.name
        BiEncoderStudent(TEACHER, layers=LAYERS).build().save(str(student))
        row["steps"], row["train_s"] = 0, 0.0
    else:
        config = _train_config(settings, objective, corpus=False, init=init, layers=layers)
        start = time.perf_counter()
        student = _train(config)
        row["train_s"] = round(time.perf_counter() - start, 1)
        row["steps"] = _steps(student)
        log(f"  queries stage: {row['steps']} steps in {row['train_s']} s")
    start = time.perf_counter()
    row["metrics"] = _evaluate(student, settings, objective.name)
    row["eval_s"] = round(time.perf_counter() - start, 1)
    row["nDCG@10"] = row["metrics"]["nDCG@10"]
    return row


def to_markdown(rows: list[dict[str, Any]], teacher: dict[str, float] | None) -> str:
    """The results table; % of teacher is nDCG@10 / the teacher's nDCG@10."""
    base = teacher["nDCG@10"] if teacher else None
    lines = [
        "| objective | nDCG@10 | % of teacher | steps (queries) | train s | corpus steps | corpus s | eval s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if teacher:
        lines.append(f"| teacher (all-MiniLM-L6-v2, 6 layers) | {base:.4f} | 100.0% | – | – | – | – | – |")
    for r in sorted(rows, key=lambda r: -r["nDCG@10"]):
        pct = f"{100 * r['nDCG@10'] / base:.1f}%" if base else "–"
        lines.append(
            f"| {r['objective']} | {r['nDCG@10']:.4f} | {pct} | {r['steps']} | {r['train_s']:.0f} | "
            f"{r.get('corpus_steps', '–')} | {r.get('corpus_train_s', '–')} | {r['eval_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated, in run order")
    parser.add_argument("--out", default="/work/runs/objectives", type=Path)
    parser.add_argument("--epochs", type=int, default=2, help="passes over the training positives")
    parser.add_argument("--max-steps", type=int, default=-1, help="cap on the queries stage's steps (all rows)")
    parser.add_argument("--corpus-epochs", type=int, default=1, help="passes over the corpus in a corpus stage")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast while training")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 steps per stage, a small test set")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.objectives.split(",") if n.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        parser.error(f"unknown objective(s) {', '.join(unknown)}; known: {', '.join(OBJECTIVES)}")
    settings = Settings(
        out=args.out,
        epochs=args.epochs,
        max_steps=args.max_steps,
        corpus_epochs=args.corpus_epochs,
        bf16=args.bf16,
        quick=args.quick,
    )

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    start = time.perf_counter()
    teacher = build_inputs(settings, log)
    log(f"teacher nDCG@10 {teacher['nDCG@10']:.4f} (full SciFact test)")
    if settings.quick:
        teacher = {}
    results_path = settings.results_dir / "results.json"
    done: dict[str, dict[str, Any]] = {}
    if results_path.is_file():
        done = {r["objective"]: r for r in json.loads(results_path.read_text(encoding="utf-8"))["rows"]}
    budget = {k: v for k, v in dataclasses.asdict(settings).items() if k != "out"}
    failed: list[str] = []
    for name in names:
        if name in done:
            log(f"{name}: done before, nDCG@10 {done[name]['nDCG@10']:.4f}")
            continue
        log(f"{name}: training")
        try:
            row = run_objective(settings, OBJECTIVES[name], log)
        except Exception as err:  # noqa: BLE001 - one failed row must not cost the rows after it
            log(f"{name}: FAILED: {type(err).__name__}: {err}\n{traceback.format_exc()}")
            failed.append(name)
            continue
        done[name] = row
        log(f"{name}: nDCG@10 {row['nDCG@10']:.4f} (train {row['train_s']} s, eval {row['eval_s']} s)")
        rows = list(done.values())
        write_json_atomic(results_path, {"settings": budget, "teacher": teacher or None, "rows": rows})
        write_text_atomic(settings.results_dir / "results.md", to_markdown(rows, teacher or None))
    log(f"all done in {time.perf_counter() - start:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    print(to_markdown(list(done.values()), teacher or None))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
