"""Encoding with a progress callback: the same vectors, every document counted once."""

from __future__ import annotations

import numpy as np

from retrodistill.data import encoding
from retrodistill.data.encoding import encode_length_sorted


class _LengthEncoder:
    """Vector = (length, first letter code): order-sensitive, so a misplaced row shows."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode_document(self, texts: list[str], **_: object) -> np.ndarray:
        self.calls.append(len(texts))
        return np.array([[len(t), ord(t[0])] for t in texts], dtype=np.float32)


def test_slices_give_the_same_vectors_and_count_every_document(monkeypatch) -> None:
    monkeypatch.setattr(encoding, "PROGRESS_BATCHES", 2)
    texts = [f"{chr(97 + i % 26)}{'x' * (i * 7 % 13)}" for i in range(23)]
    whole = encode_length_sorted(_LengthEncoder(), texts, batch_size=3)
    counted: list[int] = []
    model = _LengthEncoder()
    sliced = encode_length_sorted(model, texts, batch_size=3, advance=counted.append)
    np.testing.assert_array_equal(sliced, whole)
    assert sum(counted) == len(texts) and len(counted) == 4  # slices of 2 batches × 3 texts
    assert model.calls == [6, 6, 6, 5]
    assert whole[:, 0].tolist() == [len(t) for t in texts]  # corpus order restored
