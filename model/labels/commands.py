"""CLI view of `clala derive`: store a label spec's matrix as a derived run and show what the
corruptions did and, given a reference, the derived labels' quality."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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
