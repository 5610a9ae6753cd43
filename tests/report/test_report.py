from __future__ import annotations

import base64
import html
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from retrodistill.cli.report import report
from retrodistill.evaluate.output_names import slug
from retrodistill.report import build_report, read_train_log
from retrodistill.report.plots import training_series

BASELINE = "bm25s"
DENSE = "sentence-transformers/all-MiniLM-L6-v2"
DATASETS = {"scifact": 30, "cqadupstack/android": 24}
MEASURES = ["nDCG@10", "RR@10", "R@100"]
# The dense model's per-query shift against the baseline: better on scifact, worse on android.
SHIFTS = {"scifact": [-0.25, 0.0, 0.25, 0.25, 0.5], "cqadupstack/android": [-0.5, -0.25, -0.25, 0.0, 0.25]}
# (dataset, measure) pairs whose test the fixture records as significant.
SIGNIFICANT = {("scifact", "nDCG@10"), ("cqadupstack/android", "RR@10")}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_results(root: Path, dense: str = DENSE, baseline: str | None = BASELINE) -> dict[str, Any]:
    """Write an evaluation folder as `retrodistill evaluate` does; return what the test needs to check it."""
    rng = random.Random(0)
    models = [BASELINE, dense]
    per_query: dict[str, dict[str, dict[str, dict[str, float]]]] = {m: {} for m in models}
    for dataset, n in DATASETS.items():
        prefix = "android/" if dataset.startswith("cqadupstack") else ""
        base = {
            f"{prefix}{q}": {ms: rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]) for ms in MEASURES} for q in range(1, n + 1)
        }
        per_query[BASELINE][dataset] = base
        per_query[dense][dataset] = {
            qid: {ms: min(1.0, max(0.0, v + rng.choice(SHIFTS[dataset]))) for ms, v in row.items()}
            for qid, row in base.items()
        }
    results: dict[str, dict[str, dict[str, float]]] = {}
    paths: dict[str, dict[str, str]] = {}
    for model in models:
        results[model], paths[model] = {}, {}
        for dataset, rows in per_query[model].items():
            aggregate = {ms: sum(r[ms] for r in rows.values()) / len(rows) for ms in MEASURES}
            results[model][dataset] = aggregate
            rel = f"runs/{slug(model)}/{slug(dataset)}/metrics.json"
            paths[model][dataset] = rel
            (root / rel).parent.mkdir(parents=True)
            metrics = {"dataset": dataset, "split": "test", "model": model, "aggregate": aggregate, "per_query": rows}
            (root / rel).write_text(json.dumps(metrics))
        results[model]["mean"] = {ms: sum(results[model][d][ms] for d in DATASETS) / len(DATASETS) for ms in MEASURES}
    significance = []
    for dataset in DATASETS:
        for ms in MEASURES:
            mean, base_mean = results[dense][dataset][ms], results[BASELINE][dataset][ms]
            significant = (dataset, ms) in SIGNIFICANT
            diff = mean - base_mean
            significance.append(
                {
                    "model": dense,
                    "baseline": BASELINE,
                    "dataset": dataset,
                    "measure": ms,
                    "mean": mean,
                    "baseline_mean": base_mean,
                    "mean_diff": diff,
                    "num_queries": DATASETS[dataset],
                    "p_ttest": 0.001 if significant else 0.4,
                    "p_randomization": 0.002 if significant else 0.41,
                    "p_ttest_holm": 0.002 if significant else 0.8,
                    "p_randomization_holm": 0.004 if significant else 0.82,
                    "significant": significant,
                    "alpha": 0.05,
                    "mark": ("▲" if diff > 0 else "▼") if significant else "",
                }
            )
    assert results[dense]["scifact"]["nDCG@10"] > results[BASELINE]["scifact"]["nDCG@10"]
    assert results[dense]["cqadupstack/android"]["RR@10"] < results[BASELINE]["cqadupstack/android"]["RR@10"]
    data = {
        "measures": MEASURES,
        "baseline": baseline,
        "rules": "Documents whose id equals the query id are kept; relevant means grade >= 1.",
        "models": {
            BASELINE: {"id": "bm25s", "revision": None, "kind": "bm25s", "rerank": None, "slug": slug(BASELINE)},
            dense: {
                "id": DENSE,
                "revision": "1110a243e0a2e0d4b6d3d3f0b29a6d4ab3b6d8c1",
                "kind": "dense",
                "rerank": None,
                "slug": slug(dense),
            },
        },
        "datasets": {
            name: {
                "split": "test",
                "queries": n,
                "documents": 1000 + n,
                "ignore_identical_ids": False,
                "rel_threshold": 1,
                "members": None,
                "note": "",
            }
            for name, n in DATASETS.items()
        },
        "results": results,
        "per_query": paths,
        "significance": significance,
        "wall_time_s": 12.5,
    }
    (root / "results.json").write_text(json.dumps(data, indent=2))
    manifest = {
        "stage": "evaluate",
        "created": "2026-01-02T03:04:05+00:00",
        "config": {"alpha": 0.05, "permutations": 10000, "seed": 0},
        "versions": {"retrodistill": "0.1.0", "torch": "2.5.1", "ir-measures": "0.3.7"},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return {"data": data, "per_query": per_query, "dense": dense}


def make_train_log(path: Path) -> Path:
    log: list[dict[str, Any]] = [
        {"loss": 2.0 / (1 + s / 10), "loss_margin_mse": 1.5 / (1 + s / 10), "learning_rate": 5e-4, "step": s}
        for s in range(10, 110, 10)
    ]
    log.insert(5, {"eval_loss": 0.9, "eval_nDCG@10": 0.41, "eval_runtime": 3.2, "epoch": 1.0, "step": 50})
    log.append({"train_runtime": 40.0, "train_loss": 1.1, "epoch": 2.0, "step": 100})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(log))
    return path


