"""CLI views of label runs: labeling with a progress bar, dry runs, runs, failures.

Each view takes the open store; the commands open it once. The engines are imported when a
command runs, so that `import cli` loads none of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
from labeling.core.errors import InputError
from labeling.core.formatting import format_counts
from labeling.core.terminal import error_console, literal, output_console

if TYPE_CHECKING:
    from labeling.sources.llm.options import LabelOptions, LlmRequest
    from labeling.sources.llm.run import DryRun, Prices
    from labeling.sources.rules.run import RulesRequest
    from labeling.store.run_records import RunResult
    from labeling.store.store import Store


def _stats_line(result: RunResult) -> str:
    counts = result.counts
    rate = counts["completion_tokens"] / result.seconds if result.seconds else 0.0
    return (
        f"calls {counts['model_calls']:,}  cache hits {counts['cache_hits']:,}  failures {counts['unit_failures']:,}  "
        f"{rate:,.1f} tok/s"
    )


def _progress(title: str) -> Progress:
    return Progress(
        TextColumn(f"[bold]{title}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("reports"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=error_console(),
        transient=True,
    )


def run_label(store: Store, request: LlmRequest, console: Console | None = None) -> RunResult:
    """`clala label`: an LLM run with a progress bar (or a rules run, for --backend rules or a
    rules run to resume), then what it did."""
    from labeling.sources.llm.run import label_with_llm
    from labeling.store.run_records import RunHooks

    resumes_rules = bool(request.resume) and store.run(request.resume or "").kind.value == "rules"
    if request.options.backend == "rules" or resumes_rules:
        return run_rules_label(store, rules_request(request), console)
    console = console or output_console()
    with _progress("label") as progress:
        task = progress.add_task("starting the backend ...", total=None)
        hooks = RunHooks(
            started=lambda result: progress.update(
                task, total=result.reports, description=f"run {literal(result.name)}"
            ),
            advanced=lambda result, n: progress.update(task, advance=n, description=_stats_line(result)),
            noted=lambda result, text: progress.update(task, description=literal(text)),
        )
        result = label_with_llm(store, request, hooks=hooks)
    show_llm_result(result, store.path, console)
    return result


def show_llm_result(result: RunResult, db: str | Path, console: Console) -> None:
    counts = result.counts
    colour = "green" if result.status.value == "complete" else "yellow"
    console.print(
        f"run [bold]{literal(result.name)}[/bold]: [{colour}]{result.status.value}[/{colour}] in {result.seconds:.1f} s"
    )
    console.print(
        f"reports done {result.reports_done:,}, failed {result.reports_failed:,}, pending "
        f"{result.reports_pending:,}; labels {result.labels:,}; {_stats_line(result)}; tokens "
        f"{counts['prompt_tokens']:,} prompt + {counts['completion_tokens']:,} completion"
    )
    if result.rejected:
        console.print("rejected labels: " + ", ".join(f"{literal(k)} {v:,}" for k, v in result.rejected.items()))
    if result.stopped_because:
        console.print(f"[yellow]stopped:[/yellow] {literal(result.stopped_because)}")
    if result.reports_pending:
        console.print(f"finish it with: clala label --resume {literal(result.name)} --db {literal(db)}")
    if counts["unknown_keys"]:
        console.print(f"keys outside the schema dropped from answers: {counts['unknown_keys']:,}")
    if result.reports_failed:
        console.print(
            f"[yellow]{result.reports_failed:,} of {result.reports:,} reports failed validation[/yellow]; "
            f"see why: clala failures {literal(result.name)} --db {literal(db)}"
        )
        if result.details.get("retryable_failed") and not result.reports_pending:
            console.print(f"retry them: clala label --resume {literal(result.name)} --db {literal(db)}")


def rules_request(request: LlmRequest) -> RulesRequest:
    """`clala label --backend rules`: the same report selection as LLM runs, labeled by rules."""
    from labeling.sources.rules.run import RulesRequest

    options = request.options
    return RulesRequest(
        name=request.name,
        resume=request.resume,
        reports=options.selection(),
        vocabulary=options.vocabulary,
        enable=options.enable,
    )


def run_rules_label(store: Store, request: RulesRequest, console: Console | None = None) -> RunResult:
    """A rules run with a progress bar, then what it did."""
    from labeling.sources.rules.run import label_with_rules
    from labeling.store.run_records import RunHooks

    console = console or output_console()
    with _progress("rules") as progress:
        task = progress.add_task("building the pipeline ...", total=None)
        hooks = RunHooks(
            started=lambda result: progress.update(
                task, total=result.reports, completed=result.reports_done, description=f"run {literal(result.name)}"
            ),
            advanced=lambda result, n: progress.update(
                task, advance=n, description=f"{result.counts['distinct_sentences']:,} distinct sentences"
            ),
        )
        result = label_with_rules(store, request, hooks=hooks)
    show_rules_result(result, console)
    return result


def show_rules_result(result: RunResult, console: Console) -> None:
    rate = result.reports_done / result.seconds if result.seconds else 0.0
    console.print(
        f"run [bold]{literal(result.name)}[/bold]: [green]{result.status.value}[/green] in {result.seconds:.1f} s "
        f"({rate:,.0f} reports/s)"
    )
    console.print(
        f"reports {result.reports_done:,}; sentences read {result.counts['sentences']:,} "
        f"({result.counts['distinct_sentences']:,} distinct); labels {result.labels:,} "
        f"({format_counts(result.statuses)})"
    )
    skipped = result.details.get("skipped_context")
    if skipped:
        console.print("not labeled (ConText): " + literal(format_counts(skipped)))


def show_dry_run(
    store: Store, options: LabelOptions, console: Console | None = None, *, prices: Prices | None = None
) -> DryRun:
    from labeling.sources.llm.run import dry_run

    console = console or output_console()
    plan = dry_run(store, options, prices=prices)
    unit = "sentence" if options.unit == "sentences" else options.unit  # packed sentences are sentence units
    table = Table("", "count", title="Dry run (no model called)", title_justify="left")
    share = plan.calls_needed / plan.sentences if plan.sentences else 0.0
    for label, value in [
        ("reports", plan.reports),
        (f"{unit} occurrences", plan.sentences),
        ("unique units", plan.units),
        ("cache hits", plan.cache_hits),
        ("model calls needed", plan.calls_needed),
        ("units per call", plan.units_per_call),
        ("est. prompt tokens", plan.est_prompt_tokens),
        ("  static (same on every call)", plan.est_static_tokens),
        ("  dynamic (the units)", plan.est_dynamic_tokens),
        ("est. completion tokens", plan.est_completion_tokens),
    ]:
        table.add_row(label, f"{value:,}")
    console.print(table)
    console.print(f"model calls per {unit}: {share:.3f}")
    to_ask = plan.units * options.samples - plan.cache_hits
    if to_ask:
        console.print(
            f"prompt tokens per unit asked: {plan.est_prompt_tokens / to_ask:,.0f}; static share of the prompt "
            f"{plan.static_fraction:.1%} (what a server's prefix cache can serve)"
        )
    if plan.est_cost is not None:
        console.print(
            f"est. cost: {plan.est_cost:,.4f} (input {prices.input_per_million if prices else 0:g} and output "
            f"{prices.output_per_million if prices else 0:g} per million tokens; no prefix-cache discount)"
        )
    return plan


def show_runs(store: Store, console: Console | None = None) -> list[dict]:
    console = console or output_console()
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
        backend, model = models.get(r["run_id"], ("", ""))
        table.add_row(
            str(r["run_id"]),
            literal(r["name"]),
            literal(r["kind"]),
            literal(r["status"]),
            literal(backend),
            literal(model),
            f"{r['reports']:,}",
            f"{r['labels']:,}",
            f"{r['failures']:,}",
        )
    console.print(table)
    return rows


def show_run(store: Store, run: str, console: Console | None = None) -> dict:
    console = console or output_console()
    info = store.run(run)
    work = store.work_counts(info.run_id)
    rejected = store.rejection_counts(info.run_id)
    labels = store.label_status_counts(info.run_id)
    shown = info.model_dump(mode="json")
    shown["params"] = json.dumps(shown["params"])
    shown["decoding"] = json.dumps(shown["decoding"])
    table = Table("field", "value", title=f"Run {literal(info.name)}", title_justify="left")
    for key, value in shown.items():
        table.add_row(key, "" if value is None else literal(value))
    table.add_row("work", format_counts(work, "-"))
    table.add_row("labels", format_counts(labels, "-"))
    table.add_row("rejected labels", literal(", ".join(f"{k} {v:,}" for k, v in rejected.items()) or "-"))
    console.print(table)
    estimates = store.run_estimates(info.run_id)
    if estimates:
        from labeling.review.sample_commands import estimates_table

        console.print(estimates_table(estimates))
    return {"run": info, "work": work, "rejected": rejected, "estimates": estimates}


def show_failures(store: Store, run: str, limit: int = 50, console: Console | None = None) -> list[dict]:
    console = console or output_console()
    rows = store.failures(run)
    title = f"Failures of {literal(run)} ({len(rows):,})"
    table = Table("report", "tries", "error", "raw output", title=title, title_justify="left")
    for row in rows[:limit]:
        raw = row["raw_output"] or ""
        table.add_row(
            literal(f"{row['dataset']}/{row['report_id']}"),
            str(row.get("attempts") or "-"),
            literal(row["error"]),
            literal(raw[:300] + ("..." if len(raw) > 300 else "")),
        )
    console.print(table)
    return rows


# The `clala label` parameter of a LabelOptions field, where the names differ.
CLI_NAMES = {"base_urls": "base_url", "use_cache": "no_cache", "report_ids": "report"}


def _given_on_command_line(ctx: typer.Context, parameter: str) -> bool:
    # by name: typer's click may not be the `click` package
    source = ctx.get_parameter_source(parameter)
    return source is not None and source.name != "DEFAULT"


@user_errors
def label_command(
    ctx: typer.Context,
    db: DbOption = DEFAULT_DB,
    name: Annotated[str | None, typer.Option(help="run name (default: backend-model-time)")] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="local (embedded llama.cpp server) | openai (any OpenAI-compatible server) | openai-batch "
            "(the OpenAI Batch API: half price, within 24 h) | ray (Ray Data: many servers, or vLLM engines on a "
            "cluster's GPUs) | vllm (in-process, GPU) | rules (medspaCy, no model)"
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
    unit: Annotated[
        str, typer.Option(help="sentence (one a request) | sentences (--per-call a request) | report")
    ] = "sentence",
    per_call: Annotated[
        int, typer.Option("--per-call", help="sentences packed into one request with --unit sentences")
    ] = 16,
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
    give_up_after: Annotated[
        int,
        typer.Option("--give-up-after", help="stop the run (resumable) after this many transport failures in a row"),
    ] = 5,
    poll_interval: Annotated[
        float,
        typer.Option("--poll-interval", help="openai-batch: most seconds between polls of a batch job (quicker first)"),
    ] = 60.0,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", help="ray: the cluster, e.g. HEAD:6379 or auto (default: RAY_ADDRESS, else local)"
        ),
    ] = None,
    engine_config: Annotated[
        Path | None,
        typer.Option(
            "--engine-config",
            help="ray: a JSON or TOML file of vLLM engine settings (tensor_parallel_size, concurrency, ...): "
            "vLLM engines on the cluster's GPUs instead of --base-url servers",
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="ask the model even for cached units")] = False,
    dataset: Annotated[str | None, typer.Option(help="only this dataset's reports")] = None,
    report: Annotated[list[str] | None, typer.Option("--report", help="only these report ids")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many reports")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="allow sending reports to a server that is not on this machine")
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            help="finish an interrupted run; --base-url, --api-key-env, --timeout, --concurrency, --batch-size, "
            "--give-up-after, --max-retries, --poll-interval, --ray-address and --engine-config may change, options "
            "that change what labels mean may not"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count units, cache hits, requests and tokens; call nothing")
    ] = False,
    price_in: Annotated[
        float | None, typer.Option("--price-in", help="with --dry-run: price per million prompt tokens")
    ] = None,
    price_out: Annotated[
        float | None, typer.Option("--price-out", help="with --dry-run: price per million completion tokens")
    ] = None,
) -> None:
    """Label reports with an LLM (or --backend rules): validated, grounded per-region labels stored as a run."""
    from labeling.sources.llm.options import LabelOptions, LlmRequest
    from labeling.store.store import Store

    given = dict(
        backend=backend,
        base_urls=base_url or [],
        model=model,
        model_path=str(model_path) if model_path else None,
        api_key_env=api_key_env,
        structured_output=structured_output,
        unit=unit,
        per_call=per_call,
        context=context,
        prompt=prompt,
        samples=samples,
        temperature=temperature,
        max_tokens=max_tokens,
        max_retries=max_retries,
        timeout=timeout,
        concurrency=concurrency,
        batch_size=batch_size,
        give_up_after=give_up_after,
        poll_interval=poll_interval,
        ray_address=ray_address,
        engine_config=str(engine_config) if engine_config else None,
        use_cache=not no_cache,
        vocabulary=str(vocabulary) if vocabulary else None,
        enable=enable or [],
        dataset=dataset,
        report_ids=report or [],
        limit=limit,
    )
    if resume:  # only the options given on the command line: the run's own are used for the rest
        given = {k: v for k, v in given.items() if _given_on_command_line(ctx, CLI_NAMES.get(k, k))}
    try:
        options = LabelOptions.model_validate(given)
    except ValueError as exc:
        raise ClalaError(f"invalid option: {' '.join(str(exc).split())}") from None
    if (price_in is not None or price_out is not None) and not dry_run:
        raise InputError("--price-in and --price-out go with --dry-run (they estimate a run's cost)")
    if dry_run:
        from labeling.sources.llm.run import Prices

        prices = None
        if price_in is not None or price_out is not None:
            if (price_in or 0) < 0 or (price_out or 0) < 0:
                raise InputError("--price-in and --price-out must not be negative")
            prices = Prices(input_per_million=price_in or 0.0, output_per_million=price_out or 0.0)
        with Store(db, read_only=True) as store:
            show_dry_run(store, options, prices=prices)
        return
    request = LlmRequest(name=name, options=options, resume=resume, allow_remote=allow_remote)
    with Store.open_existing(db) as store:
        result = run_label(store, request)
    if result.status.value == "partial":
        raise typer.Exit(4)  # every report tried, some failed validation
    if result.status.value != "complete":
        raise typer.Exit(3)


@user_errors
def runs_list_command(db: DbOption = DEFAULT_DB) -> None:
    """All runs with their status and counts (while a run writes: what its status file says)."""
    from labeling.store.commands import reading_store_or_status

    store = reading_store_or_status(db)
    if store is None:
        return
    with store:
        show_runs(store)


@user_errors
def runs_show_command(run: Annotated[str, typer.Argument(help="run name or id")], db: DbOption = DEFAULT_DB) -> None:
    """A run's provenance: model, prompt sha256, vocabulary, decoding, work, labels, rejections
    (while it runs: its progress from the status file beside the database)."""
    from labeling.store.commands import reading_store_or_status

    store = reading_store_or_status(db, run=run, listing=False)
    if store is None:
        return
    with store:
        show_run(store, run)


@user_errors
def failures_command(
    run: Annotated[str, typer.Argument(help="run name or id")],
    db: DbOption = DEFAULT_DB,
    limit: Annotated[int, typer.Option()] = 50,
) -> None:
    """Units that failed validation after re-asking, with the raw model output."""
    from labeling.store.store import Store

    with Store(db, read_only=True) as store:
        show_failures(store, run, limit)
