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


@pytest.fixture(scope="module")
def calm_cross_encoder_dir(tiny_cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cross-encoder with weights of std 0.2: its scores spread without amplifying rounding ~100×."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-ce-calm-gpu")
    config = BertConfig.from_pretrained(tiny_cross_encoder_dir, initializer_range=0.2)
    torch.manual_seed(1)
    BertForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_cross_encoder_dir).save_pretrained(out)
    return out


def _word_pairs() -> tuple[list[str], list[str]]:
    words = ["cancer tumor", "heart artery", "sleep night", "virus vaccine", "diet sugar", "brain memory"]
    return [q for q in words for _ in words], [d for _ in words for d in words]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_low_precision_scores_come_from_an_fp32_head(calm_cross_encoder_dir: Path, dtype: str) -> None:
    import torch

    from retrodistill.teachers.cross_encoder import CrossEncoderTeacher

    queries, docs = _word_pairs()
    fp32 = CrossEncoderTeacher(str(calm_cross_encoder_dir), device="cuda").score(queries, docs)
    teacher = CrossEncoderTeacher(str(calm_cross_encoder_dir), device="cuda", dtype=dtype)
    low = teacher.score(queries, docs)
    assert teacher.linear_backend == "torch"  # autocast on GPU
    assert teacher.model.classifier.weight.dtype == torch.float32
    assert np.abs(low - fp32).max() < 0.2 * fp32.std()
    # Not rounded to the low-precision format's significand, as a head under autocast would be.
    values = torch.from_numpy(low)
    rounded = values.to(torch.bfloat16 if dtype == "bf16" else torch.float16).float()
    assert (rounded == values).float().mean() < 0.5


def test_compiled_cross_encoder_equals_eager_on_gpu(calm_cross_encoder_dir: Path) -> None:
    from retrodistill.teachers.cross_encoder import CrossEncoderTeacher

    queries, docs = _word_pairs()
    eager = CrossEncoderTeacher(str(calm_cross_encoder_dir), device="cuda").score(queries, docs)
    compiled = CrossEncoderTeacher(str(calm_cross_encoder_dir), device="cuda", compile=True)
    assert compiled.describe()["compile"] is True
    assert eager.std() > 0.01
    # GPU kernels (cuBLAS vs triton) may sum in other orders than eager; still far below any score gap.
    np.testing.assert_allclose(compiled.score(queries, docs), eager, rtol=0, atol=1e-4)
