"""Find a dataset folder by name or path, downloading public BEIR datasets on first use.

A dataset is named either by a folder path (used as is) or by its BEIR name (``scifact``,
``nfcorpus``, ...), which resolves to ``DATA_DIR/NAME``. ``DATA_DIR`` is, in order of precedence, the
``data_dir`` argument (the CLI's ``--data-dir``), the ``RETRODISTILL_DATA`` environment variable, or
``./data``. A missing BEIR dataset is downloaded from :data:`BEIR_URL`, checked against the md5 BEIR
publishes (:data:`BEIR_MD5`), extracted into a temporary folder inside ``DATA_DIR`` and renamed into
place in one step, so ``DATA_DIR/NAME`` is either complete or absent, never half-written.

CQADupStack unpacks to one folder per forum; name one as ``cqadupstack/android``. The four BEIR
datasets that may not be redistributed (:data:`BEIR_NOT_HOSTED`) are never downloaded: a local folder
works, and a missing one raises :class:`DatasetDownloadError` saying how to build it
(:data:`BEIR_REBUILD`). :func:`download_file` fetches one file (e.g. TREC qrels) the same careful way.

Example::

    >>> path = resolve_dataset("scifact", data_dir="../shared/data/beir", download=False)  # doctest: +SKIP
    >>> load_dataset("scifact", split="test").describe()  # doctest: +SKIP
    'scifact (test): 5,183 documents, 300 queries, 339 judgments'
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from retrodistill.data.collections import Collection, load_beir

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"

#: md5 of each zip as listed in BEIR's dataset table (beir-cellar/beir README and the BeIR dataset card).
BEIR_MD5: dict[str, str] = {
    "msmarco": "444067daf65d982533ea17ebd59501e4",
    "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1",
    "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "nq": "d4d3d2e48787a744b6f6e691ff534307",
    "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9",
    "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563",
    "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
    "quora": "18fb154900ba42a600f84b839c173167",
    "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
    "fever": "5a818580227bfb4b35bb6fa46d9b6c03",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
    "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
}

#: BEIR datasets whose licences forbid redistribution: BEIR documents how to rebuild them instead.
BEIR_NOT_HOSTED = ("bioasq", "signal1m", "trec-news", "robust04")

_HOW_TO = "https://github.com/beir-cellar/beir/blob/main/examples/dataset"
#: How to obtain each not-hosted dataset, summarised from BEIR's examples/dataset/README.md.
BEIR_REBUILD: dict[str, str] = {
    "bioasq": (
        "register at http://bioasq.org and take the BioASQ Task 9a corpus and the Task 8b questions "
        f"({_HOW_TO}#2-bioasq)"
    ),
    "signal1m": (
        "request the Signal-1M queries and qrels from https://research.signal-ai.com/datasets/signal1m-tweetir.html "
        f"and crawl the tweets it lists ({_HOW_TO}#4-signal-1m)"
    ),
    "trec-news": (
        "apply for the Washington Post corpus at https://trec.nist.gov/data/wapost/ and take the 2019 News "
        f"Track background-linking topics and qrels ({_HOW_TO}#1-trec-news)"
    ),
    "robust04": (
        "apply for TREC disks 4 and 5 at https://trec.nist.gov/data/cd45/index.html; topics and qrels are "
        f"ir_datasets' trec-robust04 ({_HOW_TO}#3-robust04)"
    ),
}

#: Archives that unpack to several collections, one sub-folder each.
NESTED = ("cqadupstack",)

DATA_ENV = "RETRODISTILL_DATA"
TIMEOUT_S = 60.0
_CHUNK = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class DatasetDownloadError(RuntimeError):
    """A dataset could not be downloaded, verified or unpacked; nothing was left in the data folder."""


def default_data_dir() -> Path:
    """``$RETRODISTILL_DATA`` if set, else ``./data`` (relative to the working directory)."""
    return Path(os.environ.get(DATA_ENV) or "data")


def resolve_dataset(
    name_or_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
) -> Path:
    """Return the folder of a dataset given by path or by BEIR name, downloading it if needed.

    Args:
        name_or_path: an existing dataset folder, or a BEIR name such as ``scifact`` (or
            ``cqadupstack/android`` for one CQADupStack forum).
        data_dir: where named datasets live; defaults to ``$RETRODISTILL_DATA`` or ``./data``.
        download: fetch a named dataset that is not in ``data_dir``; when False, raise instead.

    Returns:
        The dataset folder (``name_or_path`` itself, or ``data_dir/name``).

    Raises:
        FileNotFoundError: the folder is missing and ``download`` is False, or ``name_or_path`` is
            neither a folder nor a dataset name.
        DatasetDownloadError: the download failed (network, HTTP 404, md5 mismatch, bad archive).
    """
    given = Path(name_or_path)
    if given.is_dir():
        return given
    if given.exists():
        raise FileNotFoundError(f"{given}: is a file; expected a dataset folder (unzip it first)")
    name = str(name_or_path)
    archive, _, sub = name.partition("/")
    if not _NAME.fullmatch(archive) or (sub and (archive not in NESTED or not _NAME.fullmatch(sub))):
        raise FileNotFoundError(f"{name}: no such dataset folder, and not a BEIR dataset name")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    target = root / name
    if target.is_dir():
        return target
    if archive in BEIR_NOT_HOSTED:  # before the `download` check: allowing downloads would not help
        raise DatasetDownloadError(
            f"BEIR does not distribute {archive!r} (its licence forbids it), so it cannot be downloaded. "
            f"To obtain it: {BEIR_REBUILD[archive]}. Convert it to the BEIR layout (corpus.jsonl, "
            f"queries.jsonl, qrels/test.tsv) and put it at {root / archive}, or pass its folder."
        )
    if not download:
        raise FileNotFoundError(
            f"dataset {name!r} not found at {target}. Pass its folder, point --data-dir or "
            f"{DATA_ENV} at a folder holding {name}/, or allow downloading."
        )
    if not (root / archive).is_dir():
        _download_beir(archive, root)
    if not target.is_dir():
        available = sorted(p.name for p in (root / archive).iterdir() if p.is_dir())
        holds = ", ".join(available) or "nothing"
        raise FileNotFoundError(f"{target}: no such dataset; {archive} holds: {holds}")
    return target


def load_dataset(
    name_or_path: str | os.PathLike[str],
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
) -> Collection:
    """Resolve a dataset (see :func:`resolve_dataset`) and load one split with :func:`load_beir`."""
    path = resolve_dataset(name_or_path, data_dir, download=download)
    # A BEIR name is the better label for "cqadupstack/android" than the folder's last part.
    name = None if Path(name_or_path).is_dir() else str(name_or_path)
    return load_beir(path, split, name=name)


def _download_beir(name: str, root: Path) -> Path:
    """Download, verify and unpack ``BEIR_URL`` for ``name`` into ``root/name``, atomically."""
    url = BEIR_URL.format(name=name)
    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    # The temp folder sits inside root so the final rename stays on one filesystem (atomic).
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=root))
    try:
        zip_path = tmp / f"{name}.zip"
        not_found = (
            f"{url}: HTTP 404, BEIR has no dataset named {name!r}. Downloadable names: "
            f"{', '.join(sorted(BEIR_MD5))}. For another collection pass its folder instead."
        )
        md5 = _fetch(url, zip_path, f"{name}.zip", _offline_hint(name, root), not_found)
        expected = BEIR_MD5.get(name)
        if expected is not None and md5 != expected:
            raise DatasetDownloadError(
                f"{url}: md5 {md5} does not match BEIR's published {expected}; the download is corrupt "
                "or the file changed upstream. Nothing was kept; try again."
            )
        source = _extract(zip_path, tmp / "unpacked", name, url)
        if expected is None:
            _check_loadable(source, name, url)
        target = root / name
        try:
            os.replace(source, target)
        except OSError:
            # Another process finished the same download first; its copy is as good as ours.
            if not target.is_dir():
                raise
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_root and not any(root.iterdir()):
            root.rmdir()


def download_file(url: str, dest: str | os.PathLike[str], *, md5: str | None = None, hint: str = "") -> Path:
    """Download one file to ``dest`` atomically, checking its md5 when one is given.

    ``dest`` appears complete or not at all (a temporary file beside it is renamed into place).

    Args:
        url: what to fetch (``file://`` URLs work too, which tests use).
        dest: the file to create; its folder is created if needed.
        md5: the published checksum; a mismatch raises and keeps nothing.
        hint: appended to network errors, e.g. where to put a copy made by hand.

    Raises:
        DatasetDownloadError: network failure, HTTP error or md5 mismatch.
    """
    from retrodistill.artifacts import atomic_path

    dest = Path(dest)
    with atomic_path(dest) as tmp:
        got = _fetch(url, tmp, dest.name, hint, f"{url}: HTTP 404, no such file. {hint}".strip())
        if md5 is not None and got != md5:
            raise DatasetDownloadError(
                f"{url}: md5 {got} does not match the published {md5}; the download is corrupt or the file "
                "changed upstream. Nothing was kept."
            )
    return dest


def _fetch(url: str, dest: Path, label: str, hint: str, not_found: str) -> str:
    """Stream ``url`` to ``dest`` with a progress bar; return the md5 of the bytes received.

    ``hint`` is appended to network errors; ``not_found`` is the whole message for HTTP 404.
    """
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            columns = (TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn())
            progress = Progress(*columns, console=Console(stderr=True), transient=True)
            with progress, open(dest, "wb") as out:
                task = progress.add_task("download", total=total)
                while block := response.read(_CHUNK):
                    out.write(block)
                    digest.update(block)
                    progress.advance(task, len(block))
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise DatasetDownloadError(not_found) from None
        raise DatasetDownloadError(f"{url}: HTTP {err.code} {err.reason}. {hint}") from None
    except OSError as err:  # URLError, timeouts, refused connections, a full disk
        reason = getattr(err, "reason", None) or err
        raise DatasetDownloadError(f"could not download {url}: {reason}. {hint}") from None
    return digest.hexdigest()


def _offline_hint(name: str, root: Path) -> str:
    return (
        f"To use a copy you already have, pass its folder, or point --data-dir or {DATA_ENV} "
        f"at the folder that holds {name}/ (looked in {root})."
    )


def _extract(zip_path: Path, dest: Path, name: str, url: str) -> Path:
    """Unpack ``zip_path`` into ``dest``; return the dataset folder inside it.

    BEIR zips hold one top folder ``NAME/``; a zip holding the files at its root is accepted too.
    ``ZipFile.extractall`` drops absolute paths and ``..`` parts, so no member lands outside ``dest``.
    """
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(dest)
    except zipfile.BadZipFile as err:
        raise DatasetDownloadError(f"{url}: not a valid zip file ({err})") from None
    if (dest / name).is_dir():
        return dest / name
    if (dest / "corpus.jsonl").is_file():
        return dest
    found = sorted(p.name for p in dest.iterdir())
    raise DatasetDownloadError(f"{url}: expected a top folder {name}/ in the zip, found {found}")


def _check_loadable(folder: Path, name: str, url: str) -> None:
    """Without a published md5, the next best check: the dataset (each sub-collection) loads."""
    folders = sorted(p for p in folder.iterdir() if p.is_dir()) if name in NESTED else [folder]
    for dataset in folders:
        splits = sorted(p.stem for p in (dataset / "qrels").glob("*.tsv"))
        if not splits:
            problem = f"{dataset.name} has no qrels/*.tsv, so it is not a BEIR dataset"
            raise DatasetDownloadError(f"{url}: {problem}")
        try:
            load_beir(dataset, "test" if "test" in splits else splits[0])
        except (OSError, ValueError) as err:
            raise DatasetDownloadError(f"{url}: the downloaded dataset does not load: {err}") from None
