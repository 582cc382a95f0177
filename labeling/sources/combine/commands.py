"""`clala combine`: several runs combined into a derived run, with a progress bar over the
findings and a table of each source's estimated quality per finding."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from labeling.core.cli_options import DEFAULT_DB, DbOption, VocabularyOption, user_errors
from labeling.core.formatting import format_counts
from labeling.core.terminal import error_console, literal, output_console, visible

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from labeling.store.run_records import RunResult


def confusion_table(result: RunResult, show: int) -> Table:
    """Per finding (the `show` with most combined present cells) and source: how often it says
    present when the cell is present, absent or unmentioned, and unmentioned when present."""
    from rich.table import Table
    from rich.text import Text

    from labeling.sources.combine.cells import CLASSES

    present, absent, unmentioned = (CLASSES.index(c) for c in ("present", "absent", "unmentioned"))
    table = Table(
        "finding",
        "level",
        "source",
        "P(present | present)",
        "P(unmentioned | present)",
        "P(present | absent)",
        "P(present | unmentioned)",
        "prior present",
        title=Text(visible(f"Estimated source quality ({result.details['method']}; rows: true class of the cell)")),
        title_justify="left",
    )
    shown = [f for f, _ in result.details["present_by_finding"].most_common(show)]
    for level in ("region", "image"):
        for finding in shown:
            matrices = result.details["confusion"][level].get(finding)
            if not matrices:
                continue
            prior = result.details["priors"][level][finding][present]
            for source, matrix in matrices.items():
                table.add_row(
                    Text(visible(finding)),
                    level,
                    Text(visible(source)),
                    f"{matrix[present][present]:.3f}",
                    f"{matrix[present][unmentioned]:.3f}",
                    f"{matrix[absent][present]:.3f}",
                    f"{matrix[unmentioned][present]:.3f}",
                    f"{prior:.4f}",
                )
    return table


def show_combined_run(result: RunResult, console: Console, show: int) -> None:
    sources = ", ".join(f"{s['name']} ({s['level']})" for s in result.details["sources"])
    console.print(
        f"run [bold]{literal(result.name)}[/bold] ({result.details['method']} of {literal(sources)}): "
        f"[green]{result.status.value}[/green] in {result.seconds:.1f} s; {result.reports:,} reports, "
        f"{result.counts['findings']:,} findings, {result.labels:,} labels ({format_counts(result.statuses)})"
    )
    for reason, count in result.skipped.counts.items():
        console.print(f"[yellow]left out[/yellow] {count:,}: {literal(reason)}")
    console.print(confusion_table(result, show))
    console.print(f"all matrices: clala runs show {literal(result.name)} (params: confusion, priors)")


@user_errors
def combine_command(
    runs: Annotated[list[str], typer.Argument(help="two or more source runs (names or ids)")],
    name: Annotated[str, typer.Option(help="name of the new derived run")],
    method: Annotated[str, typer.Option(help="majority | dawid-skene")] = "dawid-skene",
    db: DbOption = DEFAULT_DB,
    iterations: Annotated[int, typer.Option(help="Dawid-Skene: most EM iterations")] = 100,
    tolerance: Annotated[float, typer.Option(help="Dawid-Skene: stop when the likelihood gains less")] = 1e-5,
    show: Annotated[int, typer.Option(min=0, help="findings shown in the quality table (most present first)")] = 10,
    vocabulary: VocabularyOption = None,
) -> None:
    """Combine several runs cell by cell (majority vote or Dawid-Skene) into a derived run, with
    each source's estimated confusion matrix per finding."""
    from collections import Counter

    from pydantic import ValidationError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from labeling.core.errors import InputError
    from labeling.sources.combine.combine import CombineRequest, combine_runs
    from labeling.store.run_records import RunHooks
    from labeling.store.store import Store

    try:
        request = CombineRequest(
            name=name,
            runs=runs,
            method=method,
            vocabulary=str(vocabulary) if vocabulary else None,
            iterations=iterations,
            tolerance=tolerance,
        )
    except ValidationError as exc:
        raise InputError(f"invalid option: {' '.join(str(exc).split())}") from None
    progress = Progress(
        TextColumn("[bold]combine[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("findings"),
        TimeElapsedColumn(),
        console=error_console(),
        transient=True,
    )
    with Store.open_existing(db) as store, progress:
        task = progress.add_task("", total=None)
        hooks = RunHooks(
            started=lambda result: progress.update(task, total=result.counts["findings"]),
            advanced=lambda result, n: progress.update(task, advance=n),
        )
        result = combine_runs(store, request, hooks=hooks)
        labels = store.labels(result.name)
    present = [f for f, s in zip(labels["finding"].to_pylist(), labels["status"].to_pylist()) if s == "present"]
    result.details["present_by_finding"] = Counter(present)
    show_combined_run(result, output_console(), show)
