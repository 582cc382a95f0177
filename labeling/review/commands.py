"""CLI views of review: `clala compare` (tables, CSV, heatmap PNG), `clala disagreements` and
`clala export-labelstudio`.

Each view takes the open store; the commands open it once (read-only). Files are written under a
temporary name beside the target and renamed when complete.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
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
from labeling.core.errors import InputError
from labeling.core.files import atomic_path
from labeling.core.formatting import format_number, is_undefined
from labeling.core.terminal import literal, output_console

if TYPE_CHECKING:
    import pyarrow as pa

    from labeling.review.compare import CompareOptions, Comparison, MetricRow
    from labeling.review.disagreements import QueueOptions
    from labeling.review.labelstudio import LabelStudioExport
    from labeling.store.store import Store

CSV_COLUMNS = (
    "scope",
    "name",
    "run",
    "reference",
    "level",
    "uncertain",
    "cells",
    "excluded",
    "tp",
    "fp",
    "fn",
    "tn",
    "support",
    "agreement",
    "kappa",
    "precision",
    "recall",
    "f1",
)


def file_stem(text: str) -> str:
    """A run name made safe for a file name (run names may hold ':', '@', '+')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def comparison_rows(comparison: Comparison) -> list[MetricRow]:
    """Per-finding rows, per-region rows (region level), then micro and macro."""
    return [*comparison.by_finding, *comparison.by_region, comparison.micro, comparison.macro]


