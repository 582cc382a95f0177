"""CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labeling.core.cli_options import DEFAULT_DB, DbOption, user_errors


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
    from labeling.ingest.readers import Columns
    from labeling.store.commands import run_ingest

    columns = Columns(id=id_col, text=text_col, patient=patient_col, study=study_col, images=image_col)
    run_ingest(db, path, fmt=fmt, columns=columns, dataset=dataset, encoding=encoding, blank=blank, max_chars=max_chars)
