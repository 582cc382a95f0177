"""`clala sample` (a review sample of a run's cells, stored with its inclusion probabilities, and
its Label Studio tasks) and `clala estimate` (the run's precision, recall and F1 from the reviewed
sample, stored with the run); `estimates_table` is what `clala runs show` prints of them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from labeling.core.cli_options import DEFAULT_DB, DbOption, VocabularyOption, user_errors
from labeling.core.terminal import error_console, literal, output_console, visible

if TYPE_CHECKING:
    from rich.table import Table

    from labeling.review.sample import Sample


def _vocabulary(path: Path | None):
    from labeling.core.errors import InputError
    from schemas.vocabulary import load_vocabulary

    try:
        return load_vocabulary(str(path) if path else None)
    except (ValueError, FileNotFoundError) as exc:
        raise InputError(f"--vocabulary: {exc}") from None


def _interval(metric: dict[str, Any], method: str) -> str:
    low, high = metric.get(method) or metric["wilson"]  # estimates stored before the beta interval
    value = "-" if metric["estimate"] is None else f"{metric['estimate']:.3f}"
    return f"{value} [{low:.3f}, {high:.3f}]"


def strata_table(sample: Sample, show: int) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table("stratum", "cells", "sampled", "pi", title="Strata (largest first)", title_justify="left")
    for row in sorted(sample.strata, key=lambda s: -s["cells"])[:show]:
        pi = "-" if row["pi"] is None else f"{row['pi']:.4g}"
        table.add_row(Text(visible(row["stratum"])), f"{row['cells']:,}", f"{row['sampled']:,}", pi)
    return table


@user_errors
def sample_command(
    run: Annotated[str, typer.Argument(help="run name or id")],
    n: Annotated[int, typer.Option("--n", help="cells to sample (suspicion: on average)")],
    strategy: Annotated[str, typer.Option(help="uniform | stratified | suspicion")] = "stratified",
    seed: Annotated[int, typer.Option(help="random seed; the same seed gives the same sample")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", help="folder for tasks.json, labeling_config.xml, sample_cells.csv")
    ] = None,
    suspicion: Annotated[
        Path | None, typer.Option("--suspicion", help="audit queue CSV (report_key, region, finding, suspicion)")
    ] = None,
    floor: Annotated[float, typer.Option(help="suspicion: share of the probability spread uniformly")] = 0.2,
    present_share: Annotated[
        float, typer.Option("--present-share", help="stratified: share of --n for predicted-present cells")
    ] = 0.5,
    suspect: Annotated[
        str | None,
        typer.Option(
            "--suspect",
            help="stratified: another run; the predicted-negative cells it marks present get their own strata "
            "(oversampled: --suspect-share), where the misses are likely",
        ),
    ] = None,
    suspect_share: Annotated[
        float, typer.Option("--suspect-share", help="stratified: share of the predicted-negative cells' n for suspects")
    ] = 0.5,
    all_findings: Annotated[
        bool, typer.Option("--all-findings", help="every vocabulary finding, not only those the run labels")
    ] = False,
    show: Annotated[int, typer.Option(min=0, help="strata shown")] = 10,
    db: DbOption = DEFAULT_DB,
    vocabulary: VocabularyOption = None,
) -> None:
    """Draw a review sample of a run's cells (each with its inclusion probability), store it, and
    write Label Studio tasks for the sampled reports."""
    from labeling.review.sample import SampleRequest, sample_run
    from labeling.review.sample_tasks import check_out_dir, write_sample_files
    from labeling.store.store import Store

    request = SampleRequest(
        run=run,
        n=n,
        strategy=strategy,
        seed=seed,
        all_findings=all_findings,
        present_share=present_share,
        suspicion=suspicion,
        floor=floor,
        suspect_run=suspect,
        suspect_share=suspect_share,
    )
    request.check()
    if out is not None:
        check_out_dir(out)
    vocab = _vocabulary(vocabulary)
    console = output_console()
    with Store.open_existing(db) as store:
        with store.transaction():  # the sample is stored only if its files are written
            sample = sample_run(store, request, vocab)
            files = write_sample_files(store, sample, out, vocab) if out is not None else None
    p = sample.population
    console.print(
        f"sample [bold]{sample.sample_id}[/bold] of run [bold]{literal(p.run.name)}[/bold] ({sample.strategy}, "
        f"seed {sample.seed}): {len(sample.index):,} of {p.size:,} cells ({p.reports:,} reports x "
        f"{len(p.finding_names)} findings' allowed regions) in {len(set(p.report_keys[sample.index])):,} reports"
    )
    console.print(strata_table(sample, show))
    if files is not None:
        console.print(
            f"{files.tasks:,} Label Studio tasks: {literal(files.tasks_path)} (config {literal(files.config_path)}); "
            f"cells and inclusion probabilities: {literal(files.cells_path)}"
        )
        console.print(
            "review them, export the project as JSON, then: clala import labelstudio EXPORT.json --name REVIEWED; "
            f"clala estimate {literal(p.run.name)} --reviewed REVIEWED"
        )


def estimate_table(result: dict[str, Any], method: str, title: str) -> Table:
    """Precision, recall and F1 with intervals, overall and per finding."""
    from rich.table import Table
    from rich.text import Text

    table = Table(
        "finding",
        "sampled",
        "tp",
        "fp",
        "fn",
        "precision",
        "recall",
        "F1",
        title=Text(visible(title)),
        title_justify="left",
    )
    rows = [("overall (micro)", result["overall"]), *result["by_finding"].items()]
    for name, block in rows:
        counts = block["sampled"]
        table.add_row(
            Text(visible(name)),
            f"{counts['cells']:,}",
            f"{counts['tp']:,}",
            f"{counts['fp']:,}",
            f"{counts['fn']:,}",
            *(_interval(block[m], method) for m in ("precision", "recall", "f1")),
        )
    return table


@user_errors
def estimate_command(
    run: Annotated[str, typer.Argument(help="run name or id")],
    reviewed: Annotated[str, typer.Option("--reviewed", help="the reviewed run (clala import labelstudio)")],
    sample: Annotated[int | None, typer.Option("--sample", help="sample id (default: the run's latest)")] = None,
    uncertain: Annotated[str, typer.Option(help="negative | positive: how uncertain counts")] = "negative",
    interval: Annotated[
        str, typer.Option(help="interval shown: beta | jeffreys | wilson | bootstrap (all are stored)")
    ] = "beta",
    max_width: Annotated[
        float, typer.Option("--max-width", help="an overall interval wider than this: say the sample cannot tell")
    ] = 0.2,
    confidence: Annotated[float, typer.Option(help="interval level")] = 0.95,
    replicates: Annotated[int, typer.Option(help="bootstrap replicates")] = 1000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Estimate a run's precision, recall and F1 (per finding and overall, with intervals) from a
    reviewed sample of its cells, and store the estimate with the run."""
    from rich.text import Text

    from labeling.core.errors import InputError
    from labeling.review.estimate import INTERVALS, EstimateRequest, estimate_run
    from labeling.store.store import Store

    if interval not in INTERVALS:
        raise InputError(f"--interval: {interval!r} is not one of {', '.join(INTERVALS)}")
    request = EstimateRequest(
        run=run,
        reviewed=reviewed,
        sample_id=sample,
        uncertain=uncertain,
        confidence=confidence,
        replicates=replicates,
        seed=seed,
        max_width=max_width,
    )
    request.check()
    progress = error_console()
    with Store.open_existing(db) as store:
        with progress.status("estimating (beta draws, bootstrap replicates)"):
            estimate = estimate_run(store, request)
    result = estimate.result
    title = (
        f"Estimate {estimate.estimate_id}: run {result['run']} from sample {result['sample_id']} "
        f"({result['strategy']}, {result['cells']:,} cells in {result['reports']:,} reports) reviewed as "
        f"{result['reviewed']}; uncertain {result['uncertain']}; {interval} {confidence:.0%} intervals"
    )
    console = output_console()
    console.print(estimate_table(result, interval, title))
    for line in result["cannot_tell"]:  # the beta interval's verdict, whatever interval is shown
        console.print(Text(visible(line["message"])))


def estimates_table(estimates: list[dict[str, Any]]) -> Table:
    """A run's stored estimates, one row each (overall, micro), for `clala runs show`."""
    from rich.table import Table
    from rich.text import Text

    table = Table(
        "estimate",
        "sample",
        "strategy",
        "reviewed",
        "cells",
        "level",
        "precision",
        "recall",
        "F1",
        "F1 (Wilson)",
        title="Estimates from reviewed samples (overall, micro)",
        title_justify="left",
    )
    for row in estimates:
        overall, result = row["result"]["overall"], row["result"]
        table.add_row(
            str(row["estimate_id"]),
            str(row["sample_id"]),
            Text(visible(row["strategy"] or "-")),
            Text(visible(row["reviewed_run"] or f"run {row['reviewed_run_id']} (gone)")),
            f"{result.get('cells', 0):,}",
            f"{result.get('confidence', 0.95):.0%}",
            _interval(overall["precision"], "beta"),
            _interval(overall["recall"], "beta"),
            _interval(overall["f1"], "beta"),
            _interval(overall["f1"], "wilson"),
        )
    return table
