"""`clala synth`: generate a cohort with a progress bar, then say what was written."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from labeling.core.cli_options import user_errors
from labeling.core.formatting import format_counts
from labeling.core.terminal import literal, output_console


def run_synth(
    out: Path,
    n: int,
    seed: int,
    *,
    size: int = 256,
    image_format: str = "png",
    prevalence: list[str] | None = None,
    workers: int = 1,
    console: Console | None = None,
) -> Path:
    """Write the cohort with a progress bar, then print its summary and what to run next."""
    from model.synth.writer import generate_cohort, parse_prevalence

    console = console or output_console()
    rates = parse_prevalence(prevalence)
    with Progress(
        TextColumn("synth"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("studies", total=n)
        generate_cohort(
            out,
            n,
            seed,
            size=size,
            image_format=image_format,
            prevalence=rates,
            workers=workers,
            progress=lambda done: progress.update(task, completed=done),
        )
    console.print(f"wrote {n:,} studies to {literal(out)} (seed {seed}, {size} px, {literal(image_format)})")
    for key, value in summarize(out).items():
        console.print(f"  {key}: {literal(value)}")
    console.print(
        f"next: clala ingest {literal(out / 'files')} --format mimic --db DB; "
        f"clala import synth-gold {literal(out)} --name NAME --db DB"
    )
    return out


def summarize(out: Path) -> dict[str, str]:
    """Split sizes and truth counts, read back from the written gold."""
    from model.synth.writer import COHORT_FILE, GOLD_FILE

    records = [json.loads(line) for line in (out / GOLD_FILE).read_text(encoding="utf-8").splitlines() if line]
    splits = Counter(record["split"] for record in records)
    lesions = [lesion for record in records for lesion in record["image_truth"]]
    statements = [statement for record in records for statement in record["report_truth"]]
    by_status = Counter(statement["status"] for statement in statements)
    unreported = sum(not lesion["reported"] for lesion in lesions)
    subtle = sum(lesion["subtle"] for lesion in lesions)
    return {
        "splits": format_counts(splits, empty=""),
        "images to avoid": f"{sum(record['avoid'] for record in records):,}",
        "image truth": f"{len(lesions):,} lesions ({unreported:,} unreported, {subtle:,} subtle)",
        "report truth": f"{len(statements):,} statements ({format_counts(by_status, empty='')})",
        "gold": str(out / GOLD_FILE),
        "cohort": str(out / COHORT_FILE),
    }


@user_errors
def synth_command(
    n: Annotated[int, typer.Option("--n", help="number of studies")] = 200,
    out: Annotated[Path, typer.Option("--out", help="new folder for the cohort")] = Path("synth-cohort"),
    seed: Annotated[int, typer.Option(help="the same seed writes the same cohort")] = 0,
    size: Annotated[int, typer.Option(help="image height in pixels (width varies, 82-100% of it)")] = 256,
    image_format: Annotated[str, typer.Option("--format", help="png | jpg")] = "png",
    prevalence: Annotated[
        list[str] | None, typer.Option(help="FINDING=RATE (repeatable) or a JSON object; findings as in the vocabulary")
    ] = None,
    workers: Annotated[int, typer.Option(help="processes drawing studies")] = 1,
) -> None:
    """Write a synthetic cohort (phantom images, reports, scene graphs, splits, gold) in the real layouts."""
    run_synth(out, n, seed, size=size, image_format=image_format, prevalence=prevalence or [], workers=workers)
