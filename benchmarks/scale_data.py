"""Synthetic data with MS MARCO passage's shape, for ``benchmarks/scale.py``.

What is generated, into one folder per size (``DataSpec.folder``)::

    FOLDER/
      msmarco-synthetic/            BEIR layout: the dataset every stage is given
        corpus.jsonl                {"_id": "<pid>", "title": "", "text": ...}   pids 0 … P-1
        collection.tsv              pid <TAB> text (the same passages, MS MARCO's own layout)
        queries.jsonl               {"_id": "<qid>", "text": ...}   train qids 10,000,000+i, dev qids 20,000,000+i
        qrels/train.tsv             query-id corpus-id score (header); 1 positive per query, 6% get a second
        qrels/dev.tsv               1 positive per dev query (evaluate and mine-negatives run on dev)
      pairs.tsv                     Hofstätter Margin-MSE: score_pos score_neg qid pid_pos pid_neg, by query
      triples.tsv                   the first ``score_pairs`` lines of pairs.tsv as MS MARCO id triples (qid pid+ pid-)
      models/bert                   tiny BERT (hidden 32, 2 layers) with a WordPiece vocabulary of the synthetic words
      models/student                sentence-transformers bi-encoder on it (mean pooling, normalised)
      models/cross-encoder          1-logit sequence-classification model on it

Shape, fitted to the real data in ``../shared/data/msmarco``: passage lengths (in words) are drawn from the
ventiles of the 5,000 real passages of ``dl19-sample`` (mean 58.7 words, median 52); query lengths from the
word-count histogram of the 6,980 MS MARCO dev-small queries (mean 5.9). Words follow a Zipf-Mandelbrot law
(``p(r) ∝ 1 / (r + 2.7)``) over a vocabulary whose top ranks are English function words (so BM25's stopword
list removes about a quarter of the tokens, as in real text) and whose other words are made of syllables,
shortest first. Qids are offset so that no query id equals a passage id.

Every file is written to ``NAME.tmp`` and renamed when complete, so an interrupted generation resumes by
skipping the files already there. The same spec and seed give byte-identical files.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Passage length in words at percentiles 0, 5, …, 100 of the 5,000 real passages in dl19-sample.
PASSAGE_WORDS_VENTILES = (
    11, 31, 35, 38.9, 41, 43, 45, 47, 48, 50, 52, 54, 56, 60, 66, 73, 79, 85, 93, 103, 185,
)  # fmt: skip
#: Number of MS MARCO dev-small queries (official topics) with 0, 1, 2, … words.
QUERY_WORDS_COUNTS = (
    0, 0, 302, 688, 1159, 1289, 1164, 838, 579, 401, 227, 134, 75, 48, 20, 20, 12, 7, 4, 6, 0, 1, 3, 0, 1,
    0, 0, 0, 1, 0, 1,
)  # fmt: skip
#: The most frequent ranks of the vocabulary: English function words (all of bm25s' English stopwords among them).
FUNCTION_WORDS = (
    "the of and to a in is for that are on it as with was by be this or you can from at an your which not "
    "have also has if will its they their these but what all one more when there may used other such into "
    "how than most been some about then who so do no"
).split()
SYLLABLES = tuple(c + v for c in "bdfghklmnprstvz" for v in "aeiou")
TRAIN_QID_OFFSET = 10_000_000
DEV_QID_OFFSET = 20_000_000
DATASET = "msmarco-synthetic"


@dataclass(frozen=True)
class DataSpec:
    """The size and seed of one synthetic data set."""

    passages: int
    queries: int
    pairs: int
    dev_queries: int = 1000
    score_pairs: int = 1_000_000
    vocab: int = 1_000_000
    seed: int = 0

    @property
    def label(self) -> str:
        return f"p{human(self.passages)}-q{human(self.queries)}-x{human(self.pairs)}-s{self.seed}"


def human(n: int) -> str:
    """``8_800_000`` → ``"8.8M"``, ``100_000`` → ``"100k"``."""
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size and (n * 10) % size == 0:
            text = f"{n / size:.1f}".removesuffix(".0")
            return text + unit
    return str(n)


def approx(n: int) -> str:
    """``4_545_440`` → ``"4.55M"``, ``56_818`` → ``"56.8k"``: three significant digits, for tables."""
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def parse_count(text: str) -> int:
    """``"8.8M"`` → 8,800,000; ``"100k"`` → 100,000; ``"40000"`` → 40,000."""
    text = text.strip().replace("_", "").replace(",", "")
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    number = text[:-1] if factor > 1 else text
    return round(float(number) * factor)


def vocabulary(size: int) -> list[str]:
    """Function words, then syllable words of 2, 3, 4 syllables in a fixed order, ``size`` in all."""
    words = list(FUNCTION_WORDS[:size])
    seen = set(words)
    for n in (2, 3, 4):
        for combo in itertools.product(SYLLABLES, repeat=n):
            if len(words) >= size:
                return words
            word = "".join(combo)
            if word not in seen:
                words.append(word)
                seen.add(word)
    return words


class WordSampler:
    """Draws word ranks from a Zipf-Mandelbrot law and turns rank lists into texts (vectorised with Arrow)."""

    def __init__(self, size: int) -> None:
        import pyarrow as pa

        weights = 1.0 / (np.arange(1, size + 1, dtype=np.float64) + 2.7)
        self.cdf = np.cumsum(weights) / weights.sum()
        self.words = pa.array(vocabulary(size), pa.string())

    def texts(self, rng: np.random.Generator, lengths: np.ndarray) -> Any:
        """One text per entry of ``lengths``: that many words joined by spaces (a pyarrow string array)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        ranks = np.searchsorted(self.cdf, rng.random(int(lengths.sum())), side="right")
        ranks = np.minimum(ranks, len(self.words) - 1).astype(np.int32)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        lists = pa.ListArray.from_arrays(pa.array(offsets), self.words.take(pa.array(ranks)))
        return pc.binary_join(lists, " ")


