"""``retrodistill`` with one more teacher, ``constant``, that scores every pair 0 without a model.

A test double for measuring score-teacher's data path alone (enumerating pairs, resolving texts,
writing and verifying parts), as the scale benchmark does::

    python benchmarks/constant_teacher.py score-teacher --teacher constant --model constant \\
        --triples T --dataset D --out S

Everything after the script name is the ``retrodistill`` command line; the command is the library's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrodistill.teachers import TEACHERS, Teacher


@dataclass
class ConstantTeacher(Teacher):
    """Scores every pair ``value``: the cost of scoring is nil, so only the data path is timed."""

    model: str = "constant"  # score-teacher asks every teacher for a model; this one names itself
    value: float = 0.0

    def score(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> np.ndarray:
        if len(queries) != len(docs):
            raise ValueError(f"got {len(queries)} queries but {len(docs)} documents")
        return np.full(len(queries), self.value, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "name": "constant",
            "model": self.model,
            "revision": "none",
            "max_length": None,
            "dtype": "fp32",
            "device": "cpu",
            "value": self.value,
        }


if __name__ == "__main__":
    if "constant" not in TEACHERS:
        TEACHERS.register("constant")(ConstantTeacher)
    from retrodistill.cli.app import main

    main()
