"""CLI views of label runs: labeling with a progress bar, dry runs, runs, failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from labeling.core.cli_options import (
    DEFAULT_DB,
    ClalaError,
    DbOption,
    EnableOption,
    VocabularyOption,
    user_errors,
)
from labeling.core.terminal import output_console
from labeling.sources.llm.run import DryRun, LabelOptions, RunSummary, dry_run, label_reports
from labeling.sources.rules.run import RulesSummary, label_with_rules
from labeling.store.store import Store


def _stats_line(summary: RunSummary) -> str:
    rate = summary.completion_tokens / summary.seconds if summary.seconds else 0.0
    return (
        f"calls {summary.model_calls:,}  cache hits {summary.cache_hits:,}  failures {summary.unit_failures:,}  "
        f"{rate:,.1f} tok/s"
    )


def _resumes_rules_run(db: str | Path, resume: str | None) -> bool:
    if not resume:
        return False
    with Store(db, read_only=True) as store:
        return store.run(resume).kind.value == "rules"


def run_label(
    db: str | Path,
    name: str | None,
    options: LabelOptions,
    resume: str | None = None,
    allow_remote: bool = False,
    console: Console | None = None,
) -> RunSummary | RulesSummary:
    if options.backend == "rules" or _resumes_rules_run(db, resume):
        return run_rules_label(db, name, options, resume, console)
    console = console or output_console()
    err = Console(stderr=True)
    with Progress(
        TextColumn("[bold]label[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("reports"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("starting the backend ...", total=None)

        def started(summary: RunSummary) -> None:
            progress.update(task, total=summary.reports, description=f"run {summary.name}")

        def advanced(summary: RunSummary, n: int) -> None:
            progress.update(task, advance=n, description=_stats_line(summary))

        summary = label_reports(db, name, options, resume, allow_remote, on_progress=advanced, on_start=started)
    colour = "green" if summary.status.value == "complete" else "yellow"
    console.print(
        f"run [bold]{summary.name}[/bold]: [{colour}]{summary.status.value}[/{colour}] in {summary.seconds:.1f} s"
    )
    console.print(
        f"reports done {summary.reports_done:,}, failed {summary.reports_failed:,}, pending "
        f"{summary.reports_pending:,}; labels {summary.labels:,}; {_stats_line(summary)}; tokens "
        f"{summary.prompt_tokens:,} prompt + {summary.completion_tokens:,} completion"
    )
    if summary.rejected:
        console.print("rejected labels: " + ", ".join(f"{k} {v:,}" for k, v in summary.rejected.items()))
    if summary.stopped_because:
        console.print(f"[yellow]stopped:[/yellow] {summary.stopped_because}")
    if summary.reports_pending:
        console.print(f"finish it with: clala label --resume {summary.name} --db {db}")
    if summary.reports_failed:
        console.print(f"see why: clala failures {summary.name} --db {db}")
    return summary


def run_rules_label(
    db: str | Path, name: str | None, options: LabelOptions, resume: str | None = None, console: Console | None = None
) -> RulesSummary:
    """`clala label --backend rules`: the same report selection as LLM runs, labeled by rules."""
    from labeling.sources.llm.run import select_reports

    console = console or output_console()
    err = Console(stderr=True)
    with Progress(
        TextColumn("[bold]rules[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("reports"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("building the pipeline ...", total=None)

        def started(summary: RulesSummary) -> None:
            progress.update(
                task, total=summary.reports, completed=summary.reports_done, description=f"run {summary.name}"
            )

        def advanced(summary: RulesSummary, n: int) -> None:
            progress.update(task, advance=n, description=f"{summary.distinct_sentences:,} distinct sentences")

        summary = label_with_rules(
            db,
            name,
            lambda store: select_reports(store, options),
            options.vocabulary,
            options.enable,
            resume,
            on_start=started,
            on_progress=advanced,
        )
    rate = summary.reports_done / summary.seconds if summary.seconds else 0.0
    console.print(
        f"run [bold]{summary.name}[/bold]: [green]{summary.status.value}[/green] in {summary.seconds:.1f} s "
        f"({rate:,.0f} reports/s)"
    )
    statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(summary.statuses.items())) or "none"
    console.print(
        f"reports {summary.reports_done:,}; sentences read {summary.sentences:,} "
        f"({summary.distinct_sentences:,} distinct); labels {summary.labels:,} ({statuses})"
    )
    if summary.skipped_context:
        console.print(
            "not labeled (ConText): " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary.skipped_context.items()))
        )
    return summary


def show_dry_run(db: str | Path, options: LabelOptions, console: Console | None = None) -> DryRun:
    console = console or output_console()
    plan = dry_run(db, options)
    table = Table("", "count", title="Dry run (no model called)", title_justify="left")
    share = plan.calls_needed / plan.sentences if plan.sentences else 0.0
    for label, value in [
        ("reports", plan.reports),
        (f"{options.unit} occurrences", plan.sentences),
        ("unique units", plan.units),
        ("cache hits", plan.cache_hits),
        ("model calls needed", plan.calls_needed),
        ("est. prompt tokens", plan.est_prompt_tokens),
        ("est. completion tokens", plan.est_completion_tokens),
    ]:
        table.add_row(label, f"{value:,}")
    console.print(table)
    console.print(f"model calls per {options.unit}: {share:.3f}")
    return plan


def show_runs(db: str | Path, console: Console | None = None) -> list[dict]:
    console = console or output_console()
    with Store(db, read_only=True) as store:
        rows = store.run_counts()
        models = {r.run_id: (r.backend or "", r.model or "") for r in store.runs()}
    table = Table(
        "id",
        "name",
        "kind",
        "status",
        "backend",
        "model",
        "reports",
        "labels",
        "failures",
        title="Runs",
        title_justify="left",
    )
    for r in rows:
        backend, model = models[r["run_id"]]
        table.add_row(
            str(r["run_id"]),
            r["name"],
            r["kind"],
            r["status"],
            backend,
            model,
            f"{r['reports']:,}",
            f"{r['labels']:,}",
            f"{r['failures']:,}",
        )
    console.print(table)
    return rows


def show_run(db: str | Path, run: str, console: Console | None = None) -> dict:
    console = console or output_console()
    with Store(db, read_only=True) as store:
        info = store.run(run)
        work = store.work_counts(info.run_id)
        rejected = store.rejection_counts(info.run_id)
        labels = store.con.execute(
            "SELECT status, count(*) FROM labels WHERE run_id = ? GROUP BY ALL", [info.run_id]
        ).fetchall()
    shown = info.model_dump(mode="json")
    shown["params"] = json.dumps(shown["params"])
    shown["decoding"] = json.dumps(shown["decoding"])
    table = Table("field", "value", title=f"Run {info.name}", title_justify="left")
    for key, value in shown.items():
        table.add_row(key, "" if value is None else str(value))
    table.add_row("work", ", ".join(f"{k} {v:,}" for k, v in sorted(work.items())) or "-")
    table.add_row("labels", ", ".join(f"{k} {v:,}" for k, v in sorted(labels)) or "-")
    table.add_row("rejected labels", ", ".join(f"{k} {v:,}" for k, v in rejected.items()) or "-")
    console.print(table)
    return {"run": info, "work": work, "rejected": rejected}


def show_failures(db: str | Path, run: str, limit: int = 50, console: Console | None = None) -> list[dict]:
    console = console or output_console()
    with Store(db, read_only=True) as store:
        rows = store.failures(run)
    table = Table("report", "error", "raw output", title=f"Failures of {run} ({len(rows):,})", title_justify="left")
    for row in rows[:limit]:
        raw = row["raw_output"] or ""
        table.add_row(
            f"{row['dataset']}/{row['report_id']}", row["error"], raw[:300] + ("..." if len(raw) > 300 else "")
        )
    console.print(table)
    return rows


@user_errors
def label_command(
    db: DbOption = DEFAULT_DB,
    name: Annotated[str | None, typer.Option(help="run name (default: backend-model-time)")] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="local (embedded llama.cpp server) | openai (any OpenAI-compatible "
            "server) | vllm (in-process, GPU) | rules (medspaCy, no model)"
        ),
    ] = "local",
    base_url: Annotated[
        list[str] | None,
        typer.Option("--base-url", help="server URL, e.g. http://127.0.0.1:8000/v1; repeat to spread load"),
    ] = None,
    model: Annotated[str | None, typer.Option(help="model name on the server (openai, vllm)")] = None,
    model_path: Annotated[Path | None, typer.Option("--model-path", help="GGUF file for --backend local")] = None,
    api_key_env: Annotated[
        str, typer.Option("--api-key-env", help="environment variable holding the API key")
    ] = "OPENAI_API_KEY",
    structured_output: Annotated[
        str, typer.Option("--structured-output", help="auto | json_schema | llama_cpp | none")
    ] = "auto",
    unit: Annotated[str, typer.Option(help="sentence | report")] = "sentence",
    context: Annotated[int, typer.Option(help="neighbouring sentences sent as context")] = 0,
    prompt: Annotated[str, typer.Option(help="prompt template name (clala prompts list)")] = "region_labels",
    samples: Annotated[int, typer.Option(help="answers per unit; confidence = agreement")] = 1,
    temperature: Annotated[float | None, typer.Option(help="default 0, or 0.7 with --samples > 1")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
    max_retries: Annotated[int, typer.Option("--max-retries", help="re-asks of an invalid answer")] = 2,
    timeout: Annotated[float, typer.Option(help="seconds per request")] = 120.0,
    concurrency: Annotated[int, typer.Option(help="requests in flight")] = 4,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="reports per committed batch (at least --concurrency)")
    ] = 16,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="ask the model even for cached units")] = False,
    dataset: Annotated[str | None, typer.Option(help="only this dataset's reports")] = None,
    report: Annotated[list[str] | None, typer.Option("--report", help="only these report ids")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many reports")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="allow sending reports to a server that is not on this machine")
    ] = False,
    resume: Annotated[str | None, typer.Option(help="finish an interrupted run")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count units, cache hits and tokens; call nothing")
    ] = False,
) -> None:
    """Label reports with an LLM (or --backend rules): validated, grounded per-region labels stored as a run."""
    from labeling.sources.commands import run_label, show_dry_run
    from labeling.sources.llm.run import LabelOptions

    try:
        options = LabelOptions(
            backend=backend,
            base_urls=base_url or [],
            model=model,
            model_path=str(model_path) if model_path else None,
            api_key_env=api_key_env,
            structured_output=structured_output,
            unit=unit,
            context=context,
            prompt=prompt,
            samples=samples,
            temperature=temperature,
            max_tokens=max_tokens,
            max_retries=max_retries,
            timeout=timeout,
            concurrency=concurrency,
            batch_size=batch_size,
            use_cache=not no_cache,
            vocabulary=str(vocabulary) if vocabulary else None,
            enable=enable or [],
            dataset=dataset,
            report_ids=report or [],
            limit=limit,
        )
    except ValueError as exc:
        raise ClalaError(f"invalid option: {' '.join(str(exc).split())}") from None
    if dry_run:
        show_dry_run(db, options)
    else:
        summary = run_label(db, name, options, resume, allow_remote)
        if summary.status.value != "complete":
            raise typer.Exit(3)


@user_errors
def runs_list_command(db: DbOption = DEFAULT_DB) -> None:
    """All runs with their status and counts."""
    from labeling.sources.commands import show_runs

    show_runs(db)


@user_errors
def runs_show_command(run: Annotated[str, typer.Argument(help="run name or id")], db: DbOption = DEFAULT_DB) -> None:
    """A run's provenance: model, prompt sha256, vocabulary, decoding, work, labels, rejections."""
    from labeling.sources.commands import show_run

    show_run(db, run)


@user_errors
def failures_command(
    run: Annotated[str, typer.Argument(help="run name or id")],
    db: DbOption = DEFAULT_DB,
    limit: Annotated[int, typer.Option()] = 50,
) -> None:
    """Units that failed validation after re-asking, with the raw model output."""
    from labeling.sources.commands import show_failures

    show_failures(db, run, limit)
