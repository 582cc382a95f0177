"""CLI view of an import: what was stored, and what was skipped and why."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
from labeling.core.formatting import format_counts
from labeling.core.terminal import literal, output_console

if TYPE_CHECKING:
    from labeling.sources.imports.registry import ImportRequest
    from labeling.store.run_records import RunResult
    from labeling.store.store import Store


def run_import(store: Store, request: ImportRequest, console: Console | None = None) -> RunResult:
    from labeling.sources.imports.registry import import_labels

    console = console or output_console()
    result = import_labels(store, request)
    show_import_result(result, console)
    return result


def show_import_result(result: RunResult, console: Console) -> None:
    console.print(
        f"run [bold]{literal(result.name)}[/bold] ({literal(result.kind)}) from {literal(result.source)}: "
        f"{result.reports:,} reports, {result.labels:,} labels ({format_counts(result.statuses)})"
    )
    for key, value in result.details.items():
        console.print(f"  {literal(key)}: {literal(value)}")
    if result.skipped.total:
        table = Table(
            "skipped because",
            "count",
            "examples",
            title=f"Skipped input ({result.skipped.total:,})",
            title_justify="left",
        )
        for reason, count in sorted(result.skipped.counts.items(), key=lambda kv: -kv[1]):
            table.add_row(literal(reason), f"{count:,}", literal("; ".join(result.skipped.examples.get(reason, []))))
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
    no_header: Annotated[
        bool,
        typer.Option(
            "--no-header",
            help="chexpert: the CSV has no header row; columns by position, by default the CheXpert "
            "labeler's order (Reports, No Finding, Enlarged Cardiomediastinum, ..., Support Devices)",
        ),
    ] = False,
    columns: Annotated[
        str | None,
        typer.Option(
            help="chexpert with --no-header: column positions from 0, NAME=POSITION,... "
            "(names: study_id, subject_id, report_id, Reports = the report text, CheXpert observations), "
            'e.g. "report_id=0,Cardiomegaly=1,Edema=2"'
        ),
    ] = None,
) -> None:
    """Import existing labels (scene graphs, CheXpert, MeSH, Label Studio, synthetic gold) as a run."""
    from labeling.sources.imports.registry import ImportRequest
    from labeling.store.store import Store

    request = ImportRequest(
        kind,
        path,
        name,
        dataset,
        str(vocabulary) if vocabulary else None,
        enable or [],
        no_header=no_header,
        columns=columns,
    )
    with Store.open_existing(db) as store:
        run_import(store, request)
