"""The DDP path of the in-batch scores: two gloo processes on CPU against one process on the whole batch.

And the trainer settings of several processes (:mod:`retrodistill.train.distributed`); the whole
path, under torchrun, is in ``test_torchrun.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from retrodistill.losses import InfoNCE
from retrodistill.train.distributed import RankSlices, batch_sampler, ddp_arguments
from retrodistill.train.st_loss import average_over_ranks, in_batch_rows, in_batch_scores

WORLD, LOCAL, COLUMNS, DIM = 2, 2, 3, 6  # 2 ranks x 2 rows, 1+N = 3 documents per row
SCALE = 5.0


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(WORLD * LOCAL, DIM, generator=generator)
    documents = torch.randn(WORLD * LOCAL, COLUMNS, DIM, generator=generator)
    return query, documents


def projection_input(rank: int) -> torch.Tensor:
    return torch.randn(3, DIM, generator=torch.Generator().manual_seed(rank + 1))


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        query, documents = global_batch()
        local = slice(rank * LOCAL, (rank + 1) * LOCAL)
        q = query[local].clone().requires_grad_(True)
        d = documents[local].clone().requires_grad_(True)
        scores, positive = in_batch_scores(q, d, "cosine", 1.0)
        loss = InfoNCE(scale=SCALE)(scores, positive)
        loss.backward()
        rows = in_batch_rows(torch.arange(WORLD * LOCAL * COLUMNS).reshape(WORLD * LOCAL, COLUMNS)[local])

        torch.manual_seed(0)
        projection = torch.nn.Linear(DIM, 2)
        for parameter in projection.parameters():
            parameter.register_hook(average_over_ranks)
        projection(projection_input(rank)).sum().backward()
        assert q.grad is not None and d.grad is not None and projection.weight.grad is not None
        save_file(
            {
                "loss": loss.detach().reshape(1),
                "scores": scores.detach().contiguous(),
                "positive": positive,
                "query_grad": q.grad,
                "documents_grad": d.grad,
                "rows": rows.contiguous(),
                "projection_grad": projection.weight.grad,
            },
            os.path.join(out_dir, f"rank{rank}.safetensors"),
        )
    finally:
        # Both ranks leave together: a rank tearing gloo down while its peer still talks aborts (SIGABRT).
        dist.barrier()
        dist.destroy_process_group()


def test_gathered_in_batch_loss_and_gradients_equal_the_single_process_batch(tmp_path: Path) -> None:
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [load_file(str(tmp_path / f"rank{rank}.safetensors")) for rank in range(WORLD)]

    # One process, whole batch: each rank's loss is the mean over its own queries.
    query, documents = global_batch()
    query.requires_grad_(True)
    documents.requires_grad_(True)
    scores, positive = in_batch_scores(query, documents, "cosine", 1.0)
    per_rank = [
        InfoNCE(scale=SCALE)(scores[r * LOCAL : (r + 1) * LOCAL], positive[r * LOCAL : (r + 1) * LOCAL])
        for r in range(WORLD)
    ]
    torch.stack(per_rank).sum().backward()  # what the ranks' backward passes add up to
    assert query.grad is not None and documents.grad is not None

    for rank, got in enumerate(ranks):
        local = slice(rank * LOCAL, (rank + 1) * LOCAL)
        torch.testing.assert_close(got["scores"], scores[local].detach())
        torch.testing.assert_close(got["positive"], positive[local])
        torch.testing.assert_close(got["loss"][0], per_rank[rank].detach())
        torch.testing.assert_close(got["query_grad"], query.grad[local])
        # The local documents also receive the other rank's gradient, through the gather.
        torch.testing.assert_close(got["documents_grad"], documents.grad[local])
        # Every rank sees the global batch's document rows, in the order of the score columns.
        expected_rows = torch.arange(WORLD * LOCAL * COLUMNS).reshape(WORLD * LOCAL, COLUMNS).T.reshape(-1)
        torch.testing.assert_close(got["rows"], expected_rows)

    # The projection hook leaves every rank with the mean of the ranks' gradients.
    expected = torch.stack([projection_input(rank).sum(0).expand(2, DIM) for rank in range(WORLD)]).mean(0)
    for got in ranks:
        torch.testing.assert_close(got["projection_grad"], expected)


def test_ddp_arguments_train_cpu_processes_over_gloo() -> None:
    assert ddp_arguments(1, cuda=False) == ddp_arguments(1, cuda=True) == {}
    assert ddp_arguments(2, cuda=True) == {"dataloader_drop_last": True}
    assert ddp_arguments(2, cuda=False) == {"dataloader_drop_last": True, "use_cpu": True, "ddp_backend": "gloo"}


def test_rank_slices_deal_each_rank_its_part_of_the_one_process_batches() -> None:
    """Two ranks with batches of 2 train the no-duplicates batches of 4 that one process draws."""
    import datasets
    from accelerate.data_loader import BatchSamplerShard
    from sentence_transformers.base.sampler import BatchSamplers, NoDuplicatesBatchSampler

    # 16 rows over 6 documents: many rows share one, so batches of 2 and of 4 group differently.
    dataset = datasets.Dataset.from_dict(
        {"query": [f"q{i}" for i in range(16)], "doc": [f"d{(i * 7) % 6}" for i in range(16)]}
    )
    whole = list(NoDuplicatesBatchSampler(dataset, 4, True, generator=torch.Generator(), seed=3))
    sliced = RankSlices(dataset, 2, True, generator=torch.Generator(), seed=3, world_size=2)
    ranks = [list(BatchSamplerShard(sliced, num_processes=2, process_index=r)) for r in range(2)]

    assert [a + b for a, b in zip(*ranks, strict=True)] == whole
    assert len(sliced) == 2 * len(NoDuplicatesBatchSampler(dataset, 4, True))
    for batch in whole:
        assert len({dataset[i]["doc"] for i in batch}) == len(batch)  # no document twice in a global batch
    assert batch_sampler(in_batch=True, world_size=1) == BatchSamplers.NO_DUPLICATES
    assert batch_sampler(in_batch=False, world_size=2) == BatchSamplers.BATCH_SAMPLER