def cell(page: str, model: str, dataset: str, measure: str) -> str:
    """The text inside the results-table cell of (model, dataset, measure), tags stripped."""
    pattern = (
        rf'<td[^>]*data-model="{re.escape(html.escape(model))}" data-dataset="{re.escape(html.escape(dataset))}" '
        rf'data-measure="{re.escape(measure)}">(.*?)</td>'
    )
    found = re.findall(pattern, page)
    assert len(found) == 1, (model, dataset, measure, len(found))
    return re.sub(r"<[^>]+>", "", found[0]).strip()


@pytest.fixture()
def results_dir(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    root = tmp_path / "eval"
    root.mkdir()
    return root, make_results(root)


def test_report_is_self_contained_and_embeds_every_png(results_dir: tuple[Path, dict[str, Any]], tmp_path: Path):
    root, _ = results_dir
    log = make_train_log(tmp_path / "student" / "train_log.json")
    page_path = build_report(root, train_logs=[log])

    assert page_path == root / "report" / "report.html"
    page = page_path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()
    pngs = sorted(page_path.parent.glob("*.png"))
    # the measure figure, (models - 1) x datasets per-query figures, the training curves
    assert len(pngs) == 1 + (2 - 1) * len(DATASETS) + 1
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(pngs)
    files = {p.read_bytes() for p in pngs}
    assert {base64.b64decode(e) for e in embedded} == files
    import matplotlib.image

    for png in pngs:
        assert png.read_bytes().startswith(PNG_SIGNATURE)
        height, width, _ = matplotlib.image.imread(png).shape
        assert height > 200 and width > 400, png.name
        # The same figure as vector files for a paper: SVG text and a one-page PDF.
        svg = png.with_suffix(".svg").read_text(encoding="utf-8")
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
        pdf = png.with_suffix(".pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")


def test_vector_figures_are_deterministic(results_dir: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = results_dir
    first = build_report(root, out_dir=tmp_path / "a").parent
    second = build_report(root, out_dir=tmp_path / "b").parent
    vectors = sorted(p.name for p in first.glob("*") if p.suffix in (".svg", ".pdf"))
    assert len(vectors) == 2 * len(list(first.glob("*.png")))
    for name in vectors:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_table_holds_every_value_and_the_mean_row(results_dir: tuple[Path, dict[str, Any]]) -> None:
    root, fixture = results_dir
    page = build_report(root).read_text(encoding="utf-8")
    results = fixture["data"]["results"]
    for name in [*fixture["data"]["models"], *DATASETS]:
        assert html.escape(name) in page
    for model in results:
        for dataset in [*DATASETS, "mean"]:
            for measure in MEASURES:
                text = cell(page, model, dataset, measure)
                assert text.split()[0] == f"{results[model][dataset][measure]:.4f}"
    # the manifest facts: revision, library versions, dataset rules
    assert fixture["data"]["models"][DENSE]["revision"] in page
    assert "2.5.1" in page and "ir-measures" in page and "2026-01-02T03:04:05+00:00" in page
    assert "grade ≥ 1" in page and "kept" in page


def test_marks_follow_significance(results_dir: tuple[Path, dict[str, Any]]) -> None:
    root, fixture = results_dir
    page = build_report(root).read_text(encoding="utf-8")
    results = fixture["data"]["results"]
    for model in results:
        for dataset in [*DATASETS, "mean"]:
            for measure in MEASURES:
                text = cell(page, model, dataset, measure)
                if model == DENSE and (dataset, measure) in SIGNIFICANT:
                    better = results[DENSE][dataset][measure] > results[BASELINE][dataset][measure]
                    assert text.endswith("▲" if better else "▼"), (dataset, measure, text)
                else:
                    assert "▲" not in text and "▼" not in text, (model, dataset, measure, text)
    legend = re.search(r'<p class="legend">(.*?)</p>', page, re.S)
    assert legend is not None
    for words in ("t-test", "randomization", "Holm", "α = 0.05", "10000"):
        assert words in legend.group(1)


def test_marks_without_the_mark_field_use_the_sign_of_the_difference(
    results_dir: tuple[Path, dict[str, Any]],
) -> None:
    root, _ = results_dir
    data = json.loads((root / "results.json").read_text())
    for entry in data["significance"]:
        del entry["mark"]
    (root / "results.json").write_text(json.dumps(data))
    page = build_report(root).read_text(encoding="utf-8")
    assert cell(page, DENSE, "scifact", "nDCG@10").endswith("▲")
    assert cell(page, DENSE, "cqadupstack/android", "RR@10").endswith("▼")
    assert not cell(page, DENSE, "scifact", "RR@10").endswith(("▲", "▼"))


def test_per_query_figures_and_their_counts(results_dir: tuple[Path, dict[str, Any]]) -> None:
    root, fixture = results_dir
    out = build_report(root, root / "elsewhere").parent
    expected = {f"per_query_{slug(DENSE)}_vs_{slug(BASELINE)}__{slug(d)}.png" for d in DATASETS}
    assert {p.name for p in out.glob("per_query_*.png")} == expected
    assert (out / "ndcg_per_dataset.png").is_file() and not (out / "training_curves.png").exists()
    page = (out / "report.html").read_text(encoding="utf-8")
    for dataset in DATASETS:
        ours, theirs = fixture["per_query"][DENSE][dataset], fixture["per_query"][BASELINE][dataset]
        diffs = [ours[q]["nDCG@10"] - theirs[q]["nDCG@10"] for q in ours]
        wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
        assert f"{wins} wins, {losses} losses, {len(diffs) - wins - losses} ties over {len(diffs)} queries" in page


def test_other_measure_names_its_figure(results_dir: tuple[Path, dict[str, Any]]) -> None:
    root, _ = results_dir
    out = build_report(root, measure="RR@10").parent
    assert (out / "rr_per_dataset.png").is_file() and not (out / "ndcg_per_dataset.png").exists()


def test_png_output_is_deterministic(results_dir: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = results_dir
    log = make_train_log(tmp_path / "run" / "train_log.json")
    first = build_report(root, tmp_path / "a", train_logs=[log]).parent
    second = build_report(root, tmp_path / "b", train_logs=[log]).parent
    names = sorted(p.name for p in first.glob("*.png"))
    assert names == sorted(p.name for p in second.glob("*.png")) and len(names) == 4
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_without_baseline_per_query_figures_are_skipped(tmp_path: Path) -> None:
    make_results(tmp_path, baseline=None)
    page_path = build_report(tmp_path)
    assert not list(page_path.parent.glob("per_query_*.png"))
    page = page_path.read_text(encoding="utf-8")
    assert "No baseline" in page and "▲" not in page and "▼" not in page


def test_baseline_override_compares_the_other_way_and_drops_marks(
    results_dir: tuple[Path, dict[str, Any]],
) -> None:
    root, _ = results_dir
    page_path = build_report(root, baseline=DENSE)
    names = {p.name for p in page_path.parent.glob("per_query_*.png")}
    assert names == {f"per_query_{slug(BASELINE)}_vs_{slug(DENSE)}__{slug(d)}.png" for d in DATASETS}
    page = page_path.read_text(encoding="utf-8")
    # results.json tested against bm25s only: no mark may claim a test against the new baseline
    assert "▲" not in page.split("<h2>Figures")[0].split("</table>")[0]
    assert f"its tests are against {BASELINE}" in page


def test_labels_are_escaped(tmp_path: Path) -> None:
    label = f"{BASELINE}>>rerank:cross-encoder/ms-marco-MiniLM-L-6-v2@100"
    make_results(tmp_path, dense=label)
    out = build_report(tmp_path).parent
    page = (out / "report.html").read_text(encoding="utf-8")
    assert html.escape(label) in page and ">>rerank" not in page
    assert len(list(out.glob("per_query_*.png"))) == len(DATASETS)


def test_training_series_reads_loss_terms_and_evals(tmp_path: Path) -> None:
    log = read_train_log(make_train_log(tmp_path / "train_log.json"))
    losses, evals = training_series(log)
    assert set(losses) == {"loss", "loss_margin_mse", "eval_loss"}
    assert len(losses["loss"]) == 10 and losses["loss"][0] == (10.0, 2.0 / 2)
    assert set(evals) == {"eval_nDCG@10"}  # eval_runtime is bookkeeping; train_loss is a summary


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"loss": 1.0, "step": 1}', r"must be a JSON list of objects.*got dict"),
        ("[1, 2]", r"entry 0 of the training log is int"),
        ('[{"train_runtime": 3.0}]', r"no entry of the training log has a 'step'"),
        ('[{"loss": 1.0,\n "step": }]', r":2: malformed JSON"),
    ],
)
def test_bad_train_log_is_named(
    results_dir: tuple[Path, dict[str, Any]], tmp_path: Path, text: str, message: str
) -> None:
    root, _ = results_dir
    log = tmp_path / "bad_log.json"
    log.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        build_report(root, train_logs=[log])
    assert str(log) in str(info.value)
    assert not (root / "report").exists()  # nothing written before the inputs are checked


