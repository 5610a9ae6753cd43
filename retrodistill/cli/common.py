"""Options and helpers shared by the commands: config loading, overrides, logging, errors."""

from __future__ import annotations

import errno
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
    typer.Option("--set", help="Override a config key, e.g. --set loss.params.temperature_teacher=2 (repeatable)."),
]
OverwriteOption = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace an existing --out that is not this command's own resumable output; the old one is kept "
        "until the new one is complete.",
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


_state = {"verbose": False}


def verbose() -> bool:
    """Whether ``-v`` was given: then unexpected errors show their traceback."""
    return _state["verbose"]


def setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    _state["verbose"] = verbose

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
        force=True,
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # huggingface_hub gives its logger a handler of its own, so a record it also passes up to ours
    # showed twice ("Could not reach the Hub ... Using cached commit hash" in offline mode): it keeps
    # its own handler only. Without -v it logs errors only (that notice is the normal offline case).
    hub = logging.getLogger("huggingface_hub")
    hub.propagate = False
    if not verbose:
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")  # read when huggingface_hub is imported
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        hub.setLevel(logging.ERROR)
    if not verbose:
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()  # "Loading weights" bars; ours are rich (retrodistill.progress)
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
        ValueError,
        ImportError,
        OSError,
    ) as err:
        print_error(describe_error(err))
        raise typer.Exit(2) from None


def describe_error(err: BaseException) -> str:
    """One line for the user: what failed, on which path, and what to do."""
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError) and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        if err.errno == errno.ENOSPC:
            return f"{where}no space left on device; free some and run the same command again to resume"
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"{where}{err.strerror.lower()}: choose a folder you can write to"
        return f"{where}{err.strerror}"
    if isinstance(err, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({err.reason} at byte {err.start})"
    text = str(err).strip()
    return text if text else type(err).__name__


def print_error(message: str) -> None:
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
