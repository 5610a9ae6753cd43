"""One definition of the per-query normalisations: the losses' rows and the ensembles' groups agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrodistill.losses import LOSSES
from retrodistill.losses import normalization as owner
from retrodistill.losses.normalization import CONSTANT_VALUE, NORMALIZATIONS, normalize_per_query, normalize_scores
from retrodistill.stages import ensemble, ensemble_calibration
from retrodistill.stages.ensemble_calibration import QueryGroups


def _groups(sizes: list[int]) -> QueryGroups:
    first = np.zeros(sum(sizes), dtype=bool)
    first[np.cumsum([0, *sizes[:-1]])] = True
    return QueryGroups.from_first_flags(first)


def test_the_ensemble_uses_the_losses_definition() -> None:
    assert ensemble_calibration.NORMALIZATIONS is owner.NORMALIZATIONS
    assert ensemble_calibration.normalize_per_query is owner.normalize_per_query
    assert ensemble.normalize_per_query is owner.normalize_per_query
    assert NORMALIZATIONS == ("none", "zscore", "minmax", "rank")


@pytest.mark.parametrize("method", ["zscore", "minmax", "rank"])
@pytest.mark.parametrize("value", [0.0, 0.1, -3.7, 1e6])
def test_a_constant_query_gets_the_middle_of_the_range_under_both_layouts(method: str, value: float) -> None:
    middle = CONSTANT_VALUE[method]
    assert middle == {"zscore": 0.0, "minmax": 0.5, "rank": 0.5}[method]
    row = torch.full((2, 8), value, dtype=torch.float32, requires_grad=True)
    normalized = normalize_scores(row, method)
    assert bool(torch.isfinite(normalized).all())
    torch.testing.assert_close(normalized, torch.full((2, 8), middle))
    if normalized.requires_grad:
        normalized.sum().backward()
        assert row.grad is not None and bool(torch.isfinite(row.grad).all())
    flat = normalize_per_query(np.full(8, value), _groups([8]), method)
    assert not np.isnan(flat).any() and flat.tolist() == [middle] * 8


@pytest.mark.parametrize("method", ["zscore", "minmax", "rank"])
def test_a_single_candidate_is_a_constant_query(method: str) -> None:
    assert normalize_scores(torch.tensor([[4.2]]), method).item() == CONSTANT_VALUE[method]
    assert normalize_per_query(np.array([4.2]), _groups([1]), method).tolist() == [CONSTANT_VALUE[method]]


@pytest.mark.parametrize("method", NORMALIZATIONS)
def test_rows_and_groups_give_the_same_values(method: str) -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(5, 6)).round(1)  # rounding makes ties, for rank
    rows[2] = 3.0  # a constant query
    rows[3, 1] = rows[3, 0] + 1e-8  # a spread below eps
    expected = normalize_scores(torch.tensor(rows, dtype=torch.float64), method).numpy()
    got = normalize_per_query(rows.ravel(), _groups([6] * 5), method).reshape(5, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_rank_follows_the_formula_with_mean_ranks_for_ties() -> None:
    # descending ranks of [1, 3, 3, 2]: 4, (1 + 2) / 2, (1 + 2) / 2, 3 over n = 4
    expected = [1 - (4 - 1) / 3, 1 - (1.5 - 1) / 3, 1 - (1.5 - 1) / 3, 1 - (3 - 1) / 3]
    torch.testing.assert_close(normalize_scores(torch.tensor([[1.0, 3.0, 3.0, 2.0]]), "rank"), torch.tensor([expected]))


@pytest.mark.parametrize("name", ["margin-mse", "listwise-kl", "infonce"])
def test_rank_is_a_teacher_normalisation_only(name: str) -> None:
    with pytest.raises(ValueError, match="student_normalization cannot be 'rank': ranks have no gradient"):
        LOSSES.build(name, {"student_normalization": "rank"})
    if name != "infonce":  # teacher-free: no teacher side to normalise
        assert LOSSES.build(name, {"teacher_normalization": "rank"}).config()["teacher_normalization"] == "rank"
