"""`clala ingest`: read and validate the input, then store it with a progress bar, and say what
was added, changed and skipped."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from labeling.core.cli_options import DEFAULT_DB, DbOption, user_errors

if TYPE_CHECKING:
    from rich.console import Console

    from labeling.ingest.pipeline import IngestOptions, IngestResult


def run_ingest(
    db: str | Path, path: str | Path, options: IngestOptions | None = None, console: Console | None = None
) -> IngestResult:
    """Ingest with a progress bar, then print what was added, changed, skipped. The input is read
    and validated before the database is opened, so bad input leaves the database untouched."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from labeling.core.terminal import error_console, literal, output_console
    from labeling.ingest.pipeline import ingest, read_input
    from labeling.store.store import Store

    source = read_input(path, options)
    console = console or error_console()
    with (
        Store(db) as store,
        Progress(
            TextColumn("ingest"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("ingest", total=None)
        result = ingest(
            store, source, on_progress=lambda done, total: progress.update(task, completed=done, total=total)
        )
    out = output_console()
    out.print(f"{literal(result.source)} ({result.format}) -> dataset {literal(repr(result.dataset))} in {literal(db)}")
    out.print(
        f"read {result.read:,}; added {len(result.added):,}; changed {len(result.changed):,} "
        f"(stored as new versions); unchanged {result.unchanged:,}; sentences {result.sentences:,}"
    )
    if result.duplicates:
        out.print(f"{result.duplicates:,} rows repeated an earlier row exactly and were ignored")
    if result.changed:
        out.print(f"[yellow]changed reports:[/yellow] {literal(_preview(result.changed))}")
    if result.skipped_blank:
        out.print(
            f"[yellow]skipped {len(result.skipped_blank):,} reports with no text:[/yellow] "
            f"{literal(_preview(result.skipped_blank))}"
        )
    return result


def _preview(ids: list[str], n: int = 10) -> str:
    more = f" ... and {len(ids) - n:,} more" if len(ids) > n else ""
    return ", ".join(ids[:n]) + more


@user_errors
def ingest_command(
    path: Annotated[
        Path, typer.Argument(help="CSV, JSONL, IU X-ray indiana_reports.csv, or a MIMIC-CXR reports folder")
    ],
    db: DbOption = DEFAULT_DB,
    fmt: Annotated[str, typer.Option("--format", help="auto | csv | jsonl | mimic | iu-xray")] = "auto",
    dataset: Annotated[str | None, typer.Option(help="dataset name (default: from the format or file name)")] = None,
    id_col: Annotated[str, typer.Option("--id-col", help="column (CSV) or field (JSONL) with the report id")] = "id",
    text_col: Annotated[str, typer.Option("--text-col", help="column or field with the report text")] = "text",
    patient_col: Annotated[str | None, typer.Option("--patient-col")] = None,
    study_col: Annotated[str | None, typer.Option("--study-col")] = None,
    image_col: Annotated[str | None, typer.Option("--image-col", help="image paths (list, or ';'-separated)")] = None,
    encoding: Annotated[str, typer.Option(help="text encoding of the input")] = "utf-8",
    blank: Annotated[
        str,
        typer.Option(
            help="reports with no text: auto (error for CSV/JSONL, skip and list for "
            "MIMIC-CXR and IU X-ray) | error | skip"
        ),
    ] = "auto",
    max_chars: Annotated[int, typer.Option("--max-chars", help="reject reports longer than this")] = 100_000,
) -> None:
    """Ingest reports: sections, sentences with exact offsets; re-ingesting adds nothing new."""
    from labeling.ingest.pipeline import IngestOptions
    from labeling.ingest.readers import Columns

    columns = Columns(id=id_col, text=text_col, patient=patient_col, study=study_col, images=image_col)
    options = IngestOptions(
        format=fmt, columns=columns, dataset=dataset, encoding=encoding, blank=blank, max_chars=max_chars
    )
    run_ingest(db, path, options)
