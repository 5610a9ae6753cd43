"""retrodistill: distil expensive rankers into fast bi-encoder retrievers, and evaluate them.

The pipeline, one stage per function (each also a ``retrodistill`` command)::

    retrodistill.stages.mine_negatives.run(MineConfig)         -> candidates
    retrodistill.stages.score_teacher.run(ScoreTeacherConfig)  -> teacher-score store
    retrodistill.train.run.run(TrainConfig)                    -> student (sentence-transformers directory)
    retrodistill.evaluate.suite.evaluate_suite(…)               -> run files, metrics, tables

The other stages (import-scores, ensemble-teachers, score-pairwise, inspect-teacher) are listed in
:mod:`retrodistill.stages`.

Importing this package is cheap and has no side effects; heavy libraries load inside the stages.
"""

from __future__ import annotations

from retrodistill.config import (
    DataConfig,
    EvaluateConfig,
    LossConfig,
    MineConfig,
    ScoreTeacherConfig,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
    load_config,
)
from retrodistill.data.collections import Collection, DataFormatError, load_beir, load_msmarco

__version__ = "0.1.0"

__all__ = [
    "Collection",
    "DataConfig",
    "DataFormatError",
    "EvaluateConfig",
    "LossConfig",
    "MineConfig",
    "ScoreTeacherConfig",
    "StudentConfig",
    "TeacherConfig",
    "TrainConfig",
    "__version__",
    "load_beir",
    "load_config",
    "load_msmarco",
]
