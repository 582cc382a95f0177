"""Human-readable views of the store for the CLI: statistics, report lists, one report, exports.

Each view takes the open store; the commands open it once (read-only)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from labeling.core.cli_options import DEFAULT_DB, DbOption, user_errors
from labeling.core.errors import InputError, StoreError
from labeling.core.terminal import literal, output_console, visible

if TYPE_CHECKING:
    from labeling.store.status_file import RunStatusRecord
    from labeling.store.store import Store

SECTION_STYLES = {"findings": "green", "impression": "cyan"}


def _table(title: str, columns: list[str], rows: list[list[object]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(
            column,
            justify="right"
            if column not in ("dataset", "name", "kind", "status", "table", "field", "value")
            else "left",
        )
    for row in rows:
        table.add_row(*["" if v is None else f"{v:,}" if isinstance(v, int) else literal(v) for v in row])
    return table


def show_stats(store: Store, console: Console | None = None) -> dict:
    """Print counts per table, per dataset and per run; return them too."""
    console = console or output_console()
    tables = store.table_counts()
    datasets = store.dataset_counts()
    runs = store.run_counts()
    console.print(f"[bold]{literal(store.path)}[/bold]")
    console.print(_table("Tables", ["table", "rows"], [[k, v] for k, v in tables.items()]))
    if datasets:
        console.print(
            _table(
                "Datasets",
                ["dataset", "reports", "versions", "sentences", "distinct sentences"],
                [
                    [d["dataset"], d["reports"], d["versions"], d["sentences"], d["distinct_sentences"]]
                    for d in datasets
                ],
            )
        )
    if runs:
        console.print(
            _table(
                "Runs",
                ["name", "kind", "status", "reports", "labels", "present", "absent", "uncertain", "failures"],
                [
                    [
                        r["name"],
                        r["kind"],
                        r["status"],
                        r["reports"],
                        r["labels"],
                        r["present"],
                        r["absent"],
                        r["uncertain"],
                        r["failures"],
                    ]
                    for r in runs
                ],
            )
        )
    return {"tables": tables, "datasets": datasets, "runs": runs}


def show_report_list(
    store: Store,
    dataset: str | None = None,
    limit: int = 20,
    offset: int = 0,
    all_versions: bool = False,
    console: Console | None = None,
) -> list[dict]:
    console = console or output_console()
    rows = store.list_reports(dataset, limit, offset, all_versions)
    console.print(
        _table(
            "Reports",
            ["dataset", "report id", "version", "patient", "study", "chars", "sentences"],
            [
                [r["dataset"], r["report_id"], r["version"], r["patient_id"], r["study_id"], r["chars"], r["sentences"]]
                for r in rows
            ],
        )
    )
    return rows


def find_report(
    store: Store, report_id: str, dataset: str | None = None, version: int | None = None
) -> tuple[dict[str, Any], int]:
    """(the report, how many versions it has), or InputError naming what is ambiguous or missing."""
    versions = store.find_reports(report_id, dataset)
    if not versions:
        where = f" in dataset {dataset!r}" if dataset else ""
        raise InputError(f"{store.path}: no report with id {report_id!r}{where}")
    datasets = sorted({v["dataset"] for v in versions})
    if len(datasets) > 1:
        raise InputError(f"report id {report_id!r} exists in datasets {', '.join(datasets)}; choose one with --dataset")
    if version is None:
        return versions[-1], len(versions)
    chosen = [v for v in versions if v["version"] == version]
    if not chosen:
        raise InputError(f"report {report_id!r} has versions {[v['version'] for v in versions]}, not {version}")
    return chosen[0], len(versions)


def _report_text(raw: str, sentences: list[dict[str, Any]]) -> Text:
    """The report text with its sentences styled, control characters made visible (so each
    piece is made visible on its own, and the sentence offsets into the raw text still hold)."""
    text, position = Text(), 0
    for i, sentence in enumerate(sentences):
        start, end = max(position, sentence["start_char"]), max(position, sentence["end_char"])
        base = SECTION_STYLES.get(sentence["section"], "white")
        text.append(visible(raw[position:start]))
        text.append(visible(raw[start:end]), style=base if i % 2 == 0 else f"{base} underline")
        position = end
    text.append(visible(raw[position:]))
    return text


def show_report(
    store: Store,
    report_id: str,
    dataset: str | None = None,
    version: int | None = None,
    console: Console | None = None,
) -> dict:
    """Print one report with its sections and sentence boundaries, and its labels per run."""
    console = console or output_console()
    report, versions = find_report(store, report_id, dataset, version)
    sentences = store.sentences(report["report_key"])
    labels = store.report_labels(report["report_key"])
    console.print(
        f"[bold]{literal(report['dataset'])} / {literal(report['report_id'])}[/bold]  version {report['version']} of "
        f"{versions}  patient {literal(report['patient_id'] or '-')}  study {literal(report['study_id'] or '-')}"
    )
    if report["image_paths"]:
        console.print(f"images: {literal(', '.join(report['image_paths']))}")
    console.print(_report_text(report["text"], sentences))
    console.print(
        _table(
            "Sentences",
            ["#", "section", "span", "text"],
            [
                [
                    s["sentence_index"],
                    s["section"] or "-",
                    f"{s['start_char']}-{s['end_char']}",
                    " ".join(s["text"].split()),  # made literal by _table
                ]
                for s in sentences
            ],
        )
    )
    sections = [s["name"] or "(no header)" for s in json.loads(report["sections"] or "[]")]
    console.print(f"[dim]{len(sentences)} sentences; sections: {literal(', '.join(sections) or '-')}[/dim]")
    if labels:
        console.print(
            _table(
                "Labels",
                ["run", "region", "finding", "status", "evidence"],
                [[r[0], r[1] or "(image)", r[2], r[3], r[4] or ""] for r in labels],
            )
        )
    return {"report": report, "sentences": sentences, "labels": labels}


# How Connection says that another process holds DuckDB's lock (labeling/store/connection.py).
_IN_USE = re.compile(r"database is in use by another process(?: \(PID (\d+)\))?")


def reading_store_or_status(db: str | Path, *, run: str | None = None, listing: bool = True) -> Store | None:
    """The database opened read-only; or, when another process is writing it, None after showing
    what its status file says (`run`: only that run, by name or id; `listing`: as a row of the
    runs table, else field by field). Without a status file about it, the in-use error."""
    from labeling.store.status_file import provenance, read_status, status_path
    from labeling.store.store import Store

    try:
        return Store(db, read_only=True)
    except StoreError as exc:
        in_use = _IN_USE.search(str(exc))
        if in_use is None:
            raise
        record = read_status(db)
        if record is None:
            raise StoreError(f"{exc} (no status file {status_path(db)} says what it is doing)") from None
        if run is not None and run not in (record.name, str(record.run_id)):
            raise StoreError(
                f"{exc}; its status file {status_path(db)} is about run {record.name!r} (id {record.run_id}), "
                f"not {run!r}"
            ) from None
        lock_pid = int(in_use.group(1)) if in_use.group(1) else None
        show_status_record(record, provenance(record, db, lock_pid), listing=listing)
        return None


def show_status_record(record: RunStatusRecord, source: str, *, listing: bool, console: Console | None = None) -> None:
    """A status file's run: a row of the runs table (`listing`) or field by field, titled with
    where it comes from (`source`)."""
    console = console or output_console()
    fields = {
        "id": str(record.run_id),
        "name": record.name,
        "kind": record.kind,
        "status": record.status,
        "reports": record.reports,
        "done": record.done,
        "failed": record.failed,
        "pending": record.pending,
    }
    if listing:
        console.print(_table(literal(f"Runs ({source})"), list(fields), [list(fields.values())]))
        return
    fields.update(pid=str(record.pid), host=record.host, created=record.created, started=record.started)
    fields["updated"] = record.updated
    title = literal(f"Run {record.name} ({source})")
    console.print(_table(title, ["field", "value"], [[k, v] for k, v in fields.items()]))


@user_errors
def reports_list_command(
    db: DbOption = DEFAULT_DB,
    dataset: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 20,
    offset: Annotated[int, typer.Option()] = 0,
    all_versions: Annotated[
        bool, typer.Option("--all-versions", help="every stored version, not only the latest")
    ] = False,
) -> None:
    """List reports (latest versions)."""
    from labeling.store.store import Store

    with Store(db, read_only=True) as store:
        show_report_list(store, dataset, limit, offset, all_versions)


@user_errors
def reports_show_command(
    report_id: Annotated[str, typer.Argument(help="the report id as ingested")],
    db: DbOption = DEFAULT_DB,
    dataset: Annotated[str | None, typer.Option()] = None,
    version: Annotated[int | None, typer.Option(help="a stored version (default: the latest)")] = None,
) -> None:
    """Show one report: text with sentence boundaries, sections, and its labels per run."""
    from labeling.store.store import Store

    with Store(db, read_only=True) as store:
        show_report(store, report_id, dataset, version)


@user_errors
def stats_command(db: DbOption = DEFAULT_DB) -> None:
    """Counts per table, per dataset and per run."""
    store = reading_store_or_status(db)  # while a run writes: what its status file says
    if store is None:
        return
    with store:
        show_stats(store)


@user_errors
def export_labels_command(
    run: Annotated[str, typer.Option("--run", help="run name or id")],
    out: Annotated[Path, typer.Option("--out", help="output file (.parquet, .csv, .jsonl)")],
    db: DbOption = DEFAULT_DB,
    fmt: Annotated[str | None, typer.Option("--format", help="parquet | csv | jsonl (default: from --out)")] = None,
) -> None:
    """Export a run's labels, one row per (report, region, finding) cell."""
    from labeling.store.export import export_labels
    from labeling.store.store import Store

    with Store(db, read_only=True) as store:
        rows = export_labels(store, run, out, fmt)
    output_console().print(f"wrote {rows:,} labels to {literal(out)}")


@user_errors
def export_reports_command(
    out: Annotated[Path, typer.Option("--out", help="output file (.parquet, .csv, .jsonl)")],
    db: DbOption = DEFAULT_DB,
    run: Annotated[str | None, typer.Option("--run", help="only reports this run labeled")] = None,
    dataset: Annotated[str | None, typer.Option()] = None,
    all_versions: Annotated[bool, typer.Option("--all-versions")] = False,
    fmt: Annotated[str | None, typer.Option("--format", help="parquet | csv | jsonl (default: from --out)")] = None,
) -> None:
    """Export reports (text, sections, metadata)."""
    from labeling.store.export import export_reports
    from labeling.store.store import Store

    with Store(db, read_only=True) as store:
        rows = export_reports(store, out, fmt, dataset=dataset, run=run, all_versions=all_versions)
    output_console().print(f"wrote {rows:,} reports to {literal(out)}")
