"""Options and helpers shared by the commands: config loading, overrides, logging, errors."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from retrodistill.config import ConfigError, load_config

C = TypeVar("C")

console = Console(stderr=True)
out_console = Console()

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config; keys mirror the stage's config dataclass.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a config key, e.g. --set loss.params.temperature_teacher=2 (repeatable)."
    ),
]
DataDirOption = Annotated[
    str | None,
    typer.Option(
        "--data-dir",
        help="Folder holding datasets (default: $RETRODISTILL_DATA or ./data).",
        show_default=False,
    ),
]


def setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
        force=True,
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
        except ImportError:  # pragma: no cover
            pass


def resolve(cls: type[C], config: Path | None, overrides: list[str] | None, base: dict[str, Any]) -> C:
    """Defaults < YAML file < command-line options (``base``, ``None`` = not given) < ``--set`` overrides.

    Options given on the command line win over the YAML file; their parsed values are merged into
    the config directly.
    """
    return load_config(cls, config, list(overrides or []), options=base)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures (bad input, mismatched artifacts) into a one-line error and exit code 2."""
    from retrodistill.artifacts import ArtifactMismatchError
    from retrodistill.data.collections import DataFormatError
    from retrodistill.data.download import DatasetDownloadError

    try:
        yield
    except (
        ConfigError,
        DataFormatError,
        DatasetDownloadError,
        ArtifactMismatchError,
        FileNotFoundError,
        ValueError,
        ImportError,
    ) as err:
        from rich.markup import escape

        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
