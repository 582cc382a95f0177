"""The clala command line. Each command parses its options and calls one function."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console

from labeling.errors import ClalaError

app = typer.Typer(help="Per-region chest X-ray lesion labels from reports, with provenance, in DuckDB.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
reports_app = typer.Typer(help="List and show ingested reports.", no_args_is_help=True)
export_app = typer.Typer(help="Export labels or reports to Parquet, CSV or JSONL.", no_args_is_help=True)
schema_app = typer.Typer(help="The vocabulary and the label schema sent to LLM servers.", no_args_is_help=True)
app.add_typer(reports_app, name="reports")
app.add_typer(export_app, name="export")
app.add_typer(schema_app, name="schema")

DbOption = Annotated[Path, typer.Option("--db", help="database file", envvar="CLALA_DB")]
DEFAULT_DB = Path("clala.duckdb")
err = Console(stderr=True)


def user_errors(command: Callable) -> Callable:
    """Print a ClalaError as one line on stderr and exit 1; Ctrl-C exits 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ClalaError as exc:
            err.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False, markup=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted; committed batches are kept, run the command again to finish")
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@user_errors
def ingest(
    path: Annotated[Path, typer.Argument(help="CSV, JSONL, IU X-ray indiana_reports.csv, or a MIMIC-CXR reports folder")],
    db: DbOption = DEFAULT_DB,
    fmt: Annotated[str, typer.Option("--format", help="auto | csv | jsonl | mimic | iu-xray")] = "auto",
    dataset: Annotated[Optional[str], typer.Option(help="dataset name (default: from the format or file name)")] = None,
    id_col: Annotated[str, typer.Option("--id-col", help="column (CSV) or field (JSONL) with the report id")] = "id",
    text_col: Annotated[str, typer.Option("--text-col", help="column or field with the report text")] = "text",
    patient_col: Annotated[Optional[str], typer.Option("--patient-col")] = None,
    study_col: Annotated[Optional[str], typer.Option("--study-col")] = None,
    image_col: Annotated[Optional[str], typer.Option("--image-col", help="image paths (list, or ';'-separated)")] = None,
    encoding: Annotated[str, typer.Option(help="text encoding of the input")] = "utf-8",
    blank: Annotated[str, typer.Option(help="reports with no text: auto (error for CSV/JSONL, skip and list for "
                                            "MIMIC-CXR and IU X-ray) | error | skip")] = "auto",
    max_chars: Annotated[int, typer.Option("--max-chars", help="reject reports longer than this")] = 100_000,
) -> None:
    """Ingest reports: sections, sentences with exact offsets; re-ingesting adds nothing new."""
    from labeling.readers import Columns
    from labeling.views import run_ingest

    columns = Columns(id=id_col, text=text_col, patient=patient_col, study=study_col, images=image_col)
    run_ingest(db, path, fmt=fmt, columns=columns, dataset=dataset, encoding=encoding, blank=blank,
               max_chars=max_chars)


@reports_app.command("list")
@user_errors
def reports_list(
    db: DbOption = DEFAULT_DB,
    dataset: Annotated[Optional[str], typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 20,
    offset: Annotated[int, typer.Option()] = 0,
    all_versions: Annotated[bool, typer.Option("--all-versions", help="every stored version, not only the latest")] = False,
) -> None:
    """List reports (latest versions)."""
    from labeling.views import show_report_list

    show_report_list(db, dataset, limit, offset, all_versions)


@reports_app.command("show")
@user_errors
def reports_show(
    report_id: Annotated[str, typer.Argument(help="the report id as ingested")],
    db: DbOption = DEFAULT_DB,
    dataset: Annotated[Optional[str], typer.Option()] = None,
    version: Annotated[Optional[int], typer.Option(help="a stored version (default: the latest)")] = None,
) -> None:
    """Show one report: text with sentence boundaries, sections, and its labels per run."""
    from labeling.views import show_report

    show_report(db, report_id, dataset, version)


@app.command()
@user_errors
def stats(db: DbOption = DEFAULT_DB) -> None:
    """Counts per table, per dataset and per run."""
    from labeling.views import show_stats

    show_stats(db)


@export_app.command("labels")
@user_errors
def export_labels(
    run: Annotated[str, typer.Option("--run", help="run name or id")],
    out: Annotated[Path, typer.Option("--out", help="output file (.parquet, .csv, .jsonl)")],
    db: DbOption = DEFAULT_DB,
    fmt: Annotated[Optional[str], typer.Option("--format", help="parquet | csv | jsonl (default: from --out)")] = None,
) -> None:
    """Export a run's labels, one row per (report, region, finding) cell."""
    from labeling.export import export_labels as export

    rows = export(db, run, out, fmt)
    Console().print(f"wrote {rows:,} labels to {out}")


@export_app.command("reports")
@user_errors
def export_reports(
    out: Annotated[Path, typer.Option("--out", help="output file (.parquet, .csv, .jsonl)")],
    db: DbOption = DEFAULT_DB,
    run: Annotated[Optional[str], typer.Option("--run", help="only reports this run labeled")] = None,
    dataset: Annotated[Optional[str], typer.Option()] = None,
    all_versions: Annotated[bool, typer.Option("--all-versions")] = False,
    fmt: Annotated[Optional[str], typer.Option("--format", help="parquet | csv | jsonl (default: from --out)")] = None,
) -> None:
    """Export reports (text, sections, metadata)."""
    from labeling.export import export_reports as export

    rows = export(db, out, fmt, dataset, run, all_versions)
    Console().print(f"wrote {rows:,} reports to {out}")


VocabularyOption = Annotated[Optional[Path], typer.Option("--vocabulary", help="vocabulary file (default: shipped)")]
EnableOption = Annotated[Optional[list[str]], typer.Option("--enable", help="add a finding category "
                                                          "(tubesandlines, device, technicalassessment)")]


@schema_app.command("export")
@user_errors
def schema_export(
    out: Annotated[Optional[Path], typer.Option("--out", help="file to write (default: stdout)")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
) -> None:
    """Write the JSON Schema of one unit's LLM answer, as the labeling engine sends it."""
    from labeling.schema_views import export_label_schema

    export_label_schema(out, vocabulary, enable or [])


@schema_app.command("vocabulary")
@user_errors
def schema_vocabulary(vocabulary: VocabularyOption = None, enable: EnableOption = None) -> None:
    """Print the regions and findings of a vocabulary."""
    from labeling.schema_views import show_vocabulary

    show_vocabulary(vocabulary, enable or [])


@app.command()
@user_errors
def quickstart(
    workdir: Annotated[Path, typer.Option("--dir", help="scratch folder")] = Path("clala-quickstart"),
) -> None:
    """Run the mission on the embedded defaults in a scratch folder."""
    from labeling.quickstart import run_quickstart

    run_quickstart(workdir)


if __name__ == "__main__":
    app()
