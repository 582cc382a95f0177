"""`clala derive`: store a label spec's matrix as a derived run and show what the corruptions did
and, given a reference, the derived labels' quality."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from labeling.core.cli_options import DEFAULT_DB, DbOption, VocabularyOption, user_errors
from labeling.core.formatting import format_counts, format_number
from labeling.core.terminal import literal, visible

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from labeling.store.run_records import RunResult
    from model.labels.label_specs import LabelQuality


def quality_table(quality: LabelQuality) -> Table:
    from rich.table import Table
    from rich.text import Text

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
            visible(
                f"Quality against {quality.reference} ({quality.reports:,} reports, "
                f"{len(quality.findings)} findings, uncertain: {quality.policy})"
            )
        ),
        title_justify="left",
    )
    for level, values in (("region", quality.region), ("image", quality.image)):
        table.add_row(
            level,
            *(format_number(values[k]) for k in ("precision", "recall", "f1", "kappa")),
            *(f"{values[k]:,}" for k in ("tp", "fp", "fn")),
        )
    return table


def show_derived_run(result: RunResult, console: Console) -> None:
    """What `clala derive` prints about the run it stored."""
    c, spec, quality = result.counts, result.details["spec"], result.details["quality"]
    console.print(
        f"run [bold]{literal(result.name)}[/bold] (derived from {literal(spec.describe())}): "
        f"{c['reports_kept']:,} of {c['reports_source']:,} reports, {result.labels:,} labels "
        f"({format_counts(result.statuses)})",
        emoji=False,
    )
    console.print(
        f"present labels {c['present']:,}: dropped {c['dropped']:,}, shifted {c['shifted']:,} "
        f"(of {c['shift_eligible']:,} with a neighbour), added {c['added']:,} (of {c['add_candidates']:,} "
        f"allowed cells); uncertain left out of training {c['uncertain_masked']:,}"
    )
    fixed = result.details.get("corrections")
    if fixed:
        console.print(
            f"corrections from {literal(fixed['run'])}: {fixed['applied_reports']:,} reviewed reports replace the "
            f"source's cells ({fixed['cells_changed']:,} cells changed: {fixed['present_added']:,} made present, "
            f"{fixed['present_removed']:,} no longer present)"
        )
    for note in result.details["notes"]:
        console.print(f"note: {literal(note)}", emoji=False)
    if quality:
        console.print(quality_table(quality))


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
    corrections: Annotated[
        str | None,
        typer.Option(help="reviewed run (e.g. a Label Studio import): its reports' cells replace the source's"),
    ] = None,
    vocabulary: VocabularyOption = None,
) -> None:
    """Store a run's labels after an uncertainty policy and seeded corruptions (and, given
    --corrections, a reviewed run's cells on top) as a derived run."""
    from labeling.core.terminal import output_console
    from labeling.store.store import Store
    from model.labels.label_specs import DeriveRequest, LabelSpec, derive_run

    spec = LabelSpec.checked(
        source=run, uncertain=uncertain, drop=drop, add=add, shift=shift, shift_side=shift_side, keep=keep, seed=seed
    )
    request = DeriveRequest(name, spec, reference, str(vocabulary) if vocabulary else None, corrections)
    with Store.open_existing(db) as store:
        result = derive_run(store, request)
    show_derived_run(result, output_console())