def write_comparison_csv(comparison: Comparison, out_dir: str | Path) -> tuple[Path, Path]:
    """`compare_<run>_vs_<reference>_<level>.csv` (rows: findings, regions, micro, macro; NaN
    empty) and a `.json` beside it with the settings (policy, reports, findings left out, notes)."""
    out_dir = Path(out_dir)
    stem = f"compare_{file_stem(comparison.run)}_vs_{file_stem(comparison.reference)}_{comparison.level}"
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    fixed = {
        "run": comparison.run,
        "reference": comparison.reference,
        "level": comparison.level,
        "uncertain": comparison.uncertain,
    }

    with atomic_path(csv_path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, CSV_COLUMNS)
        writer.writeheader()
        for row in comparison_rows(comparison):
            values = {**row.__dict__, **fixed}
            writer.writerow({k: _csv_value(values[k]) for k in CSV_COLUMNS})
    with atomic_path(json_path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as stream:
        json.dump(comparison.settings(), stream, indent=2)
    return csv_path, json_path


def _csv_value(value: object) -> object:
    """An undefined metric is an empty cell; the others have 6 decimals at most."""
    if is_undefined(value):
        return ""
    return round(value, 6) if isinstance(value, float) else value


def _header(comparison: Comparison) -> list[str]:
    c = comparison
    lines = [
        f"[bold]{literal(c.run)}[/bold] vs reference [bold]{literal(c.reference)}[/bold]: {c.level} level; "
        f"uncertain -> {c.uncertain}; unmentioned = absent",
        f"{c.reports:,} reports in common ({literal(c.run)} covers {c.reports_run:,}, {literal(c.reference)} covers "
        f"{c.reports_reference:,}); {c.micro.cells:,} cells compared"
        + (f", {c.excluded:,} excluded (uncertain on either side)" if c.uncertain == "exclude" else ""),
    ]
    if c.findings_left_out:
        total = len(c.findings_left_out) + len(c.findings)
        lines.append(
            f"{len(c.findings)} of {total} vocabulary findings compared; the other "
            f"{len(c.findings_left_out)} are never present or uncertain in either run (or were not asked for)"
        )
    lines.extend(f"[yellow]note:[/yellow] {literal(note)}" for note in c.notes)
    return lines


def comparison_table(comparison: Comparison, rows: Sequence[MetricRow], first_column: str, title: str) -> Table:
    table = Table(
        first_column,
        "support",
        "tp",
        "fp",
        "fn",
        "agreement",
        "kappa",
        "precision",
        "recall",
        "F1",
        title=title,
        title_justify="left",
    )
    if comparison.uncertain == "exclude":
        table.add_column("excluded")
    for column in table.columns[1:]:
        column.justify = "right"

    def add(row: MetricRow, **style) -> None:
        cells = [
            literal(row.name),
            f"{row.support:,}",
            f"{row.tp:,}",
            f"{row.fp:,}",
            f"{row.fn:,}",
            format_number(row.agreement, percent=True),
            format_number(row.kappa),
            format_number(row.precision),
            format_number(row.recall),
            format_number(row.f1),
        ]
        if comparison.uncertain == "exclude":
            cells.append(f"{row.excluded:,}")
        table.add_row(*cells, **style)

    for row in rows:
        add(row)
    if first_column == "finding":
        table.add_section()
        add(comparison.micro, style="bold")
        add(comparison.macro, style="bold")
    return table


def _comparisons(store: Store, runs: Sequence[str], reference: str | None, options: CompareOptions) -> list[Comparison]:
    """Two runs (the second is the reference unless --reference names the first), or several runs
    each scored against --reference."""
    from labeling.review.compare import compare_runs, compare_to_reference

    if reference is None:
        if len(runs) != 2:
            raise InputError(
                f"{len(runs)} runs given: compare two runs, or name the reference of several with --reference"
            )
        return [compare_runs(store, runs[0], runs[1], options)]
    if len(runs) == 2 and reference in runs:
        return [compare_runs(store, runs[0], runs[1], options, reference=reference)]
    scored = [run for run in runs if run != reference]
    return compare_to_reference(store, scored, reference, options)


def show_comparison(
    store: Store,
    runs: Sequence[str],
    options: CompareOptions | None = None,
    *,
    reference: str | None = None,
    metric: str = "f1",
    out: str | Path | None = None,
    console: Console | None = None,
) -> dict:
    """Compare runs, print the tables, and with `out` write the CSVs and the heatmap PNG."""
    from labeling.review.compare import METRICS, CompareOptions
    from labeling.review.plots import comparison_heatmap, runs_heatmap

    options = options or CompareOptions()

    console = console or output_console()
    if metric not in METRICS:
        raise InputError(f"--metric: {metric!r} is not one of {', '.join(METRICS)}")
    out_dir = Path(out) if out is not None else None
    if out_dir is not None and not out_dir.is_dir():
        if out_dir.exists() or not out_dir.parent.is_dir():
            raise InputError(f"--out {out_dir}: not a folder (its parent must exist)")
        out_dir.mkdir()
    comparisons = _comparisons(store, list(runs), reference, options)
    files: list[Path] = []
    grid = None
    for comparison in comparisons:
        for line in _header(comparison):
            console.print(line, highlight=False)
        if len(comparisons) == 1:
            console.print(comparison_table(comparison, comparison.by_finding, "finding", "Per finding"))
            if comparison.by_region:
                # Regions where neither run says anything but "negative" only add rows of 100%.
                shown = [r for r in comparison.by_region if r.tp + r.fp + r.fn or r.agreement < 1]
                console.print(
                    comparison_table(comparison, shown, "region", "Per region (all compared findings pooled)")
                )
                if len(shown) < len(comparison.by_region):
                    console.print(
                        f"[dim]{len(comparison.by_region) - len(shown)} regions with no positive on "
                        "either side not shown (they are in the CSV)[/dim]"
                    )
        if out_dir is not None:
            files.extend(write_comparison_csv(comparison, out_dir))
    if len(comparisons) > 1:
        console.print(_runs_table(comparisons, metric))
    first = comparisons[0]
    if not first.findings:
        console.print("[yellow]no finding is present or uncertain in these runs; nothing to score[/yellow]")
    elif out_dir is not None:
        if len(comparisons) > 1:
            png = out_dir / f"compare_runs_vs_{file_stem(first.reference)}_{first.level}_{metric}.png"
            grid = runs_heatmap(comparisons, metric, png)
        else:
            suffix = f"_{metric}" if first.level == "region" else ""
            png = out_dir / f"compare_{file_stem(first.run)}_vs_{file_stem(first.reference)}_{first.level}{suffix}.png"
            grid = comparison_heatmap(first, metric, png)
        files.append(png)
    for path in files:
        console.print(f"wrote {literal(path)}")
    return {"comparisons": comparisons, "files": files, "grid": grid}


def _runs_table(comparisons: Sequence[Comparison], metric: str) -> Table:
    """Findings x runs of one metric, then each run's micro and macro."""
    first = comparisons[0]
    table = Table(
        "finding",
        *[literal(c.run) for c in comparisons],
        title=f"{metric} against {literal(first.reference)}",
        title_justify="left",
    )
    for column in table.columns[1:]:
        column.justify = "right"
    values = [c.finding_values(metric) for c in comparisons]
    percent = metric == "agreement"
    for i, finding in enumerate(first.findings):
        table.add_row(literal(finding), *[format_number(float(v[i]), percent=percent) for v in values])
    table.add_section()
    table.add_row(
        "micro", *[format_number(getattr(c.micro, metric), percent=percent) for c in comparisons], style="bold"
    )
    table.add_row(
        "macro", *[format_number(getattr(c.macro, metric), percent=percent) for c in comparisons], style="bold"
    )
    return table


def show_disagreements(
    store: Store,
    run_a: str,
    run_b: str,
    out: str | Path,
    options: QueueOptions | None = None,
    console: Console | None = None,
) -> tuple[pa.Table, int]:
    """Write the review queue and print how many cells and reports it holds, with its head."""
    from labeling.review.disagreements import QueueOptions, write_disagreements

    console = console or output_console()
    options = options or QueueOptions()
    level = options.level
    table, total = write_disagreements(store, run_a, run_b, out, options)
    reports = len(set(table["report_key"].to_pylist()))
    shown = f"{table.num_rows:,} of {total:,}" if table.num_rows < total else f"{total:,}"
    console.print(
        f"{literal(run_a)} vs {literal(run_b)} ({level} level): {shown} disagreeing cells in {reports:,} reports "
        f"-> {literal(out)}",
        highlight=False,
    )
    head = Table(
        "rank",
        "report",
        "region",
        "finding",
        literal(run_a),
        literal(run_b),
        "priority",
        title="First in the queue",
        title_justify="left",
    )
    for row in table.slice(0, 10).to_pylist():
        head.add_row(
            str(row["rank"]),
            literal(f"{row['dataset']}/{row['report_id']}"),
            literal(row["region"] or "(image)"),
            literal(row["finding"]),
            literal(row["status_a"]),
            literal(row["status_b"]),
            f"{row['priority']:.4f}",
        )
    if table.num_rows:
        console.print(head)
    return table, total


def run_export_labelstudio(
    store: Store,
    run: str,
    out_dir: str | Path,
    *,
    limit: int | None = None,
    vocabulary: str | None = None,
    enable: list[str] | None = None,
    console: Console | None = None,
) -> LabelStudioExport:
    """`clala export-labelstudio`: write the tasks and the labeling config, and say where they went."""
    from labeling.review.labelstudio import export_labelstudio

    console = console or output_console()
    written = export_labelstudio(store, run, out_dir, vocabulary=vocabulary, enable=enable, limit=limit)
    console.print(
        f"wrote {written.tasks:,} tasks with {written.labels:,} predicted labels "
        f"({written.spans:,} on evidence spans, {written.appendix:,} without evidence) "
        f"to {literal(written.tasks_path)}"
    )
    console.print(f"labeling config: {literal(written.config_path)}")
    console.print(
        "In Label Studio: create a project with this config, import the tasks, review, then "
        "export as JSON and run `clala import labelstudio FILE --name NAME`."
    )
    return written


@user_errors
def compare_command(
    runs: Annotated[
        list[str],
        typer.Argument(help="two runs (the second is the reference), or several runs scored against --reference"),
    ],
    db: DbOption = DEFAULT_DB,
    reference: Annotated[str | None, typer.Option(help="the run the others are scored against")] = None,
    level: Annotated[
        str, typer.Option(help="region (report, region, finding cells) | image (regions collapsed)")
    ] = "region",
    findings: Annotated[
        list[str] | None,
        typer.Option("--findings", help="only these findings (repeat); default: those present or uncertain in any run"),
    ] = None,
    regions: Annotated[list[str] | None, typer.Option("--regions", help="only these regions (region level)")] = None,
    uncertain: Annotated[
        str, typer.Option(help="uncertain labels: exclude | positive | negative | own-class")
    ] = "exclude",
    metric: Annotated[str, typer.Option(help="heatmap value: f1 | kappa | agreement | precision | recall")] = "f1",
    out: Annotated[Path | None, typer.Option("--out", help="folder for the CSV and heatmap PNG")] = None,
    vocabulary: VocabularyOption = None,
    roll_up: Annotated[
        bool,
        typer.Option(
            "--roll-up",
            help="a specific finding present implies its generic ancestors (consolidation -> airspace "
            "opacity -> lung opacity), in both runs",
        ),
    ] = False,
    no_location: Annotated[
        str,
        typer.Option(
            "--no-location",
            help="region level: region-less | default-regions (read labels that name no place in their "
            "finding's default regions, as rules version 7 did, in every run alike)",
        ),
    ] = "region-less",
) -> None:
    """Agreement, Cohen's kappa, precision, recall and F1 of runs against a reference, per finding and region."""
    from labeling.review.compare import CompareOptions
    from labeling.store.store import Store

    options = CompareOptions(
        level=level,
        findings=findings,
        regions=regions,
        uncertain=uncertain,
        vocabulary=str(vocabulary) if vocabulary else None,
        roll_up=roll_up,
        no_location=no_location,
    )
    with Store(db, read_only=True) as store:
        show_comparison(store, runs, options, reference=reference, metric=metric, out=out)


@user_errors
def disagreements_command(
    run_a: Annotated[str, typer.Argument(help="run name or id")],
    run_b: Annotated[str, typer.Argument(help="run name or id")],
    out: Annotated[Path, typer.Option("--out", help="review queue file (.csv or .jsonl)")],
    db: DbOption = DEFAULT_DB,
    level: Annotated[str, typer.Option(help="region | image")] = "region",
    findings: Annotated[list[str] | None, typer.Option("--findings", help="only these findings (repeat)")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many cells (the queue's head)")] = None,
    vocabulary: VocabularyOption = None,
) -> None:
    """A review queue of the cells two runs disagree on, the decisions that matter most first."""
    from labeling.review.disagreements import QueueOptions
    from labeling.store.store import Store

    options = QueueOptions(
        level=level, findings=findings, limit=limit, vocabulary=str(vocabulary) if vocabulary else None
    )
    with Store(db, read_only=True) as store:
        show_disagreements(store, run_a, run_b, out, options)


@user_errors
def export_labelstudio_command(
    run: Annotated[str, typer.Argument(help="run name or id")],
    out: Annotated[Path, typer.Option("--out", help="folder for tasks.json and labeling_config.xml")],
    db: DbOption = DEFAULT_DB,
    limit: Annotated[int | None, typer.Option(help="at most this many reports")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
) -> None:
    """Write a run's labels as Label Studio pre-annotated tasks, with the labeling config."""
    from labeling.store.store import Store

    with Store(db, read_only=True) as store:
        run_export_labelstudio(
            store, run, out, limit=limit, vocabulary=str(vocabulary) if vocabulary else None, enable=enable or []
        )
