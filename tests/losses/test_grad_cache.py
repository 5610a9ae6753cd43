"""GradCache: the cached in-batch losses have the loss value and parameter gradients of the uncached ones.

Equality is checked on the tiny bi-encoder, loss and every parameter gradient, at rtol 1e-5 / atol
1e-6. Against the uncached full-batch pass it is checked in eval mode: in train mode a mini-batch of
2 rows draws other dropout masks than the full batch of 4 does, so no RNG handling could make them
equal. What the RNG handling must guarantee is that the replay (step 3) draws the masks of the
first pass (step 1); that is checked in train mode, against embedding the same mini-batches with
autograd from the same seed, and against the uncached pass when one mini-batch holds the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import torch

from retrodistill.losses import LOSSES, CombinedLoss, InBatchKL, InfoNCE, LossInputs, MarginMSE
from retrodistill.losses.grad_cache import cache_mini_batch_size, cached_embed_columns
from retrodistill.train.st_loss import in_batch_scores

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

QUERIES = ["cancer tumor", "heart artery", "sleep night", "virus vaccine"]
DOCUMENTS = [  # doc_0 (the positives), doc_1, doc_2: 4 rows x (1+2) documents
    ["tumor cancer cells", "artery heart blood", "night sleep", "vaccine virus immune"],
    ["diet sugar", "brain memory", "virus", "heart"],
    ["sleep", "cancer", "diet brain memory sugar", "tumor night"],
]
Embed = Callable[["SentenceTransformer", list[dict[str, Any]]], list[torch.Tensor]]


def features(model: SentenceTransformer) -> list[dict[str, torch.Tensor]]:
    """The tokenized columns query, doc_0, doc_1, doc_2, as the trainer's collator builds them."""
    return [model.preprocess(column) for column in (QUERIES, *DOCUMENTS)]


def uncached(model: SentenceTransformer, columns: list[dict[str, Any]]) -> list[torch.Tensor]:
    """One forward pass per column, in column order (the draws of dropout masks a cached pass replays)."""
    return [model(dict(column))["sentence_embedding"] for column in columns]


def cached(mini_batch_size: int) -> Embed:
    return lambda model, columns: cached_embed_columns(model, columns, mini_batch_size)


def loss_and_gradients(
    model: SentenceTransformer, embed: Embed, loss: Any, *, seed: int = 0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of the batch (as the training adapter builds its inputs) and every parameter's gradient."""
    model.zero_grad()
    torch.manual_seed(seed)
    embeddings = embed(model, features(model))
    query, documents = embeddings[0], torch.stack(embeddings[1:], dim=1)  # (B, D), (B, 1+N, D)
    scores, positive = in_batch_scores(query, documents, "cosine", scale=1.0)  # (B, M), (B,)
    generator = torch.Generator().manual_seed(1)
    teacher_in_batch = torch.randn(scores.shape, generator=generator)
    own_columns = positive[:, None] + torch.arange(documents.shape[1])[None, :] * len(QUERIES)  # (B, 1+N)
    inputs = LossInputs(
        student_scores=scores.gather(1, own_columns),
        teacher_scores=teacher_in_batch.gather(1, own_columns),
        student_in_batch=scores,
        teacher_in_batch=teacher_in_batch,
        positive_index=positive,
    )
    if isinstance(loss, CombinedLoss):
        value = torch.stack(list(loss.components(inputs).values())).sum()  # as the trainer sums the terms
    elif isinstance(loss, InfoNCE):
        value = loss(inputs.student_in_batch, inputs.positive_index)
    else:
        value = loss(inputs.student_in_batch, inputs.teacher_in_batch)
    value.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return value.detach(), gradients


def assert_same(
    first: tuple[torch.Tensor, dict[str, torch.Tensor]], second: tuple[torch.Tensor, dict[str, torch.Tensor]]
) -> None:
    (loss_a, grads_a), (loss_b, grads_b) = first, second
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    assert len(grads_a) > 10  # every layer of the encoder received a gradient
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-6, msg=name)


COMBINED = {
    "terms": [
        {"name": "margin-mse"},
        {"name": "infonce", "weight": 0.1, "params": {"scale": 20}},
        {"name": "in-batch-kl", "weight": 0.5},
    ]
}
LOSSES_WITH_IN_BATCH_TERMS = [
    pytest.param(lambda: InfoNCE(scale=20.0, cached=True, mini_batch_size=3), id="infonce"),
    pytest.param(lambda: InBatchKL(temperature_student=0.1, cached=True, mini_batch_size=3), id="in-batch-kl"),
    pytest.param(lambda: CombinedLoss(**COMBINED, cached=True, mini_batch_size=3), id="combined"),
]


@pytest.mark.parametrize("build", LOSSES_WITH_IN_BATCH_TERMS)
def test_cached_loss_and_gradients_equal_the_uncached_ones(student: SentenceTransformer, build: Any) -> None:
    # Dropout off: see the module docstring. In float64, because in float32 the gradient summed
    # over two mini-batches rounds differently from the one summed over the batch (by ~1e-6 of
    # the largest gradient, which the element-wise rtol 1e-5 / atol 1e-6 does not tolerate).
    student.eval().double()
    loss = build()
    size = cache_mini_batch_size(loss)
    assert size == 3  # mini-batches of 3 and 1 rows per column: an uneven split
    assert_same(loss_and_gradients(student, cached(size), loss), loss_and_gradients(student, uncached, loss))


