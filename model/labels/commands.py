"""CLI view of `clala derive`: store a label spec's matrix as a derived run and show what the
corruptions did and, given a reference, the derived labels' quality."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from labeling.core.cli_options import DEFAULT_DB, DbOption, VocabularyOption, user_errors
from labeling.core.terminal import output_console
from model.labels.label_specs import DerivedRun, LabelQuality, LabelSpec, save_derived_run


def _fmt(value: float) -> str:
    return "—" if value != value else f"{value:.3f}"


def quality_table(quality: LabelQuality) -> Table:
    table = Table(
        "level",
        "precision",
        "recall",
        "F1",
        "kappa",
        "tp",
        "fp",
        "fn",
        title=Text(
            f"Quality against {quality.reference} ({quality.reports:,} reports, "
            f"{len(quality.findings)} findings, uncertain: {quality.policy})"
        ),
        title_justify="left",
    )
    for level, values in (("region", quality.region), ("image", quality.image)):
        table.add_row(
            level,
            *(_fmt(values[k]) for k in ("precision", "recall", "f1", "kappa")),
            *(f"{values[k]:,}" for k in ("tp", "fp", "fn")),
        )
    return table


def run_derive(
    db: str | Path,
    source: str,
    name: str,
    uncertain: str = "ignore",
    drop: float = 0.0,
    add: float = 0.0,
    shift: float = 0.0,
    shift_side: str = "same",
    keep: float = 1.0,
    seed: int = 0,
    reference: str | None = None,
    vocabulary: str | None = None,
    console: Console | None = None,
) -> DerivedRun:
    console = console or output_console()
    spec = LabelSpec.checked(
        source=source, uncertain=uncertain, drop=drop, add=add, shift=shift, shift_side=shift_side, keep=keep, seed=seed
    )
    result = save_derived_run(db, spec, name, reference, vocabulary)
    c = result.counts
    statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(result.statuses.items())) or "none"
    console.print(
        f"run [bold]{escape(result.name)}[/bold] (derived from {escape(spec.describe())}): "
        f"{c.reports_kept:,} of {c.reports_source:,} reports, {result.labels:,} labels ({statuses})",
        emoji=False,
    )
    console.print(
        f"present labels {c.present:,}: dropped {c.dropped:,}, shifted {c.shifted:,} "
        f"(of {c.shift_eligible:,} with a neighbour), added {c.added:,} (of {c.add_candidates:,} "
        f"allowed cells); uncertain left out of training {c.uncertain_masked:,}"
    )
    for note in result.notes:
        console.print(f"note: {escape(note)}", emoji=False)
    if result.quality:
        console.print(quality_table(result.quality))
    return result


@user_errors
def derive_command(
    run: Annotated[str, typer.Argument(help="source run name or id")],
    name: Annotated[str, typer.Option(help="name of the new derived run")],
    db: DbOption = DEFAULT_DB,
    uncertain: Annotated[
        str,
        typer.Option(
            help="uncertain labels become: positive | negative | ignore (kept uncertain, left out of training)"
        ),
    ] = "ignore",
    drop: Annotated[float, typer.Option(help="rate at which present labels are omitted")] = 0.0,
    add: Annotated[float, typer.Option(help="rate at which allowed absent/unmentioned cells turn present")] = 0.0,
    shift: Annotated[float, typer.Option(help="rate at which present labels move to a neighbouring region")] = 0.0,
    shift_side: Annotated[
        str, typer.Option("--shift-side", help="same (adjacent zone, same side) | other (mirror region)")
    ] = "same",
    keep: Annotated[float, typer.Option(help="fraction of the source's reports kept labeled")] = 1.0,
    seed: Annotated[int, typer.Option(help="the same seed gives the same labels")] = 0,
    reference: Annotated[str | None, typer.Option(help="run to measure the derived labels against")] = None,
    vocabulary: VocabularyOption = None,
) -> None:
    """Store a run's labels after an uncertainty policy and seeded corruptions as a derived run."""
    from model.labels.commands import run_derive

    run_derive(
        db,
        run,
        name,
        uncertain,
        drop,
        add,
        shift,
        shift_side,
        keep,
        seed,
        reference,
        str(vocabulary) if vocabulary else None,
    )
