"""The registered evaluation datasets as data: where each comes from, its splits, rules and citation.

Split out of :mod:`retrodistill.data.registry`, which builds :data:`~retrodistill.data.registry.DATASETS`
from :func:`build_datasets` and turns a name into loaded collections; the two evaluation rules a
:class:`DatasetSpec` carries (``ignore_identical_ids``, ``rel_threshold``) are explained there.

Held here: :class:`RemoteFile` and :class:`DatasetSpec`; the BEIR table (splits, homepage, original
paper, note; from BEIR's README, beir-cellar/beir), the two TREC DL passage years (official qrels
and topics with ir_datasets' md5s), MS MARCO dev small; :data:`KNOWN_CORPORA`, the corpus
fingerprints by which a folder is recognised as a registered dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrodistill.data.download import BEIR_MD5, BEIR_NOT_HOSTED, BEIR_REBUILD, BEIR_URL

BEIR_CITATION = "Thakur et al., BEIR: A Heterogeneous Benchmark for Zero-shot Evaluation of IR Models, NeurIPS 2021"
#: CQADupStack's forums, one sub-folder each in BEIR's cqadupstack.zip.
CQADUPSTACK_FORUMS = tuple(
    "android english gaming gis mathematica physics programmers stats tex unix webmasters wordpress".split()
)
_MSMARCO_URL = "https://msmarco.z22.web.core.windows.net/msmarcoranking"


@dataclass(frozen=True)
class RemoteFile:
    """One file a dataset is built from, and where it is published.

    ``md5`` is the checksum its publisher (or, for TREC DL, ir_datasets' ``downloads.json``) lists,
    None where none is published. ``file`` is the local file name; ``aliases`` are other names a
    local copy may have (e.g. Anserini's ``qrels.dl19-passage.txt``).
    """

    role: str  # "archive" (a BEIR zip), "qrels" or "topics"
    url: str
    md5: str | None
    file: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """A registered evaluation dataset (the two rules are explained in :mod:`retrodistill.data.registry`).

    ``folder`` is the ``DATA_DIR`` sub-folder holding its BEIR-layout data (for TREC DL: the corpus).
    ``split_rel_thresholds`` overrides ``rel_threshold`` for single splits. ``hosted`` is False for
    data that may not be redistributed: it loads from a local folder only.
    """

    name: str
    kind: str  # "beir" (a BEIR-layout folder, or a group of them) or "trec-dl"
    folder: str
    splits: tuple[str, ...]
    default_split: str
    downloads: tuple[RemoteFile, ...] = ()
    ignore_identical_ids: bool = False
    rel_threshold: int = 1
    split_rel_thresholds: tuple[tuple[str, int], ...] = ()
    members: tuple[str, ...] = ()
    hosted: bool = True
    note: str = ""
    citation: str = ""
    source: str = ""

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(f.url for f in self.downloads)

    @property
    def md5s(self) -> dict[str, str | None]:
        """Checksum by URL (None where none is published)."""
        return {f.url: f.md5 for f in self.downloads}

    def threshold_for(self, split: str) -> int:
        return dict(self.split_rel_thresholds).get(split, self.rel_threshold)


_MSMARCO_TERMS = "MS MARCO terms: non-commercial research"
_SAME_ID_NOTE = "queries are corpus documents: a retrieved document with the query's id is dropped"

#: The BEIR datasets: name -> (splits, homepage, original paper, note). Homepages and splits are
#: BEIR's README table (beir-cellar/beir); BEIR itself is cited for every entry.
_BEIR_TABLE: dict[str, tuple[str, str, str, str]] = {
    "msmarco": (
        "train dev test",
        "https://microsoft.github.io/msmarco/",
        "Bajaj et al., MS MARCO, arXiv:1611.09268",
        f"dev = passage dev small (6,980 queries); test = TREC DL 2019 (43 queries, binary at >= 2). {_MSMARCO_TERMS}",
    ),
    "trec-covid": ("test", "https://ir.nist.gov/covidSubmit/index.html", "Voorhees et al., SIGIR Forum 2020", ""),
    "nfcorpus": (
        "train dev test",
        "https://www.cl.uni-heidelberg.de/statnlpgroup/nfcorpus/",
        "Boteva et al., ECIR 2016",
        "",
    ),
    "bioasq": ("train test", "http://bioasq.org", "Tsatsaronis et al., BMC Bioinformatics 2015", ""),
    "nq": ("test", "https://ai.google.com/research/NaturalQuestions", "Kwiatkowski et al., TACL 2019", ""),
    "hotpotqa": ("train dev test", "https://hotpotqa.github.io", "Yang et al., EMNLP 2018", ""),
    "fiqa": ("train dev test", "https://sites.google.com/view/fiqa/", "Maia et al., WWW 2018 Companion", ""),
    "signal1m": (
        "test",
        "https://research.signal-ai.com/datasets/signal1m-tweetir.html",
        "Suarez et al., ECIR 2018",
        "",
    ),
    "trec-news": ("test", "https://trec.nist.gov/data/news2019.html", "Soboroff et al., TREC 2019 News Track", ""),
    "robust04": ("test", "https://trec.nist.gov/data/robust/04.guidelines.html", "Voorhees, TREC 2004 Robust", ""),
    "arguana": ("test", "http://argumentation.bplaced.net/arguana/data", "Wachsmuth et al., ACL 2018", _SAME_ID_NOTE),
    "webis-touche2020": (
        "test",
        "https://webis.de/events/touche-20/shared-task-1.html",
        "Bondarenko et al., CLEF 2020",
        "BEIR's current zip: Touché v2 judgments",
    ),
    "cqadupstack": (
        "test",
        "http://nlp.cis.unimelb.edu.au/resources/cqadupstack/",
        "Hoogeveen et al., ADCS 2015",
        "12 forums, reported as one row: the unweighted mean over forums (BEIR)",
    ),
    "quora": (
        "dev test",
        "https://www.quora.com/q/quoradata/First-Quora-Dataset-Release-Question-Pairs",
        "Iyer et al., First Quora Dataset Release, 2017",
        _SAME_ID_NOTE,
    ),
    "dbpedia-entity": ("dev test", "https://github.com/iai-group/DBpedia-Entity/", "Hasibi et al., SIGIR 2017", ""),
    "scidocs": ("test", "https://allenai.org/data/scidocs", "Cohan et al., ACL 2020", ""),
    "fever": ("train dev test", "http://fever.ai", "Thorne et al., NAACL 2018", ""),
    "climate-fever": ("test", "http://climatefever.ai", "Diggelmann et al., arXiv:2012.00614", ""),
    "scifact": ("train test", "https://github.com/allenai/scifact", "Wadden et al., EMNLP 2020", ""),
}
_IDENTICAL_IDS_DROPPED = ("arguana", "quora")

#: Registered datasets recognised when given as a folder, by the sha256 of their ``corpus.jsonl``
#: (``Collection.fingerprints["corpus"]``), so a folder gets its dataset's rules whatever it is called.
#: Only checksums verified against the official BEIR zip belong here; add ArguAna's and Quora's
#: (``sha256sum corpus.jsonl`` of the unzipped official files) when they can be checked. Until then a
#: folder of theirs is caught by the identical-id warning of
#: :func:`~retrodistill.data.dataset_rules.check_entry` instead.
KNOWN_CORPORA: dict[str, str] = {
    # BEIR scifact.zip's corpus.jsonl (../shared/data/beir/scifact/PROVENANCE.md)
    "sha256:dec31c8182f3d744c7d2c09423756fd1d17cbef75808db13ba01cc0aab4d1ac6": "scifact",
}
_BEIR_ZIP = {
    name: RemoteFile("archive", BEIR_URL.format(name=name), md5, f"{name}.zip") for name, md5 in BEIR_MD5.items()
}


def _beir(name: str) -> DatasetSpec:
    splits, source, citation, note = _BEIR_TABLE[name]
    hosted = name not in BEIR_NOT_HOSTED
    return DatasetSpec(
        name=name,
        kind="beir",
        folder=name,
        splits=tuple(splits.split()),
        default_split="dev" if name == "msmarco" else "test",  # BEIR reports MS MARCO on dev
        downloads=(_BEIR_ZIP[name],) if hosted else (),
        ignore_identical_ids=name in _IDENTICAL_IDS_DROPPED,
        split_rel_thresholds=(("test", 2),) if name == "msmarco" else (),
        members=CQADUPSTACK_FORUMS if name == "cqadupstack" else (),
        hosted=hosted,
        note=note if hosted else f"not redistributable; to obtain it: {BEIR_REBUILD[name]}",
        citation=f"{citation}; {BEIR_CITATION}",
        source=source,
    )


def _trec_dl(year: int) -> DatasetSpec:
    """TREC DL passage; md5s as listed in ir_datasets' downloads.json (msmarco-passage/trec-dl-YEAR)."""
    yy = str(year)[2:]
    qrels_md5 = {2019: "2f4be390198da108f6845c822e5ada14", 2020: "0355ccee7509ac0463e8278186cdd8d1"}[year]
    topics_md5 = {2019: "eda71eccbe4d251af83150abe065368c", 2020: "00a406fb0d14ed3752d70d1e4eb98600"}[year]
    topics = f"msmarco-test{year}-queries.tsv"
    files = (
        _BEIR_ZIP["msmarco"],
        RemoteFile(
            "qrels",
            f"https://trec.nist.gov/data/deep/{year}qrels-pass.txt",
            qrels_md5,
            f"{year}qrels-pass.txt",
            (f"qrels.dl{yy}-passage.txt",),
        ),
        RemoteFile(
            "topics",
            f"{_MSMARCO_URL}/{topics}.gz",
            topics_md5,
            f"{topics}.gz",
            (topics, f"topics.dl{yy}-passage.txt", f"topics.dl{yy}.txt"),
        ),
    )
    overview = {2019: "arXiv:2003.07820", 2020: "arXiv:2102.07662"}[year]
    return DatasetSpec(
        name=f"trec-dl-{year}",
        kind="trec-dl",
        folder="msmarco",
        splits=("test",),
        default_split="test",
        downloads=files,
        rel_threshold=2,
        note=f"passage task: MS MARCO corpus, NIST graded qrels (0-3), judged queries only. {_MSMARCO_TERMS}",
        citation=f"Craswell et al., Overview of the TREC {year} Deep Learning Track, {overview}",
        source=f"https://trec.nist.gov/data/deep{year}.html",
    )


def build_datasets() -> dict[str, DatasetSpec]:
    """Every registered dataset by name: the 18 BEIR datasets, msmarco, msmarco-dev-small and TREC DL."""
    dev_small = DatasetSpec(
        name="msmarco-dev-small",
        kind="beir",
        folder="msmarco",
        splits=("dev",),
        default_split="dev",
        downloads=(_BEIR_ZIP["msmarco"],),
        note=f"MS MARCO passage dev small (6,980 queries): the BEIR msmarco folder's dev split. {_MSMARCO_TERMS}",
        citation="Bajaj et al., MS MARCO, arXiv:1611.09268",
        source="https://microsoft.github.io/msmarco/",
    )
    specs = [*(_beir(name) for name in _BEIR_TABLE), dev_small, _trec_dl(2019), _trec_dl(2020)]
    return {spec.name: spec for spec in specs}


__all__ = [
    "BEIR_CITATION",
    "CQADUPSTACK_FORUMS",
    "KNOWN_CORPORA",
    "DatasetSpec",
    "RemoteFile",
    "build_datasets",
]