def test_results_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "results.json"))):
        build_report(tmp_path)
    (tmp_path / "results.json").write_text('{\n  "measures": [,\n}')
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "results.json")) + ":2: malformed JSON"):
        build_report(tmp_path)
    (tmp_path / "results.json").write_text('{"measures": ["nDCG@10"], "datasets": {}, "results": {}}')
    with pytest.raises(ValueError, match=r"results\.json: 'models' must be an object"):
        build_report(tmp_path)


def test_unknown_baseline_measure_and_missing_per_query_file(results_dir: tuple[Path, dict[str, Any]]) -> None:
    root, _ = results_dir
    with pytest.raises(ValueError, match=rf"unknown baseline 'bm25'.*'{BASELINE}', '{re.escape(DENSE)}'"):
        build_report(root, baseline="bm25")
    with pytest.raises(ValueError, match=r"no measure 'MAP'; it has nDCG@10, RR@10, R@100"):
        build_report(root, measure="MAP")
    missing = root / "runs" / slug(BASELINE) / slug("scifact") / "metrics.json"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        build_report(root)


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(report)

    @app.command()
    def other() -> None:  # a second command keeps `report` a sub-command, as in the real app
        pass

    return app


def test_cli_writes_the_report(results_dir: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = results_dir
    log = make_train_log(tmp_path / "student" / "train_log.json")
    out = tmp_path / "site"
    result = CliRunner().invoke(
        cli_app(), ["report", str(root), "--train-log", str(log), "--measure", "R@100", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert str(out / "report.html") in result.output
    assert {p.name for p in out.glob("*.png")} >= {"r_per_dataset.png", "training_curves.png"}
    assert "student" in (out / "report.html").read_text(encoding="utf-8")  # the run is named by its folder


def test_cli_plots_a_tensorboard_folder(results_dir: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    root, _ = results_dir
    logs = tmp_path / "student" / "logs"  # what train-student --report-to tensorboard publishes
    with SummaryWriter(str(logs)) as writer:
        for step in (1, 2, 3):
            writer.add_scalar("train/loss", 1.0 / step, step)
        writer.add_scalar("eval/dev_nDCG@10", 0.4, 3)
    result = CliRunner().invoke(cli_app(), ["report", str(root), "--train-log", str(logs)])
    assert result.exit_code == 0, result.output
    assert (root / "report" / "training_curves.png").is_file()
    assert "evaluation figures: student." in (root / "report" / "report.html").read_text(encoding="utf-8")


def test_cli_errors_exit_2_with_the_reason(results_dir: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = results_dir
    result = CliRunner().invoke(cli_app(), ["report", str(root), "--baseline", "nope"])
    assert result.exit_code == 2
    assert "unknown baseline 'nope'" in result.output and DENSE in result.output
    result = CliRunner().invoke(cli_app(), ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "results.json" in result.output


def test_one_dataset_keeps_the_mean_row_but_plots_no_mean(results_dir: tuple[Path, dict[str, Any]]) -> None:
    root, fixture = results_dir
    data = json.loads((root / "results.json").read_text())
    del data["datasets"]["cqadupstack/android"]
    for model in data["results"]:
        del data["results"][model]["cqadupstack/android"]
        del data["per_query"][model]["cqadupstack/android"]
        data["results"][model]["mean"] = data["results"][model]["scifact"]
    data["significance"] = [e for e in data["significance"] if e["dataset"] == "scifact"]
    (root / "results.json").write_text(json.dumps(data))
    page_path = build_report(root)
    page = page_path.read_text(encoding="utf-8")
    expected = fixture["data"]["results"][DENSE]["scifact"]["nDCG@10"]
    assert cell(page, DENSE, "mean", "nDCG@10") == f"{expected:.4f}"
    assert [p.name for p in page_path.parent.glob("per_query_*.png")] == [
        f"per_query_{slug(DENSE)}_vs_{slug(BASELINE)}__{slug('scifact')}.png"
    ]
    assert "and the unweighted mean over datasets" not in page
