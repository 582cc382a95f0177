"""CLI view of an import: what was stored, and what was skipped and why."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from labeling.core.cli_options import (
    DEFAULT_DB,
    DbOption,
    EnableOption,
    VocabularyOption,
    user_errors,
)
from labeling.core.terminal import output_console
from labeling.sources.imports.registry import import_labels
from labeling.store.run_records import ImportResult


def run_import(
    db: str | Path,
    kind: str,
    path: str | Path,
    name: str,
    dataset: str | None = None,
    vocabulary: str | None = None,
    enable: list[str] | None = None,
    console: Console | None = None,
) -> ImportResult:
    console = console or output_console()
    result = import_labels(db, kind, path, name, dataset, vocabulary, enable)
    show_import_result(result, console)
    return result


def show_import_result(result: ImportResult, console: Console) -> None:
    statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(result.statuses.items())) or "none"
    console.print(
        f"run [bold]{result.run}[/bold] ({result.kind}) from {result.source}: "
        f"{result.reports:,} reports, {result.labels:,} labels ({statuses})"
    )
    for key, value in result.details.items():
        console.print(f"  {key}: {value}")
    if result.skipped.total:
        table = Table(
            "skipped because",
            "count",
            "examples",
            title=f"Skipped input ({result.skipped.total:,})",
            title_justify="left",
        )
        for reason, count in sorted(result.skipped.counts.items(), key=lambda kv: -kv[1]):
            table.add_row(reason, f"{count:,}", "; ".join(result.skipped.examples.get(reason, [])))
        console.print(table)


@user_errors
def import_command(
    kind: Annotated[
        str, typer.Argument(help="scene-graphs | imagenome-gold | chexpert | mesh | labelstudio | synth-gold")
    ],
    path: Annotated[Path, typer.Argument(help="the file or folder to import")],
    name: Annotated[str, typer.Option(help="name of the new run")],
    db: DbOption = DEFAULT_DB,
    dataset: Annotated[str | None, typer.Option(help="match reports of this dataset only")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
) -> None:
    """Import existing labels (scene graphs, CheXpert, MeSH, Label Studio, synthetic gold) as a run."""
    from labeling.sources.imports.commands import run_import

    run_import(db, kind, path, name, dataset, str(vocabulary) if vocabulary else None, enable or [])
