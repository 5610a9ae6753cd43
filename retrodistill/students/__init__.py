"""Students: bi-encoders in sentence-transformers format, built from a model or from teacher layers."""

from retrodistill.students.base import STUDENTS
from retrodistill.students.bi_encoder import BiEncoderStudent

__all__ = ["STUDENTS", "BiEncoderStudent"]
