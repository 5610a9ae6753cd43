"""Every stage at MS MARCO's size: wall time and peak RSS of the real CLI commands on synthetic data.

Generates MS MARCO-shaped data (see ``benchmarks/scale_data.py``: passage and query lengths drawn like the
real ones, Zipf-like words, a Hofstätter Margin-MSE pairs file, tiny models built offline), then runs each
stage as the user would, ``python -m retrodistill …`` in its own process, and records its wall time and peak
RSS (``os.wait4``'s ``ru_maxrss``: the same figure as ``/usr/bin/time -v``'s "Maximum resident set size").
A stage that fails or runs past ``--timeout`` is recorded as FAIL with the tail of its log; the others
still run. Results are merged by (stage, size) into ``--report`` (Markdown) and the JSON file beside it,
so runs at several sizes build one table; each row gives the load average before and after it.

Stages (``--stages``, in this order):

=============  ==========================================================================================
load           load the collection (``load_beir``) in a fresh process, collection cache cleared first
load-again     the same a second time (the cache is warm): target ≤ 10 s and ≤ 1 GB
import         ``import-scores --format hofstaetter-tsv`` of the pairs file: target ≤ 4 GB, ≤ 600 s
train          ``train-student`` with the tiny student, ``--max-steps 5``, 1+7 documents: target ≤ 5 GB,
               ≤ 180 s (the issue asks for the first step within 3 min)
score          ``score-teacher`` over ``triples.tsv`` (``--score-pairs`` lines) with a ``constant`` teacher
               (``benchmarks/constant_teacher.py`` registers it and runs the CLI): the data path alone,
               target ≥ 20,000 pairs/s, ≤ 4 GB
score-ce       the same with the tiny cross-encoder (model-bound; only when named in ``--stages``)
evaluate       ``evaluate --dataset … --split dev`` of the tiny student: target ≤ embeddings + 3 GB
evaluate-kill  the same command killed with SIGKILL after ``--kill-after`` seconds, then run again: the
               re-run must keep every shard the killed run finished (same files, untouched) and encode
               only the others; its wall and RSS are the re-run's
mine           ``mine-negatives --split dev --k 100`` (BM25 index built, then the dev queries retrieved)
=============  ==========================================================================================

Before ``evaluate`` and ``mine`` every cache but the collection cache is cleared, so the embeddings and
the BM25 index are built, not reused. Run from the repository root, niced, one size at a time::

    nice python benchmarks/scale.py --passages 100k --queries 10k --pairs 1M
    nice python benchmarks/scale.py --passages 8.8M --queries 500k --pairs 40M --stages load,load-again,import
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_data import DataSpec, Generator, approx, parse_count  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STAGES = ("load", "load-again", "import", "train", "score", "score-ce", "evaluate", "evaluate-kill", "mine")
#: Run unless --stages says otherwise (score-ce, the tiny cross-encoder, is model-bound and slow).
DEFAULT_STAGES = tuple(s for s in STAGES if s != "score-ce")
GB = 1024**3
LOAD_SNIPPET = (
    "import sys, time\n"
    "from retrodistill.data.collections import load_beir\n"
    "start = time.perf_counter()\n"
    "c = load_beir(sys.argv[1], 'train')\n"
    "print(f'{len(c.corpus):,} passages, {len(c.queries):,} queries in {time.perf_counter() - start:.1f} s')\n"
)


@dataclass
class Result:
    """One stage at one size."""

    stage: str
    size: str
    passages: int
    queries: int
    pairs: int
    command: str
    ok: bool = False
    status: str = ""
    wall_s: float = 0.0
    peak_rss_gb: float = 0.0
    target: str = ""
    rate: str = ""
    load_before: float = 0.0
    load_after: float = 0.0
    log: str = ""
    tail: str = ""
    when: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=parse_count, default=parse_count("100k"))
    parser.add_argument("--queries", type=parse_count, default=None, help="train queries (default passages/17.6)")
    parser.add_argument("--pairs", type=parse_count, default=None, help="pairs-file lines (default 80 per query)")
    parser.add_argument("--dev-queries", type=parse_count, default=1000, help="queries of evaluate and mine")
    parser.add_argument("--score-pairs", type=parse_count, default=parse_count("1M"), help="triples scored")
    parser.add_argument("--vocab", type=parse_count, default=parse_count("1M"), help="distinct words")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/retrodistill-scale"))
    parser.add_argument("--stages", default=",".join(DEFAULT_STAGES), help=f"comma-separated, from {','.join(STAGES)}")
    parser.add_argument("--report", type=Path, default=REPO / "benchmarks" / "scale.md")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per stage")
    parser.add_argument("--kill-after", type=float, default=60.0, help="seconds before evaluate-kill's SIGKILL")
    parser.add_argument("--generate-only", action="store_true")
    args = parser.parse_args(argv)
    # MS MARCO's proportions: 8.8M passages, ~500k training queries, ~40M scored pairs.
    args.queries = args.queries or max(10, round(args.passages / 17.6))
    args.pairs = args.pairs or 80 * args.queries
    unknown = set(args.stages.split(",")) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
    return args


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def measure(argv: list[str], env: dict[str, str], log_path: Path, timeout: float) -> tuple[int | None, float, float]:
    """Run ``argv`` under ``/usr/bin/time``; return (exit status or None on timeout, wall s, peak RSS GB).

    ``/usr/bin/time`` is the parent of the measured process: a child forked straight from this (large)
    process would inherit its peak RSS in ``ru_maxrss``. A stage killed at the timeout has no figure from
    ``time``; its peak RSS is then the largest seen by sampling its processes every half second.
    """
    import psutil

    time_file = log_path.with_suffix(".time")
    time_file.unlink(missing_ok=True)
    start = time.monotonic()
    sampled = 0
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            ["/usr/bin/time", "-f", "%e %M", "-o", str(time_file), *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        while proc.poll() is None:
            if time.monotonic() - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return None, time.monotonic() - start, sampled / GB
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
                sampled = max([sampled, *(c.memory_info().rss for c in children)])
            except psutil.Error:
                pass
            time.sleep(0.5)
    wall = time.monotonic() - start
    last = time_file.read_text().strip().splitlines()[-1].split() if time_file.is_file() else []
    rss = int(last[1]) * 1024 if len(last) == 2 else sampled  # %M is in KiB
    return proc.returncode, wall, max(rss, sampled) / GB


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.spec = DataSpec(
            passages=args.passages,
            queries=args.queries,
            pairs=args.pairs,
            dev_queries=args.dev_queries,
            score_pairs=min(args.score_pairs, args.pairs),
            vocab=args.vocab,
            seed=args.seed,
        )
        self.work = Path(args.work)
        self.size = f"{approx(args.passages)} passages / {approx(args.queries)} queries / {approx(args.pairs)} pairs"
        self.cache = self.work / "cache" / self.spec.label
        self.runs = self.work / "runs" / self.spec.label
        self.logs = self.work / "logs" / self.spec.label
        self.env = {
            **os.environ,
            "RETRODISTILL_CACHE": str(self.cache),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        }
        self.paths: dict[str, Path] = {}

    def generate(self) -> dict[str, Any]:
        log(f"generating {self.spec.label} into {self.work / 'data'}")
        generator = Generator(self.spec, self.work / "data", log=log)
        start = time.perf_counter()
        self.paths = generator.generate()
        sizes = {name: round(p.stat().st_size / GB, 3) for name, p in self.paths.items() if p.is_file()}
        return {"wall_s": round(time.perf_counter() - start, 1), "steps_s": generator.timings, "sizes_gb": sizes}

    def command(self, stage: str) -> tuple[list[str], str, str]:
        """The argv of ``stage``, its target (text) and what to report as its rate."""
        p, runs, cli = self.paths, self.runs, [sys.executable, "-m", "retrodistill"]
        data = str(p["dataset"])
        if stage in ("load", "load-again"):
            target = "" if stage == "load" else "≤ 10 s, ≤ 1 GB"
            return [sys.executable, "-c", LOAD_SNIPPET, data], target, ""
        if stage == "import":
            argv = [*cli, "import-scores", str(p["pairs"]), "--format", "hofstaetter-tsv", "--dataset", data]
            argv += ["--split", "train", "--model", "synthetic", "--out", str(runs / "store"), "--overwrite"]
            return argv, "≤ 600 s, ≤ 4 GB", f"{self.spec.pairs:,} lines"
        if stage == "train":
            argv = [*cli, "train-student", "--store", str(runs / "store"), "--student", str(p["student"])]
            argv += ["--dataset", data, "--split", "train", "--out", str(runs / "student"), "--max-steps", "5"]
            argv += ["--batch-size", "32", "--negatives", "7"]
            return argv, "≤ 180 s, ≤ 5 GB", "5 steps × 32 × (1+7)"
        if stage in ("score", "score-ce"):
            argv = ["score-teacher", "--triples", str(p["triples"]), "--dataset", data, "--split", "train"]
            argv += ["--out", str(runs / stage)]
            if stage == "score":
                # The library registers no constant teacher: a wrapper adds one and runs the same CLI.
                wrapper = [sys.executable, str(Path(__file__).with_name("constant_teacher.py"))]
                argv += ["--teacher", "constant", "--model", "constant"]
                return [*wrapper, *argv], "≥ 20,000 pairs/s, ≤ 4 GB", "pairs"
            argv += ["--teacher", "cross-encoder", "--model", str(p["cross_encoder"]), "--max-length", "128"]
            return [*cli, *argv, "--batch-size", "128"], "≤ 4 GB", "pairs"
        if stage in ("evaluate", "evaluate-kill"):
            argv = [*cli, "evaluate", "--dataset", data, "--split", "dev", "--model", str(p["student"])]
            argv += ["--k", "100", "--batch-size", "256", "--out", str(runs / "eval")]
            embeddings = self.spec.passages * 32 * 4 / GB
            return argv, f"≤ {embeddings + 3:.2f} GB (embeddings {embeddings:.2f} GB + 3)", ""
        if stage == "mine":
            argv = [*cli, "mine-negatives", "--dataset", data, "--split", "dev", "--k", "100"]
            return [*argv, "--out", str(runs / "candidates")], "", f"{self.spec.dev_queries:,} queries"
        raise ValueError(stage)

    def prepare(self, stage: str) -> None:
        """Start each stage from scratch: its outputs removed, caches cleared where the stage builds one."""
        outputs = {
            "import": ["store", "store-candidates"],
            "train": ["student"],
            "score": ["score"],
            "score-ce": ["score-ce"],
            "evaluate": ["eval"],
            "evaluate-kill": ["eval"],
            "mine": ["candidates"],
        }
        for name in outputs.get(stage, []):
            shutil.rmtree(self.runs / name, ignore_errors=True)
        if stage == "load":
            shutil.rmtree(self.cache / "collections", ignore_errors=True)
        if stage in ("evaluate", "evaluate-kill", "mine") and self.cache.is_dir():
            for entry in self.cache.iterdir():
                if entry.name != "collections":
                    shutil.rmtree(entry, ignore_errors=True)

    def run(self, stage: str) -> Result:
        argv, target, rate = self.command(stage)
        self.prepare(stage)
        self.runs.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{stage}.log"
        shown = " ".join("python" if a == sys.executable else a for a in argv)
        result = Result(stage, self.size, self.spec.passages, self.spec.queries, self.spec.pairs, shown)
        result.target, result.log = target, str(log_path)
        result.load_before = round(os.getloadavg()[0], 2)
        log(f"{stage}: {shown if stage not in ('load', 'load-again') else 'load_beir ' + argv[-1]}")
        killed: dict[str, float] = {}
        if stage == "evaluate-kill":
            measure(argv, self.env, log_path.with_suffix(".killed.log"), self.args.kill_after)
            killed = self.finished_shards()
            log(f"{stage}: killed after {self.args.kill_after:.0f} s with {len(killed)} shard(s) done; running again")
        code, wall, rss = measure(argv, self.env, log_path, self.args.timeout)
        result.load_after = round(os.getloadavg()[0], 2)
        result.wall_s, result.peak_rss_gb = round(wall, 1), round(rss, 2)
        text = log_path.read_text(errors="replace")
        if code is None:
            result.status = f"FAIL: killed after {self.args.timeout:.0f} s"
        elif code != 0:
            result.status = f"FAIL: exit {code}"
        else:
            missed = missed_targets(stage, wall, rss, self.spec)
            result.ok = not missed
            result.status = "OK" if not missed else "FAIL: " + "; ".join(missed)
        if stage == "evaluate-kill" and code == 0:
            resumed = self.resume_check(killed)
            result.rate = resumed
            if "FAIL" in resumed:
                result.ok, result.status = False, resumed
        # Only a crash or a kill needs its log; a missed target is in the status.
        result.tail = text[-800:] if code != 0 else ""
        if stage != "evaluate-kill":
            result.rate = rate_text(stage, rate, wall, self.spec, text) if code == 0 else ""
        log(f"{stage}: {result.status}, {result.wall_s} s, {result.peak_rss_gb} GB peak RSS")
        return result

    def finished_shards(self) -> dict[str, float]:
        """Each finished corpus-embedding shard (its ``.json`` entry, written last) and its ``.npy``'s mtime."""
        return {
            str(entry): entry.with_suffix(".npy").stat().st_mtime
            for entry in sorted((self.cache / "embeddings").glob("*/shards/*.json"))
        }

    def resume_check(self, killed: dict[str, float]) -> str:
        """Whether the re-run kept every shard the killed run finished and encoded only the others."""
        after = self.finished_shards()
        kept = [name for name, mtime in killed.items() if after.get(name) == mtime]
        encoded = len(after) - len(kept)
        text = f"killed with {len(killed)}/{len(after)} shards done; re-run kept {len(kept)}, encoded {encoded}"
        if not killed or len(kept) != len(killed) or encoded != len(after) - len(killed):
            return "FAIL: " + text + (" (kill earlier or later: no shard was done)" if not killed else "")
        return text


