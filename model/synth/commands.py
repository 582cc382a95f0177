"""CLI view of `clala synth`: generate a cohort with a progress bar, then say what was written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from labeling.core.cli_options import user_errors
from labeling.core.terminal import output_console
from model.synth.writer import COHORT_FILE, GOLD_FILE, generate_cohort, parse_prevalence


def run_synth(
    out: Path,
    n: int,
    seed: int,
    size: int = 256,
    image_format: str = "png",
    prevalence: list[str] | None = None,
    workers: int = 1,
    console: Console | None = None,
) -> Path:
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
    summary = summarize(out)
    console.print(f"wrote {n:,} studies to {out} (seed {seed}, {size} px, {image_format})")
    for key, value in summary.items():
        console.print(f"  {key}: {value}")
    console.print(
        f"next: clala ingest {out / 'files'} --format mimic --db DB; clala import synth-gold {out} --name NAME --db DB"
    )
    return out


def summarize(out: Path) -> dict[str, str]:
    """Split sizes and truth counts, read back from the written gold."""
    records = [json.loads(line) for line in (out / GOLD_FILE).read_text(encoding="utf-8").splitlines() if line]
    splits: dict[str, int] = {}
    for r in records:
        splits[r["split"]] = splits.get(r["split"], 0) + 1
    lesions = [lesion for r in records for lesion in r["image_truth"]]
    statements = [s for r in records for s in r["report_truth"]]
    by_status: dict[str, int] = {}
    for s in statements:
        by_status[s["status"]] = by_status.get(s["status"], 0) + 1
    return {
        "splits": ", ".join(f"{k} {v:,}" for k, v in sorted(splits.items())),
        "images to avoid": f"{sum(r['avoid'] for r in records):,}",
        "image truth": f"{len(lesions):,} lesions ({sum(not l['reported'] for l in lesions):,} unreported, "
        f"{sum(l['subtle'] for l in lesions):,} subtle)",
        "report truth": f"{len(statements):,} statements ("
        + ", ".join(f"{k} {v:,}" for k, v in sorted(by_status.items()))
        + ")",
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
    from model.synth.commands import run_synth

    run_synth(out, n, seed, size, image_format, prevalence or [], workers)
