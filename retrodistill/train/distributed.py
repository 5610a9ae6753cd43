"""Several training processes (``torchrun`` / ``accelerate launch``) as one data-parallel run.

Each process is one rank; the trainer wraps the student in DDP, deals the seeded sampler's batches
of ``batch_size`` examples to the ranks in turn (step ``k`` trains batches ``k*W … k*W + W-1`` of the
one-process order) and averages the gradients, so a run on ``W`` processes takes the same steps as
one process with ``batch_size * W``. Per-row losses (``margin-mse``) then give the same gradient;
in-batch losses gather every rank's documents (:mod:`retrodistill.train.st_loss`), and their
batches are drawn free of repeated texts across all ranks (:class:`RankSlices`). Only rank 0
writes the student and its files; every rank writes its RNG state into a checkpoint.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from sentence_transformers.base.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler


def leave_process_group() -> None:
    """End a launched run together: wait for every rank (rank 0 publishes last), then close the group.

    Called once the command's work is done. A gloo group left open at interpreter exit can abort a rank
    that exits while another still holds its connections ("terminate called without an active
    exception", seen under ``torchrun`` on CPU); closing it on every rank at the same point does not.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def ddp_arguments(world_size: int, *, cuda: bool) -> dict[str, Any]:
    """The trainer arguments that make ``world_size`` launched processes train as one DDP run.

    On CUDA the trainer joins the launcher's process group by itself (nccl). Without CUDA,
    transformers 5 sees no device to parallelise over and trains every process alone (each rank
    on the whole dataset, each publishing its own student) unless it is told to train on the CPU
    (``use_cpu``); accelerate then runs DDP over gloo. An incomplete last global batch is dropped,
    as every rank must take part in each step (sentence-transformers would set this itself, with a
    warning on every rank).
    """
    if world_size == 1:
        return {}
    arguments: dict[str, Any] = {"dataloader_drop_last": True}
    if not cuda:
        arguments |= {"use_cpu": True, "ddp_backend": "gloo"}
    return arguments


class RankSlices(DefaultBatchSampler):  # type: ignore[misc]
    """sentence-transformers' ``NO_DUPLICATES`` sampler over the global batch, cut into per-rank batches.

    The trainer builds each rank's sampler with the per-device ``batch_size`` and deals its batches
    to the ranks in turn. The stock sampler would keep each rank's batch free of repeated texts but
    not the global batch whose documents in-batch losses gather, so a query's positive could come
    back from another rank as a negative. This one draws duplicate-free batches of
    ``batch_size * world_size`` examples and yields each as ``world_size`` consecutive slices of
    ``batch_size``: rank ``r`` trains slice ``r``, and the ranks together train exactly the batches
    of one process with ``batch_size * world_size``. Pass it as ``functools.partial(RankSlices,
    world_size=W)``; the other arguments are the trainer's.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: Any = None,
        seed: int = 0,
        *,
        world_size: int,
    ) -> None:
        super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        self.world_size = world_size
        self.global_batches = NoDuplicatesBatchSampler(
            dataset, batch_size * world_size, drop_last, valid_label_columns, generator, seed
        )

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.global_batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches:
            for start in range(0, len(batch), self.batch_size):
                yield batch[start : start + self.batch_size]

    def __len__(self) -> int:
        return len(self.global_batches) * self.world_size


def batch_sampler(*, in_batch: bool, world_size: int) -> Any:
    """The trainer's ``batch_sampler``: shuffled batches, or batches without repeated texts for in-batch losses."""
    from sentence_transformers.base.sampler import BatchSamplers

    if not in_batch:
        return BatchSamplers.BATCH_SAMPLER
    if world_size == 1:
        return BatchSamplers.NO_DUPLICATES
    return functools.partial(RankSlices, world_size=world_size)
