"""Names as file names (injective, inside the output folder) and as table cells (escaped)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from retrodistill.evaluate.output_names import check_distinct_slugs, escape_markdown, escape_rich, run_tag, slug


def test_a_slug_is_the_readable_name_and_six_digits_of_its_sha256() -> None:
    name = "sentence-transformers/all-MiniLM-L6-v2"
    assert slug(name) == "sentence-transformers__all-MiniLM-L6-v2__" + hashlib.sha256(name.encode()).hexdigest()[:6]
    assert run_tag(name) == "sentence-transformers__all-MiniLM-L6-v2"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("org/model", "org__model"),  # the two used to share runs/org__model
        ("a b", "a_b"),
        ("a|b", "a?b"),
        ("MiniLM", "minilm"),  # a case-insensitive disk
        (".", ".."),
        ("x" * 100 + "1", "x" * 100 + "2"),  # alike in the first 80 characters
    ],
)
def test_names_that_read_alike_get_different_folders(a: str, b: str) -> None:
    assert slug(a).casefold() != slug(b).casefold()
    check_distinct_slugs([a, b, a], "model")  # the same name twice is one folder, not a clash


@pytest.mark.parametrize("name", [".", "..", "../..", "/etc/passwd", "a/../../b", ".hidden", "", "x" * 300, "é/ü"])
def test_a_slug_is_one_plain_component_inside_the_folder(tmp_path: Path, name: str) -> None:
    folder = tmp_path / slug(name)
    assert folder.parent == tmp_path and folder.resolve().parent == tmp_path.resolve()
    assert not slug(name).startswith(".") and len(slug(name).encode()) < 255
    folder.mkdir()  # a name the disk takes


def test_a_hash_collision_is_refused_not_overwritten(monkeypatch: pytest.MonkeyPatch) -> None:
    from retrodistill.evaluate import output_names

    monkeypatch.setattr(output_names, "slug", lambda name: "same__000000")
    with pytest.raises(ValueError, match="model names 'a' and 'b' would share the output folder 'same__000000'"):
        output_names.check_distinct_slugs(["a", "b"], "model")


def test_markdown_escapes_table_markup_and_html() -> None:
    assert escape_markdown("a|b<script>") == "a\\|b&lt;script&gt;"
    assert escape_markdown("*x* _y_ `z` [l](u) ~s~ #h & \\") == (
        "\\*x\\* \\_y\\_ \\`z\\` \\[l\\](u) \\~s\\~ \\#h &amp; \\\\"
    )
    assert escape_markdown("two\nlines\r\nhere") == "two lines here"  # a newline would end the table row
    assert escape_markdown("nDCG@10") == "nDCG@10"


def test_rich_markup_in_a_name_is_text() -> None:
    from rich.console import Console

    console = Console(record=True, width=200, file=io.StringIO())
    console.print(escape_rich("[red]x[/] [/]"))
    assert console.export_text().strip() == "[red]x[/] [/]"


HOSTILE_MODEL, HOSTILE_DATASET = "m|x*y*[red]z[/]", "a|b<script>"


def test_the_suite_tables_keep_hostile_names_as_text() -> None:
    from rich.console import Console

    from retrodistill.evaluate.suite import SuiteResult

    values = {"nDCG@10": 0.5}
    result = SuiteResult(
        models={HOSTILE_MODEL: {}},
        datasets={HOSTILE_DATASET: {}},
        measures=("nDCG@10",),
        results={HOSTILE_MODEL: {HOSTILE_DATASET: values, "mean": values}},
        rules="relevant means grade >= 1 on <b>",
    )
    markdown = result.to_markdown()
    assert "| dataset | m\\|x\\*y\\*\\[red\\]z\\[/\\] |" in markdown
    assert "| a\\|b&lt;script&gt; | 0.5000 |" in markdown and "<" not in markdown
    console = Console(record=True, width=200, file=io.StringIO())
    for table in result.to_rich_tables():
        console.print(table)
    text = console.export_text()
    assert HOSTILE_MODEL in text and HOSTILE_DATASET in text and "relevant means grade >= 1 on <b>" in text