def test_one_mini_batch_replays_the_uncached_dropout_in_train_mode(student: SentenceTransformer) -> None:
    student.train()
    loss = CombinedLoss(**COMBINED)
    with_dropout = loss_and_gradients(student, uncached, loss, seed=3)
    assert_same(loss_and_gradients(student, cached(len(QUERIES)), loss, seed=3), with_dropout)
    # Dropout is on: another seed draws other masks, so the equality above is the replay's doing.
    assert not torch.allclose(loss_and_gradients(student, uncached, loss, seed=4)[0], with_dropout[0])


def test_the_replay_draws_the_dropout_masks_of_the_first_pass(student: SentenceTransformer) -> None:
    student.train()

    def rows(column: dict[str, Any], begin: int, end: int) -> dict[str, Any]:
        """Rows ``begin:end``, cut to their longest text as the cached pass cuts them (dropout's shape)."""
        width = int(column["attention_mask"][begin:end].sum(dim=1).max())
        return {k: v[begin:end, :width] if isinstance(v, torch.Tensor) else v for k, v in column.items()}

    def per_mini_batch(model: SentenceTransformer, columns: list[dict[str, Any]]) -> list[torch.Tensor]:
        """Mini-batches of 3 and 1 rows embedded with autograd, in the order the cached pass embeds them."""
        return [
            torch.cat([model(rows(column, begin, begin + 3))["sentence_embedding"] for begin in (0, 3)])
            for column in columns
        ]

    loss = InfoNCE(scale=20.0)
    assert_same(
        loss_and_gradients(student, cached(3), loss, seed=5), loss_and_gradients(student, per_mini_batch, loss, seed=5)
    )


def test_the_mini_batch_size_does_not_change_the_embeddings(student: SentenceTransformer) -> None:
    student.eval()
    columns = features(student)
    with torch.no_grad():
        expected = uncached(student, columns)
        for size in (1, 2, 4, 100):
            for got, want in zip(cached_embed_columns(student, columns, size), expected, strict=True):
                assert not got.requires_grad  # no autograd asked for: no replay kept
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_cached_embeddings_take_part_in_autograd_like_the_uncached(student: SentenceTransformer) -> None:
    embeddings = cached_embed_columns(student, features(student), 2)
    assert [tuple(e.shape) for e in embeddings] == [(4, student.get_embedding_dimension())] * 4
    assert all(e.requires_grad for e in embeddings)


def test_the_options_are_parameters_reported_only_when_on() -> None:
    assert "cached" not in InfoNCE().config() and "mini_batch_size" not in InBatchKL().config()
    assert LOSSES.build("infonce", {"cached": True, "mini_batch_size": 8}).config() == {
        "scale": 20.0,
        "cached": True,
        "mini_batch_size": 8,
        "teacher_normalization": "none",
        "student_normalization": "none",
    }
    combined = LOSSES.build("combined", {**COMBINED, "cached": True})
    assert combined.config()["cached"] is True and combined.config()["mini_batch_size"] == 32
    assert "cached" not in CombinedLoss(**COMBINED).config()
    assert cache_mini_batch_size(InfoNCE()) is None
    assert cache_mini_batch_size(MarginMSE()) is None  # a loss without the options is never cached


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: InfoNCE(cached=True, mini_batch_size=0), "mini_batch_size must be a positive integer"),
        (lambda: InBatchKL(mini_batch_size=2.5), "mini_batch_size must be a positive integer"),
        (lambda: InfoNCE(cached="yes"), "cached must be true or false"),
        (
            lambda: CombinedLoss(terms=[{"name": "infonce", "params": {"cached": True}}]),
            "set cached and mini_batch_size in the combined loss's own params",
        ),
    ],
)
def test_bad_options_are_refused(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_a_mini_batch_size_below_one_is_refused_by_the_embedder(student: SentenceTransformer) -> None:
    with pytest.raises(ValueError, match="mini_batch_size must be a positive integer"):
        cached_embed_columns(student, features(student), 0)


def test_the_replay_runs_under_the_autocast_of_the_first_pass(student: SentenceTransformer) -> None:
    # The trainer runs the loss under autocast and its backward outside; the replay must re-embed
    # in bf16 as the first pass did. Equal to bf16 rounding only: the uncached pass sums the four
    # columns' gradients of autocast's one bf16 copy of each weight in bf16, the replay in fp32.
    # A replay in fp32 would be off by ~5% of the largest gradient; rounding stays under 1%.
    student.eval()

    def under_autocast(embed: Embed) -> Embed:
        def run(model: SentenceTransformer, columns: list[dict[str, Any]]) -> list[torch.Tensor]:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return [e.float() for e in embed(model, columns)]

        return run

    loss = InfoNCE(scale=20.0)
    cached_loss, cached_grads = loss_and_gradients(student, under_autocast(cached(len(QUERIES))), loss)
    loss_value, grads = loss_and_gradients(student, under_autocast(uncached), loss)
    torch.testing.assert_close(cached_loss, loss_value, rtol=1e-5, atol=1e-6)
    assert cached_grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert (cached_grads[name] - grad).abs().max() <= 0.01 * grad.abs().max(), name