def missed_targets(stage: str, wall: float, rss_gb: float, spec: DataSpec) -> list[str]:
    """The issue's targets this run missed (they are for 8.8M passages; smaller sizes must meet them too)."""
    limits: dict[str, tuple[float | None, float | None]] = {
        "load-again": (10, 1),
        "import": (600, 4),
        "train": (180, 5),
        "score": (None, 4),
        "score-ce": (None, 4),
        "evaluate": (None, spec.passages * 32 * 4 / GB + 3),
        "evaluate-kill": (None, spec.passages * 32 * 4 / GB + 3),
    }
    max_wall, max_rss = limits.get(stage, (None, None))
    missed = []
    if max_wall is not None and wall > max_wall:
        missed.append(f"wall {wall:.0f} s > {max_wall:.0f} s")
    if max_rss is not None and rss_gb > max_rss:
        missed.append(f"RSS {rss_gb:.2f} GB > {max_rss:.2f} GB")
    return missed


def rate_text(stage: str, rate: str, wall: float, spec: DataSpec, log_text: str) -> str:
    if stage == "import":
        return f"{spec.pairs / wall:,.0f} lines/s"
    if stage in ("score", "score-ce"):
        scored = re.findall(r"([\d,]+)\s+scored\s+pairs", log_text)
        if not scored:
            return ""
        n = int(scored[-1].replace(",", ""))
        return f"{n:,} pairs, {n / wall:,.0f} pairs/s (whole command)"
    if stage == "mine":
        built = re.findall(r"BM25 index: [\d,]+ documents, ([\d,]+) terms in ([\d.]+) s", log_text)
        found = re.findall(r"BM25 retrieval: ([\d,]+) of [\d,]+ queries in ([\d.]+) s", log_text)
        parts = [f"index {built[-1][1]} s ({built[-1][0]} terms)"] if built else []
        if found:
            n, took = int(found[-1][0].replace(",", "")), float(found[-1][1])
            parts.append(f"{n:,} queries in {took:.1f} s ({n / max(took, 1e-9):.1f}/s)")
        return "; ".join(parts) or f"{spec.dev_queries / wall:,.1f} queries/s (whole command)"
    return rate


