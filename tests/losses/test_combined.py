"""CombinedLoss, LossInputs and apply_loss: the weighted sum, its terms, its config and its checks."""

from __future__ import annotations

import doctest

import pytest
import torch

from retrodistill.losses import (
    LOSSES,
    CombinedLoss,
    InfoNCE,
    ListNet,
    LossInputs,
    MarginMSE,
    apply_loss,
    loss_terms,
    required_inputs,
)
from retrodistill.losses import combined as combined_module

STUDENT = torch.tensor([[2.0, 1.0, 0.0], [0.5, 1.5, -1.0]])
TEACHER = torch.tensor([[3.0, 0.5, 3.0], [1.0, 1.0, 1.0]])
IN_BATCH = torch.tensor([[2.0, 0.0, 1.0, 0.5], [0.0, 1.0, 0.2, 0.3]])
INPUTS = LossInputs(
    student_scores=STUDENT, teacher_scores=TEACHER, student_in_batch=IN_BATCH, positive_index=torch.tensor([0, 1])
)


def test_registered_and_documented() -> None:
    assert LOSSES.get("combined") is CombinedLoss
    assert doctest.testmod(combined_module).failed == 0


def test_weighted_sum_of_the_terms_each_reported_by_label() -> None:
    loss = LOSSES.build(
        "combined",
        {
            "terms": [
                {"name": "margin-mse", "weight": 1.0},
                {"name": "infonce", "weight": 0.1, "params": {"scale": 20}},
                {"name": "listnet", "weight": 0.5, "label": "listnet-soft", "params": {"temperature_teacher": 2.0}},
            ]
        },
    )
    margin = MarginMSE()(STUDENT, TEACHER)
    infonce = InfoNCE(scale=20)(IN_BATCH, torch.tensor([0, 1]))
    listnet = ListNet(temperature_teacher=2.0)(STUDENT, TEACHER)
    components = loss.components(INPUTS)
    assert list(components) == ["loss_margin-mse", "loss_infonce", "loss_listnet-soft"]
    torch.testing.assert_close(components["loss_margin-mse"], margin)
    torch.testing.assert_close(components["loss_infonce"], 0.1 * infonce)
    torch.testing.assert_close(components["loss_listnet-soft"], 0.5 * listnet)
    torch.testing.assert_close(loss(INPUTS), margin + 0.1 * infonce + 0.5 * listnet)
    assert loss.inputs == ("student_scores", "teacher_scores", "student_in_batch", "positive_index")
    assert [type(t) for t in loss_terms(loss)] == [MarginMSE, InfoNCE, ListNet]


def test_gradient_is_the_weighted_sum_of_the_terms_gradients() -> None:
    student = STUDENT.clone().requires_grad_(True)
    CombinedLoss(terms=[{"name": "margin-mse", "weight": 3.0}])(
        LossInputs(student_scores=student, teacher_scores=TEACHER)
    ).backward()
    alone = STUDENT.clone().requires_grad_(True)
    MarginMSE()(alone, TEACHER).backward()
    assert student.grad is not None and alone.grad is not None
    torch.testing.assert_close(student.grad, 3 * alone.grad)


def test_a_zero_weight_term_is_reported_but_not_trained_on() -> None:
    loss = CombinedLoss(terms=[{"name": "margin-mse"}, {"name": "listnet", "weight": 0}])
    components = loss.components(INPUTS)
    assert components["loss_listnet"].item() == 0.0
    torch.testing.assert_close(loss(INPUTS), MarginMSE()(STUDENT, TEACHER))


def test_config_lists_every_terms_full_parameters() -> None:
    loss = CombinedLoss(terms=[{"name": "listwise-kl", "params": {"temperature_teacher": 2.0}}, {"name": "infonce"}])
    assert loss.config() == {
        "terms": [
            {
                "name": "listwise-kl",
                "label": "listwise-kl",
                "weight": 1.0,
                "params": {
                    "temperature_teacher": 2.0,
                    "temperature_student": 1.0,
                    "scale_by_temperature_squared": False,
                    "teacher_normalization": "none",
                    "student_normalization": "none",
                },
            },
            {
                "name": "infonce",
                "label": "infonce",
                "weight": 1.0,
                "params": {"scale": 20.0, "teacher_normalization": "none", "student_normalization": "none"},
            },
        ],
        "teacher_normalization": "none",
        "student_normalization": "none",
    }
    assert "2010.11386" in loss.citation and "1807.03748" in loss.citation


def test_normalisations_are_defaults_for_the_terms() -> None:
    loss = CombinedLoss(
        terms=[
            {"name": "margin-mse"},
            {"name": "listnet", "params": {"student_normalization": "minmax"}},
            {"name": "infonce"},
        ],
        teacher_normalization="zscore",
        student_normalization="zscore",
    )
    margin, listnet, infonce = loss_terms(loss)
    assert (margin.teacher_normalization, margin.student_normalization) == ("zscore", "zscore")
    assert listnet.student_normalization == "minmax"  # its own setting wins
    assert (infonce.teacher_normalization, infonce.student_normalization) == ("none", "zscore")  # no teacher side


def test_without_terms_it_is_margin_mse() -> None:
    torch.testing.assert_close(CombinedLoss()(INPUTS), MarginMSE()(STUDENT, TEACHER))


@pytest.mark.parametrize(
    ("terms", "match"),
    [
        ([], "non-empty"),
        (["margin-mse"], "mapping"),
        ([{"weight": 1.0}], "'name'"),
        ([{"name": "margin-mse", "scale": 2}], "unknown key"),
        ([{"name": "margin-mse", "weight": -1}], "weight"),
        ([{"name": "margin-mse", "weight": float("inf")}], "weight"),
        ([{"name": "margin-mse", "weight": True}], "weight"),
        ([{"name": "margin-mse"}, {"name": "margin-mse"}], "label"),
        ([{"name": "combined"}], "another combined"),
        ([{"name": "margin-mse", "params": {"temperature": 2}}], "no parameter"),
        ([{"name": "no-such-loss"}], "unknown loss"),
    ],
)
def test_bad_terms_are_named(terms: list[object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CombinedLoss(terms=terms)  # type: ignore[arg-type]


def test_required_inputs_and_apply_loss() -> None:
    assert required_inputs(MarginMSE()) == ("student_scores", "teacher_scores")  # the DistillationLoss default
    assert required_inputs(InfoNCE()) == ("student_in_batch", "positive_index")
    torch.testing.assert_close(apply_loss(MarginMSE(), INPUTS), MarginMSE()(STUDENT, TEACHER))
    with pytest.raises(ValueError, match="'infonce' needs 'student_in_batch'"):
        apply_loss(InfoNCE(), LossInputs(student_scores=STUDENT))
    with pytest.raises(ValueError, match="components"):
        apply_loss(CombinedLoss(), INPUTS)
