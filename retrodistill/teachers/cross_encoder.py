"""Cross-encoder teacher: any Hugging Face sequence-classification model scores (query, document) pairs.

Loads a Hub id or a local directory (a plain ``*ForSequenceClassification`` checkpoint or a
sentence-transformers ``CrossEncoder`` directory, which is the same thing on disk) with
``AutoModelForSequenceClassification`` and ``AutoTokenizer``, safetensors weights only, and no remote
code unless ``trust_remote_code=True`` is given.

The score of a pair is the model's raw output (no sigmoid), chosen by ``score_logit``:

============  ===============  =========================================================
num_labels    ``score_logit``  score
============  ===============  =========================================================
1             ``None``         ``logits[:, 0]`` (what ``CrossEncoder.predict`` returns with
                               ``activation_fn=Identity()``)
2             ``None``         ``logits[:, 1] - logits[:, 0]``: the log-odds of class 1
                               (monoBERT-style rerankers), so ``sigmoid(score)`` is the
                               softmax probability of class 1
any           ``k``            ``logits[:, k]``
============  ===============  =========================================================

How it is fast (each step keeps fp32 scores within 1e-5 of ``CrossEncoder.predict``):

1. identical (query, document) texts are scored once;
2. all pairs are tokenized up front in large chunks (``truncation="longest_first"``, as
   ``CrossEncoder`` does), then sorted by their true token length, so a batch of neighbours is
   padded by a few tokens at most (sorting by characters, as ``CrossEncoder.predict`` does, pads
   MS MARCO pairs by about 30%);
3. a batch without padding is run without an attention mask;
4. on CPU in fp32, linear layers run through oneDNN (``linear_backend``): PyTorch's default fp32 GEMM
   goes through MKL, which on AMD CPUs does not use AVX-512 and reaches about half of oneDNN's speed.

Lower precision (opt-in, ``dtype``; scores then match fp32 to bf16/fp16 rounding, not to 1e-5). The
encoder (the model's ``base_model``) runs in low precision and the classification head in fp32, so
scores are not rounded to bf16's 8 significant bits (which makes candidates of a list tie):

* ``"bf16"`` on CPU with ``linear_backend`` ``"auto"``/``"onednn"`` and native bf16 (AVX-512 BF16 or
  AMX): the encoder is cast to bf16 and its linear layers run through oneDNN's bf16 kernel
  (:func:`~retrodistill.onednn_linear.use_onednn_bf16`), about 1.7× the fp32 engine on AMD Zen 5;
* otherwise (``linear_backend="torch"``, no native bf16, any GPU) ``"bf16"`` and ``"fp16"`` run the
  fp32 encoder under ``torch.autocast``.

The two bf16 paths round differently (both rank MS MARCO lists like fp32, Spearman > 0.999), and
``linear_backend`` records which one ran.

``compile=True`` runs the model through ``torch.compile(dynamic=True)`` with inductor's ``freezing``
(weights as constants, pre-packed on CPU), which then lowers the linear layers itself. Scores equal the
eager ones to float rounding (fp32: 6e-8 on MiniLM-L6; bf16: to bf16 rounding), so ``compile`` is a
runtime setting. Warm-up: the first batches compile the graph (with and without an attention mask,
and for a batch of one pair): about 1.5–2 min for MiniLM-L6 on 2 busy CPU cores, ~30 s for a tiny
test model. It is meant for GPUs and long runs: on CPU the eager oneDNN path was as fast in bf16 and
faster in fp32 (inductor's fp32 linear layers use MKL, slow on AMD CPUs).

Example::

    teacher = CrossEncoderTeacher("cross-encoder/ms-marco-MiniLM-L6-v2", max_length=512)
    teacher.score(["what is bm25"], ["BM25 is a bag-of-words ranking function ..."])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from retrodistill.artifacts import model_revision
from retrodistill.onednn_linear import LINEAR_BACKENDS, use_onednn_bf16, use_onednn_linear
from retrodistill.teachers.base import (
    TEACHERS,
    Teacher,
    check_dtype,
    check_pairs,
    pair_progress,
    resolve_device,
    torch_dtype,
)

_TOKENIZE_CHUNK = 4096


@TEACHERS.register("cross-encoder")
class CrossEncoderTeacher(Teacher):
    """Score pairs with a sequence-classification model.

    Args:
        model: Hugging Face Hub id or local directory.
        max_length: maximum tokens of a pair (query and document truncated ``longest_first``); capped at
            the model's ``max_position_embeddings``.
        batch_size: maximum pairs per forward pass.
        dtype: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` (GPU only); see the module docstring for
            how bf16 runs on CPU.
        device: ``"cuda"``, ``"cpu"``, ``"cuda:1"``...; default: CUDA when available, else CPU.
        trust_remote_code: allow model code from the Hub (off unless asked for).
        max_tokens_per_batch: also cap a batch's padded tokens (``pairs × longest``), so batches of
            short pairs can be larger than batches of long ones; ``None`` for no cap.
        score_logit: which logit is the score (see the module docstring); ``None`` picks by ``num_labels``.
        revision: Hub branch, tag or commit to load.
        linear_backend: ``"auto"`` (oneDNN for fp32 and bf16 on CPU when it checks out, else PyTorch's
            default), ``"onednn"`` (required; error when unavailable) or ``"torch"``.
        compile: run the model through ``torch.compile`` (see the module docstring); its linear layers are
            then inductor's (``linear_backend`` ``"auto"`` or ``"torch"``, recorded as ``"inductor"``).
        allow_new_head: accept a checkpoint without a trained classification head (a bi-encoder or a bare
            encoder), whose head is then randomly initialised: for speed measurements, never for scores.
    """

    def __init__(
        self,
        model: str,
        max_length: int = 512,
        batch_size: int = 32,
        dtype: str = "fp32",
        device: str | None = None,
        trust_remote_code: bool = False,
        max_tokens_per_batch: int | None = None,
        score_logit: int | None = None,
        revision: str | None = None,
        linear_backend: str = "auto",
        compile: bool = False,
        allow_new_head: bool = False,
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from retrodistill.teachers.model_kind import require_cross_encoder

        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if max_tokens_per_batch is not None and max_tokens_per_batch < 1:
            raise ValueError(f"max_tokens_per_batch must be positive or null, got {max_tokens_per_batch}")
        self.device = resolve_device(device)
        check_dtype(dtype, self.device)
        self.model_name = model
        self.dtype = dtype
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.trust_remote_code = trust_remote_code

        require_cross_encoder(model, revision, allow_new_head=allow_new_head)
        self.tokenizer = AutoTokenizer.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(
                model,
                revision=revision,
                trust_remote_code=trust_remote_code,
                use_safetensors=True,
                dtype=torch.float32,
            )
        except OSError as err:
            if "safetensors" not in str(err):
                raise
            raise OSError(
                f"{model}: no safetensors weights. retrodistill loads only safetensors (pickled .bin "
                "weights can run code); convert the checkpoint with `model.save_pretrained(dir)` in a "
                "trusted environment and pass that directory."
            ) from err
        self.model.eval().to(self.device)

        config = self.model.config
        limit = getattr(config, "max_position_embeddings", None)
        self.max_length = min(max_length, limit) if isinstance(limit, int) and limit > 0 else max_length
        self.num_labels = int(config.num_labels)
        self.score_logit = score_logit
        if score_logit is None and self.num_labels not in (1, 2):
            raise ValueError(
                f"{model} has {self.num_labels} output logits; set score_logit to the index of the one to use"
            )
        if score_logit is not None and not 0 <= score_logit < self.num_labels:
            raise ValueError(f"score_logit {score_logit} out of range for {self.num_labels} logits")
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"{model}: the tokenizer has no pad token, so pairs cannot be batched")
        self.revision = model_revision(model, revision)
        if linear_backend not in LINEAR_BACKENDS:
            raise ValueError(f"linear_backend {linear_backend!r} is not one of {', '.join(LINEAR_BACKENDS)}")
        if compile and linear_backend == "onednn":
            raise ValueError("linear_backend 'onednn' cannot be combined with compile: inductor lowers linear layers")
        if dtype == "bf16" and self.device == "cpu":
            backend = use_onednn_bf16(self.model.base_model, linear_backend, self.device, patch=not compile)
        elif compile:
            backend = "torch"
        else:
            backend = use_onednn_linear(self.model, linear_backend, self.device, dtype)
        if dtype != "fp32":
            _low_precision_encoder(self.model, dtype, cast=backend != "onednn")
        self.linear_backend = "inductor" if compile else backend
        self.compile = compile
        # freezing: weights become constants, which inductor pre-packs on CPU (oneDNN bf16, MKL fp32).
        self._forward = torch.compile(self.model, dynamic=True, options={"freezing": True}) if compile else self.model

    def describe(self) -> dict[str, Any]:
        if self.score_logit is not None:
            score = f"logit[{self.score_logit}]"
        else:
            score = "logit[0]" if self.num_labels == 1 else "logit[1] - logit[0]"
        return {
            "name": "cross-encoder",
            "model": self.model_name,
            "revision": self.revision,
            "max_length": self.max_length,
            "truncation": "longest_first",
            "dtype": self.dtype,
            "score": score,
            "num_labels": self.num_labels,
            "trust_remote_code": self.trust_remote_code,
            "device": self.device,
            "batch_size": self.batch_size,
            "max_tokens_per_batch": self.max_tokens_per_batch,
            "linear_backend": self.linear_backend,
            "compile": self.compile,
        }

    def score(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool = False) -> np.ndarray:
        check_pairs(queries, docs)
        unique: dict[tuple[str, str], int] = {}
        pairs = zip(queries, docs, strict=True)
        inverse = np.fromiter((unique.setdefault(p, len(unique)) for p in pairs), np.int64, count=len(queries))
        if not unique:
            return np.zeros(0, dtype=np.float32)
        tokens = _tokenize(self.tokenizer, list(unique), self.max_length)
        scores = np.empty(len(unique), dtype=np.float32)
        with pair_progress(len(unique), "cross-encoder", show_progress) as advance:
            for rows in _batches(tokens.lengths, self.batch_size, self.max_tokens_per_batch):
                inputs = tokens.batch(rows, self.tokenizer.pad_token_id, self.tokenizer.padding_side)
                scores[rows] = self._select(self.logits(inputs)).cpu().numpy()
                advance(len(rows))
        return scores[inverse]

    def logits(self, inputs: dict[str, Any]) -> Any:
        """``(B, num_labels)`` float32 logits of one padded batch, with this teacher's device, dtype and compile.

        Args:
            inputs: the model's keyword inputs (``input_ids``, ``attention_mask``...), ``(B, T)`` tensors
                on any device; run without autograd.
        """
        import torch

        with torch.inference_mode():
            return self._forward(**{k: v.to(self.device) for k, v in inputs.items()}).logits.float()

    def _select(self, logits: Any) -> Any:
        """``(B, num_labels)`` logits → ``(B,)`` scores."""
        if self.score_logit is not None:
            return logits[:, self.score_logit]
        if self.num_labels == 1:
            return logits[:, 0]
        return logits[:, 1] - logits[:, 0]


def _low_precision_encoder(model: Any, dtype: str, cast: bool) -> None:
    """Run the encoder of ``model`` (its ``base_model``) in ``dtype``, its head in fp32.

    A head under autocast would round the scores to bf16's 8 bits (fp16's 11): a logit of 8 would be a
    multiple of 1/16 and candidates would tie. So only the encoder runs in low precision — cast in
    place already (``cast=False``, the oneDNN bf16 path) or under autocast (``cast=True``) — and its
    outputs are cast back to float32 before the head, which keeps its fp32 weights.
    """
    import torch

    encoder = model.base_model
    if cast:
        device_type = next(encoder.parameters()).device.type
        inner = encoder.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            with torch.autocast(device_type=device_type, dtype=torch_dtype(dtype)):
                return inner(*args, **kwargs)

        # An instance attribute shadows the class's forward for this model only.
        setattr(encoder, "forward", forward)  # noqa: B010
    encoder.register_forward_hook(_float_outputs)


def _float_outputs(module: Any, args: Any, output: Any) -> Any:
    """Forward hook: the bf16/fp16 tensors of a model output (a ``ModelOutput`` or a tuple) as float32."""
    import torch

    def cast(value: Any) -> Any:
        low = isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16, torch.float16)
        return value.float() if low else value

    if isinstance(output, tuple):
        return type(output)(cast(value) for value in output)
    for key, value in output.items():
        output[key] = cast(value)
    return output


class _Tokens:
    """Tokenized pairs, stored flat: pair ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    def __init__(self, fields: dict[str, np.ndarray], offsets: np.ndarray) -> None:
        self.fields = fields
        self.offsets = offsets
        self.lengths = np.diff(offsets)

    def batch(self, rows: np.ndarray, pad_id: int, side: str) -> dict[str, Any]:
        """Pad the pairs ``rows`` to their longest; ``attention_mask`` only where there is padding."""
        import torch

        lengths = self.lengths[rows]
        width = int(lengths.max())
        out: dict[str, Any] = {}
        for name, flat in self.fields.items():
            array = np.full((len(rows), width), pad_id if name == "input_ids" else 0, dtype=np.int64)
            for r, (i, n) in enumerate(zip(rows, lengths, strict=True)):
                start = self.offsets[i]
                if side == "left":
                    array[r, width - n :] = flat[start : start + n]
                else:
                    array[r, :n] = flat[start : start + n]
            out[name] = torch.from_numpy(array)
        if (lengths != width).any():
            positions = np.arange(width)
            if side == "left":
                positions = positions[::-1]
            out["attention_mask"] = torch.from_numpy((positions[None, :] < lengths[:, None]).astype(np.int64))
        return out


def _tokenize(tokenizer: Any, pairs: list[tuple[str, str]], max_length: int) -> _Tokens:
    """Tokenize all pairs once, in chunks (a fast tokenizer encodes a chunk in parallel)."""
    chunks: dict[str, list[np.ndarray]] = {}
    lengths: list[np.ndarray] = []
    for start in range(0, len(pairs), _TOKENIZE_CHUNK):
        chunk = pairs[start : start + _TOKENIZE_CHUNK]
        encoded = tokenizer(
            [q for q, _ in chunk],
            [d for _, d in chunk],
            truncation="longest_first",
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
        )
        for name, values in encoded.items():
            chunks.setdefault(name, []).append(np.concatenate([np.asarray(seq, dtype=np.int32) for seq in values]))
        lengths.append(np.fromiter((len(seq) for seq in encoded["input_ids"]), dtype=np.int64))
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))])
    return _Tokens({name: np.concatenate(parts) for name, parts in chunks.items()}, offsets)


def _batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None) -> Iterator[np.ndarray]:
    """Indices of pairs, longest first, cut into batches of neighbours in token length.

    A batch holds at most ``batch_size`` pairs and, with ``max_tokens``, at most ``max_tokens`` padded
    tokens (``pairs × its longest``; a single pair longer than that still forms a batch).
    """
    order = np.argsort(-lengths, kind="stable")
    start = 0
    while start < len(order):
        size = batch_size
        if max_tokens is not None:
            size = max(1, min(size, max_tokens // int(lengths[order[start]])))
        yield order[start : start + size]
        start += size