def passage_lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    """Word counts interpolated between the real ventiles (inverse-CDF sampling)."""
    u = rng.random(n) * (len(PASSAGE_WORDS_VENTILES) - 1)
    grid = np.arange(len(PASSAGE_WORDS_VENTILES))
    return np.maximum(1, np.rint(np.interp(u, grid, PASSAGE_WORDS_VENTILES))).astype(np.int64)


def query_lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    counts = np.asarray(QUERY_WORDS_COUNTS, dtype=np.float64)
    return rng.choice(len(counts), size=n, p=counts / counts.sum()).astype(np.int64)


def _join(*columns: Any) -> Any:
    """Concatenate string arrays / scalars element-wise (pyarrow)."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(*columns, "")


def _write_lines(f: Any, lines: Any) -> None:
    """Write a pyarrow string array whose values each end in a newline, as one block of bytes."""
    import pyarrow as pa

    lines = pa.concat_arrays([lines]) if lines.offset else lines
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[: len(lines) + 1]
    f.write(memoryview(lines.buffers()[2])[offsets[0] : offsets[-1]])


def _ids(values: np.ndarray) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(pa.array(values), pa.string())


class Generator:
    """Writes the files of one :class:`DataSpec` under ``root / spec.label``, skipping those already complete."""

    def __init__(self, spec: DataSpec, root: Path, log: Callable[[str], None] = print, chunk: int = 200_000) -> None:
        self.spec = spec
        self.folder = Path(root) / spec.label
        self.dataset = self.folder / DATASET
        self.log = log
        self.chunk = chunk
        self.timings: dict[str, float] = {}
        self._sampler: WordSampler | None = None

    @property
    def sampler(self) -> WordSampler:
        if self._sampler is None:
            self._sampler = WordSampler(self.spec.vocab)
        return self._sampler

    def rng(self, *stream: int) -> np.random.Generator:
        return np.random.default_rng([self.spec.seed, *stream])

    def paths(self) -> dict[str, Path]:
        return {
            "dataset": self.dataset,
            "corpus": self.dataset / "corpus.jsonl",
            "collection": self.dataset / "collection.tsv",
            "queries": self.dataset / "queries.jsonl",
            "train_qrels": self.dataset / "qrels" / "train.tsv",
            "dev_qrels": self.dataset / "qrels" / "dev.tsv",
            "pairs": self.folder / "pairs.tsv",
            "triples": self.folder / "triples.tsv",
            "student": self.folder / "models" / "student",
            "cross_encoder": self.folder / "models" / "cross-encoder",
        }

    def generate(self, models: bool = True) -> dict[str, Path]:
        """Write whatever is missing (the tiny models too, unless ``models`` is false); return every path."""
        paths = self.paths()
        (self.dataset / "qrels").mkdir(parents=True, exist_ok=True)
        spec_file = self.folder / "spec.json"
        spec_file.write_text(json.dumps(asdict(self.spec), indent=2) + "\n")
        self._step("corpus", [paths["corpus"], paths["collection"]], self._corpus)
        self._step("queries", [paths["queries"]], self._queries)
        self._step("qrels", [paths["train_qrels"], paths["dev_qrels"]], self._qrels)
        self._step("pairs", [paths["pairs"]], self._pairs)
        self._step("triples", [paths["triples"]], self._triples)
        if models:
            self._step("models", [paths["student"], paths["cross_encoder"]], self._models)
        return paths

    def _step(self, name: str, outputs: list[Path], write: Callable[[list[Path]], None]) -> None:
        if all(p.exists() for p in outputs):
            self.log(f"  {name}: complete, skipped")
            return
        start = time.perf_counter()
        temps = [p.with_name(p.name + ".tmp") for p in outputs]
        write(temps)
        for tmp, final in zip(temps, outputs, strict=True):
            os.replace(tmp, final)
        self.timings[name] = round(time.perf_counter() - start, 1)
        self.log(f"  {name}: written in {self.timings[name]} s")

    def _chunks(self, n: int) -> Iterator[tuple[int, int, int]]:
        for index, start in enumerate(range(0, n, self.chunk)):
            yield index, start, min(n, start + self.chunk)

    def _corpus(self, out: list[Path]) -> None:
        with open(out[0], "wb") as jsonl, open(out[1], "wb") as tsv:
            for index, start, end in self._chunks(self.spec.passages):
                rng = self.rng(1, index)
                texts = self.sampler.texts(rng, passage_lengths(rng, end - start))
                pids = _ids(np.arange(start, end))
                # Words are lowercase ASCII letters: no JSON escaping is needed.
                _write_lines(jsonl, _join('{"_id": "', pids, '", "title": "", "text": "', texts, '"}\n'))
                _write_lines(tsv, _join(pids, "\t", texts, "\n"))

    def _queries(self, out: list[Path]) -> None:
        with open(out[0], "wb") as f:
            for offset, count, stream in (
                (TRAIN_QID_OFFSET, self.spec.queries, 2),
                (DEV_QID_OFFSET, self.spec.dev_queries, 3),
            ):
                for index, start, end in self._chunks(count):
                    rng = self.rng(stream, index)
                    texts = self.sampler.texts(rng, query_lengths(rng, end - start))
                    qids = _ids(np.arange(start, end) + offset)
                    _write_lines(f, _join('{"_id": "', qids, '", "text": "', texts, '"}\n'))

    def positives(self) -> np.ndarray:
        """The first positive pid of each train query (the one the pairs file uses)."""
        return self.rng(4).integers(0, self.spec.passages, size=self.spec.queries)

    def _qrels(self, out: list[Path]) -> None:
        first = self.positives()
        rng = self.rng(5)
        extra = np.flatnonzero(rng.random(self.spec.queries) < 0.06)
        second = (first[extra] + 1 + rng.integers(0, self.spec.passages - 1, size=len(extra))) % self.spec.passages
        query = np.concatenate([np.arange(self.spec.queries), extra])
        pid = np.concatenate([first, second])
        order = np.argsort(query, kind="stable")
        self._write_qrels(out[0], query[order] + TRAIN_QID_OFFSET, pid[order])
        dev = np.arange(self.spec.dev_queries)
        self._write_qrels(out[1], dev + DEV_QID_OFFSET, self.rng(6).integers(0, self.spec.passages, size=len(dev)))

    def _write_qrels(self, path: Path, qids: np.ndarray, pids: np.ndarray) -> None:
        with open(path, "wb") as f:
            f.write(b"query-id\tcorpus-id\tscore\n")
            for start in range(0, len(qids), self.chunk):
                end = start + self.chunk
                _write_lines(f, _join(_ids(qids[start:end]), "\t", _ids(pids[start:end]), "\t1\n"))

    def _pairs(self, out: list[Path]) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        positives = self.positives()
        spec = self.spec
        chunk = self.chunk * 10
        with open(out[0], "wb") as f:
            for index, start in enumerate(range(0, spec.pairs, chunk)):
                end = min(spec.pairs, start + chunk)
                rng = self.rng(7, index)
                # Line j belongs to query floor(j * Q / X): every query gets X/Q lines, grouped by query.
                query = (np.arange(start, end, dtype=np.int64) * spec.queries) // spec.pairs
                pos = positives[query]
                neg = rng.integers(0, spec.passages - 1, size=len(query))
                neg = neg + (neg >= pos)  # never the positive itself
                score_pos = pc.cast(pa.array(np.round(rng.normal(7.0, 1.5, len(query)), 4)), pa.string())
                score_neg = pc.cast(pa.array(np.round(rng.normal(1.0, 3.0, len(query)), 4)), pa.string())
                columns = (score_pos, score_neg, _ids(query + TRAIN_QID_OFFSET), _ids(pos), _ids(neg))
                _write_lines(f, _join(*itertools.chain(*((c, "\t") for c in columns[:-1])), columns[-1], "\n"))

    def _triples(self, out: list[Path]) -> None:
        with open(self.paths()["pairs"], encoding="ascii") as src, open(out[0], "w", encoding="ascii") as dst:
            for line in itertools.islice(src, self.spec.score_pairs):
                _, _, qid, pos, neg = line.rstrip("\n").split("\t")
                dst.write(f"{qid}\t{pos}\t{neg}\n")

    def _models(self, out: list[Path]) -> None:
        build_tiny_models(self.sampler.words.to_pylist()[:20_000], out[0], out[1], seed=self.spec.seed)


def build_tiny_models(words: list[str], student_dir: Path, cross_encoder_dir: Path, seed: int = 0) -> None:
    """A 2-layer, hidden-32 BERT whose WordPiece vocabulary holds ``words`` and every syllable; saved as a
    sentence-transformers bi-encoder (``student_dir``) and a 1-logit cross-encoder (``cross_encoder_dir``)."""
    import tempfile

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", ",", "!", "-"]
    pieces = list(SYLLABLES) + [f"##{s}" for s in SYLLABLES]
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    tokens = list(dict.fromkeys(special + words + pieces + letters + [f"##{c}" for c in letters]))
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(tokens)}, do_lower_case=True, model_max_length=512)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=512,  # the student plug-in truncates at 256 tokens by default
        initializer_range=0.5,
    )
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(seed)
        BertModel(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        transformer = Transformer(tmp, max_seq_length=128)
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
        SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu").save(str(student_dir))
    config.num_labels = 1
    torch.manual_seed(seed + 1)
    BertForSequenceClassification(config).save_pretrained(cross_encoder_dir)
    tokenizer.save_pretrained(cross_encoder_dir)