def write_report(report: Path, results: list[Result], generation: dict[str, Any] | None, spec: DataSpec) -> None:
    """Merge ``results`` into the JSON beside ``report`` and rewrite the Markdown table from all of it."""
    json_path = report.with_suffix(".json")
    data: dict[str, Any] = {"results": [], "generation": {}}
    if json_path.is_file():
        data = json.loads(json_path.read_text())
    fresh = {(r.stage, r.size) for r in results}
    kept = [r for r in data["results"] if (r["stage"], r["size"]) not in fresh]
    data["results"] = kept + [asdict(r) for r in results]
    data["results"].sort(key=lambda r: (r["passages"], r["queries"], r["pairs"], STAGES.index(r["stage"])))
    if generation is not None and (generation["steps_s"] or spec.label not in data["generation"]):
        # A run that found every file already there keeps the figures of the run that wrote them.
        data["generation"][spec.label] = {"spec": asdict(spec), **generation}
    json_path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    lines = [
        "# Scale benchmark: every stage on MS MARCO-shaped synthetic data",
        "",
        "Written by `benchmarks/scale.py` (see its docstring for what each stage runs); figures are from this",
        f"project's machine (2 shared cores, 24 GB). Raw figures and stage logs: `{json_path.name}`.",
        "Targets are the issue's, stated for 8.8M passages / 500k queries / 40M pairs; smaller sizes must meet",
        "them too. Load is the 1-minute load average before → after the stage.",
        "",
        "| stage | size | wall | peak RSS | rate | target | result | load | when |",
        "|---|---|---:|---:|---|---|---|---|---|",
    ]
    for r in data["results"]:
        status = r["status"].replace("|", "/")
        lines.append(
            f"| {r['stage']} | {r['size']} | {r['wall_s']:.1f} s | {r['peak_rss_gb']:.2f} GB | {r['rate']} | "
            f"{r['target']} | {status} | {r['load_before']} → {r['load_after']} | {r['when']} |"
        )
    failures = [r for r in data["results"] if r["tail"]]
    if failures:
        lines += ["", "## Failures (last lines of each log)", ""]
        for r in failures:
            lines += [f"### {r['stage']} at {r['size']}", "", "```", r["tail"].strip(), "```", ""]
    if data["generation"]:
        lines += ["", "## Data generation", "", "| data | wall | steps (s) | sizes (GB) |", "|---|---:|---|---|"]
        for label, g in sorted(data["generation"].items()):
            lines.append(f"| {label} | {g['wall_s']} s | {g['steps_s']} | {g['sizes_gb']} |")
    report.write_text("\n".join(lines).rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness = Harness(args)
    log(f"load average {os.getloadavg()[0]:.2f}; work dir {args.work}")
    generation = harness.generate()
    if args.generate_only:
        write_report(args.report, [], generation, harness.spec)
        return 0
    results = []
    for stage in [s for s in STAGES if s in args.stages.split(",")]:
        results.append(harness.run(stage))
        write_report(args.report, results, generation, harness.spec)
    log(f"report: {args.report}; load average {os.getloadavg()[0]:.2f}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
