"""GPU paths: FAISS on GPU and bf16 teacher scoring. Marked ``gpu``: run with ``pytest -m gpu`` where CUDA is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_cuda() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def test_faiss_gpu_index_equals_cpu_index() -> None:
    from retrodistill.index.faiss_flat import FaissFlatIP, import_faiss

    if import_faiss().get_num_gpus() == 0:
        pytest.skip("faiss has no GPU support here (install retrodistill[gpu])")
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((500, 32)).astype(np.float32)
    queries = rng.standard_normal((7, 32)).astype(np.float32)
    results = []
    for use_gpu in (False, True):
        index = FaissFlatIP(use_gpu=use_gpu)
        index.add(docs)
        results.append(index.search(queries, 10))
    (cpu_scores, cpu_ids), (gpu_scores, gpu_ids) = results
    assert np.array_equal(cpu_ids, gpu_ids)
    assert np.allclose(cpu_scores, gpu_scores, atol=1e-4)


def test_bf16_cross_encoder_ranks_like_fp32(tiny_cross_encoder_dir: Path) -> None:
    from scipy.stats import spearmanr

    from retrodistill.teachers.cross_encoder import CrossEncoderTeacher

    words = ["cancer tumor", "heart artery", "sleep night", "virus vaccine", "diet sugar", "brain memory"]
    queries = [q for q in words for _ in words]
    docs = [d for _ in words for d in words]
    fp32 = CrossEncoderTeacher(str(tiny_cross_encoder_dir), device="cuda").score(queries, docs)
    bf16 = CrossEncoderTeacher(str(tiny_cross_encoder_dir), device="cuda", dtype="bf16").score(queries, docs)
    assert spearmanr(fp32, bf16).statistic > 0.99
