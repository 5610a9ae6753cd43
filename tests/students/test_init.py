from __future__ import annotations

from pathlib import Path

import pytest
import torch

from retrodistill.students import BiEncoderStudent
from retrodistill.students.init import truncate_layers


def test_first_k_layers_are_the_teachers(tiny_st_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    full = SentenceTransformer(str(tiny_st_dir), device="cpu")
    student = BiEncoderStudent(str(tiny_st_dir), layers=2, device="cpu").build()
    layers = student[0].auto_model.encoder.layer
    assert len(layers) == 2 and student[0].auto_model.config.num_hidden_layers == 2
    for kept, original in zip(layers, full[0].auto_model.encoder.layer[:2], strict=True):
        for a, b in zip(kept.parameters(), original.parameters(), strict=True):
            assert torch.equal(a, b)
    emb = student.encode(["cancer tumor"], convert_to_tensor=True)
    assert emb.shape == (1, 32)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(1), atol=1e-5)  # the model's Normalize is kept


def test_truncate_refuses_impossible_k(tiny_bert_dir: Path) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_bert_dir)
    with pytest.raises(ValueError, match="cannot keep 9 layers of a 4-layer"):
        truncate_layers(model, 9)
    with pytest.raises(ValueError, match="do not know where"):
        truncate_layers(torch.nn.Linear(2, 2), 1)


def test_plain_hf_encoder_gets_mean_pooling(tiny_bert_dir: Path) -> None:
    student = BiEncoderStudent(str(tiny_bert_dir), layers=1, similarity="dot", device="cpu").build()
    names = [type(m).__name__ for m in student]
    assert names == ["Transformer", "Pooling"]
    assert student[1].get_config_dict()["pooling_mode"] == "mean"
