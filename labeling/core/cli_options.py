"""What every command shares: the option declarations used by more than one command, declared
once, and the handling of user errors (one line on stderr, exit 1)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from labeling.core.errors import ClalaError
from labeling.core.terminal import error_console, literal

__all__ = [
    "DEFAULT_API_KEY_ENV",
    "DEFAULT_DB",
    "AllowRemoteOption",
    "ApiKeyEnvOption",
    "ClalaError",
    "DataOption",
    "DbOption",
    "DeviceOption",
    "EnableOption",
    "ImagenomeOption",
    "VocabularyOption",
    "user_errors",
]

DEFAULT_DB = Path("clala.duckdb")
DbOption = Annotated[Path, typer.Option("--db", help="database file", envvar="CLALA_DB")]
VocabularyOption = Annotated[Path | None, typer.Option("--vocabulary", help="vocabulary file (default: shipped)")]
EnableOption = Annotated[
    list[str] | None,
    typer.Option("--enable", help="add a finding category (tubesandlines, device, technicalassessment)"),
]
DataOption = Annotated[Path, typer.Option("--data", help="images root (MIMIC-CXR-JPG layout, or a clala synth folder)")]
ImagenomeOption = Annotated[
    Path | None,
    typer.Option("--imagenome", help="Chest ImaGenome root with splits/ and scene_graph/ (default: --data)"),
]
DeviceOption = Annotated[str, typer.Option(help="auto (CUDA if available) | cpu | cuda | cuda:N")]
# The LLM commands (label, generate, score-reports).
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
ApiKeyEnvOption = Annotated[str, typer.Option("--api-key-env", help="environment variable holding the API key")]
AllowRemoteOption = Annotated[
    bool, typer.Option("--allow-remote", help="allow sending reports to a server that is not on this machine")
]


def user_errors(command: Callable) -> Callable:
    """Print a ClalaError as one line on stderr and exit 1; Ctrl-C exits 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ClalaError as exc:
            # The message may quote input (ids, paths, model output): literal text, on one line.
            error_console().print(
                f"[red]error:[/red] {literal(exc, newlines=False)}", soft_wrap=True, highlight=False, markup=True
            )
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            error_console().print("interrupted; committed batches are kept, run the command again to finish")
            raise typer.Exit(130) from None

    return wrapper
