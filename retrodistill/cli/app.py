"""The ``retrodistill`` command: one sub-command per pipeline stage.

Heavy libraries are imported inside each command, so ``retrodistill --help`` is instant.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from retrodistill.cli.common import describe_error, print_error, setup_logging, verbose
from retrodistill.cli.datasets import datasets
from retrodistill.cli.embed_teacher import embed_teacher
from retrodistill.cli.ensemble import ensemble_teachers
from retrodistill.cli.evaluate import evaluate
from retrodistill.cli.import_scores import import_scores
from retrodistill.cli.inspect_teacher import inspect_teacher
from retrodistill.cli.mine import mine_negatives
from retrodistill.cli.plugins import plugins
from retrodistill.cli.quickstart import quickstart
from retrodistill.cli.report import report
from retrodistill.cli.reproduce import reproduce
from retrodistill.cli.score import score_teacher
from retrodistill.cli.score_pairs import score_pairwise
from retrodistill.cli.split_dev import split_dev
from retrodistill.cli.train import train_student

app = typer.Typer(
    name="retrodistill",
    help="Distil expensive rankers into fast bi-encoder retrievers, and evaluate them on BEIR / MS MARCO / TREC DL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        import torch

        print(f"retrodistill {version('retrodistill')} (torch {torch.__version__}, python {sys.version.split()[0]})")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    setup_logging(verbose)


app.command("split-dev")(split_dev)
app.command("mine-negatives")(mine_negatives)
app.command("score-teacher")(score_teacher)
app.command("import-scores")(import_scores)
app.command("score-pairwise")(score_pairwise)
app.command("embed-teacher")(embed_teacher)
app.command("ensemble-teachers")(ensemble_teachers)
app.command("inspect-teacher")(inspect_teacher)
app.command("train-student")(train_student)
app.command("evaluate")(evaluate)
app.command("datasets")(datasets)
app.command("plugins")(plugins)
app.command("quickstart")(quickstart)
app.command("reproduce")(reproduce)
app.command("report")(report)


def main() -> None:
    """The console entry point: no uncaught exception reaches a user as a traceback without ``-v``."""
    try:
        app()
    except KeyboardInterrupt:
        print_error("interrupted; run the same command again to resume where a resumable stage stopped")
        sys.exit(130)
    except Exception as err:  # the last guard; expected failures were already turned into one line
        if verbose():
            raise
        print_error(f"{describe_error(err)} ({type(err).__name__}; run with -v for the traceback)")
        sys.exit(2)


if __name__ == "__main__":
    main()
