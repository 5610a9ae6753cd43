"""Teachers: expensive scorers of (query, document) pairs, one plug-in per module.

Importing this package registers every teacher in :data:`TEACHERS` (``cross-encoder``, ``bi-encoder``,
``colbert``, ``bm25``); the pairwise teachers of :mod:`.pairwise` register in ``PAIRWISE_TEACHERS`` when it is
imported. This package holds scorers only: the stages that run them (scoring, pairwise scoring,
ensembling, inspection) are in :mod:`retrodistill.stages`.
Heavy libraries (torch, transformers) are imported only when a teacher is built.
"""

from __future__ import annotations

# Importing the plug-in modules registers them.
from retrodistill.teachers.base import TEACHERS, Teacher
from retrodistill.teachers.bi_encoder import BiEncoderTeacher
from retrodistill.teachers.bm25 import BM25Teacher
from retrodistill.teachers.colbert import ColBERTTeacher
from retrodistill.teachers.cross_encoder import CrossEncoderTeacher

__all__ = ["TEACHERS", "BM25Teacher", "BiEncoderTeacher", "ColBERTTeacher", "CrossEncoderTeacher", "Teacher"]
