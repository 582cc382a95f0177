"""`clala generate` (reports from a checkpoint, stored with provenance) and `clala score-reports`
(label consistency, BLEU-4 / ROUGE-L and the optional LLM judge of a generation, printed as
tables, stored as an experiment and written to --out). Each command parses its options into one
request, opens the store once, calls one engine function and renders what it returns."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from labeling.core.cli_options import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_DB,
    AllowRemoteOption,
    ApiKeyEnvOption,
    DataOption,
    DbOption,
    DeviceOption,
    ImagenomeOption,
    user_errors,
)
from labeling.core.formatting import format_counts, format_number
from labeling.core.terminal import literal, output_console, visible
from model.reports.options import (
    JudgeBackendOption,
    JudgeBaseUrlOption,
    JudgeModelOption,
    JudgeModelPathOption,
    JudgeStructuredOutputOption,
    LlmBackendOption,
    LlmBaseUrlOption,
    LlmModelOption,
    LlmModelPathOption,
    LlmStructuredOutputOption,
    llm_options,
)

if TYPE_CHECKING:
    from labeling.store.store import Store
    from model.reports.generation import GenerateRequest, Generation
    from model.reports.scoring import ReportScores, ScoreRequest


# --- clala generate ----------------------------------------------------------------------------------
def run_generate(
    store: Store, request: GenerateRequest, *, show: int = 1, console: Console | None = None
) -> Generation:
    """Generate and store the reports, then say what was written, show the first `show` of them
    and how to score them."""
    from model.reports.generation import generate_reports
    from model.reports.writer import generated_reports

    console = console or output_console()
    result = generate_reports(store, request)
    console.print(
        f"generation [bold]{literal(result.name)}[/bold]: {result.reports:,} reports in dataset "
        f"{literal(result.dataset)} ({literal(format_counts(result.aggregators))}); {result.region_sentences:,} region "
        f"sentences from the {result.sentences_source}",
        highlight=False,
    )
    stored = result.stored
    if result.sentences_source == "decoder":
        console.print(
            f"decoder sentences used in FINDINGS: {stored.decoder_sentences:,} (the others read back as "
            "other lesions than predicted; the writer phrased those)",
            highlight=False,
        )
    if stored.round_trips:
        console.print(
            f"LLM reports read back by the rules: {literal(format_counts(stored.round_trips))}", highlight=False
        )
    for note in result.notes:
        console.print(f"note: {literal(note)}", highlight=False)
    for row in generated_reports(store, request.name)[:show]:
        console.print(f"\n[bold]{literal(row['report_id'])}[/bold]\n{literal(row['text'].strip())}", highlight=False)
    console.print(
        f"\nscore them: clala score-reports {literal(request.name)} --reference RUN --db {literal(store.path)}",
        highlight=False,
    )
    return result


@user_errors
def generate_command(
    checkpoint: Annotated[Path, typer.Argument(help="a CLALA-Net checkpoint (best.pt)")],
    data: DataOption,
    name: Annotated[str, typer.Option(help="name of the generation (stored as dataset generated:NAME)")],
    db: DbOption = DEFAULT_DB,
    imagenome: ImagenomeOption = None,
    split: Annotated[str, typer.Option(help="train | valid | test")] = "test",
    regions: Annotated[
        str, typer.Option(help="abnormal (a lesion predicted there) | all (every valid box)")
    ] = "abnormal",
    beams: Annotated[int, typer.Option(help="beam width of the sentence decoder (1: greedy)")] = 1,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", help="per sentence (default: the model's)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many studies")] = None,
    llm_backend: LlmBackendOption = "none",
    llm_base_url: LlmBaseUrlOption = None,
    llm_model: LlmModelOption = None,
    llm_model_path: LlmModelPathOption = None,
    llm_structured_output: LlmStructuredOutputOption = "auto",
    api_key_env: ApiKeyEnvOption = DEFAULT_API_KEY_ENV,
    allow_remote: AllowRemoteOption = False,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    device: DeviceOption = "auto",
) -> None:
    """Write reports from a checkpoint: region sentences + predicted lesions -> FINDINGS/IMPRESSION, stored with provenance."""  # noqa: E501 (one line: typer shows it as the command's help)
    from labeling.store.store import Store
    from model.reports.generation import GenerateRequest

    llm = None
    if llm_backend != "none":
        llm = llm_options(
            llm_backend, llm_base_url, llm_model, llm_model_path, llm_structured_output, api_key_env, role="LLM"
        )
    request = GenerateRequest(
        checkpoint=checkpoint,
        data=data,
        name=name,
        split=split,
        imagenome=imagenome,
        regions=regions,
        beams=beams,
        max_new_tokens=max_new_tokens,
        llm=llm,
        limit=limit,
        batch_size=batch_size,
        device=device,
        allow_remote=allow_remote,
    )
    with Store.open_existing(db) as store:
        run_generate(store, request)


# --- clala score-reports -----------------------------------------------------------------------------
def consistency_table(scores: ReportScores) -> Table:
    table = Table(
        "level",
        "reports",
        "findings",
        "precision",
        "recall",
        "F1",
        "macro F1",
        "tp",
        "fp",
        "fn",
        title=Text(
            visible(
                f"Label consistency: {scores.label_run} on the generated reports vs {scores.reference} on "
                f"the source reports (uncertain: {scores.uncertain})"
            )
        ),
        title_justify="left",
    )
    for level, comparison in (("image", scores.image), ("region", scores.region)):
        if comparison is None:
            continue
        micro, macro = comparison.micro, comparison.macro
        table.add_row(
            level,
            f"{comparison.reports:,}",
            str(len(comparison.findings)),
            format_number(micro.precision),
            format_number(micro.recall),
            format_number(micro.f1),
            format_number(macro.f1),
            f"{micro.tp:,}",
            f"{micro.fp:,}",
            f"{micro.fn:,}",
        )
    return table


def judge_table(scores: ReportScores) -> Table | None:
    from model.reports.scoring import CRITERIA, MAX_TOTAL

    means = scores.judge_means()
    if means is None:
        return None
    table = Table(
        "criterion",
        "mean (0-5)",
        title_justify="left",
        title=Text(visible(f"LLM judge {scores.judge_model} ({len(scores.judged):,} reports)")),
    )
    for name in CRITERIA:
        table.add_row(name.replace("_", " "), format_number(means[name], 2))
    table.add_row("[bold]consistency score[/bold]", f"[bold]{format_number(means['total'], 2)} / {MAX_TOTAL}[/bold]")
    return table


def run_score_reports(store: Store, request: ScoreRequest, *, console: Console | None = None) -> ReportScores:
    """Score the generation, store and write the figures, and print them."""
    from model.reports.scoring import score_and_record

    console = console or output_console()
    recorded = score_and_record(store, request)
    scores = recorded.scores
    console.print(
        f"generation [bold]{literal(scores.name)}[/bold]: {scores.reports:,} reports, "
        f"{scores.aligned:,} with a source report",
        emoji=False,
    )
    console.print(consistency_table(scores))
    console.print(
        f"BLEU-4 {format_number(scores.bleu4, 2)} (corpus, sacrebleu)   ROUGE-L {format_number(scores.rouge_l)} "
        "(mean F, rouge-score)   on FINDINGS + IMPRESSION"
    )
    table = judge_table(scores)
    if table is not None:
        console.print(table)
    if scores.judge_note:
        console.print(f"judge: {literal(scores.judge_note)}", emoji=False)
    for note in scores.notes:
        console.print(f"note: {literal(note)}", emoji=False)
    files = recorded.files
    console.print(
        visible(
            f"stored as experiment {recorded.experiment_id}"
            + (f"; wrote {', '.join(map(str, files))}" if files else "")
        ),
        emoji=False,
        markup=False,
    )
    return scores


@user_errors
def score_reports_command(
    name: Annotated[str, typer.Argument(help="the generation's name (dataset generated:NAME)")],
    reference: Annotated[str, typer.Option(help="label run of the source reports to compare against")],
    db: DbOption = DEFAULT_DB,
    labeler: Annotated[
        str, typer.Option(help="rules, or a rules or LLM run whose source labels the generated reports the same way")
    ] = "rules",
    uncertain: Annotated[
        str, typer.Option(help="uncertain labels: exclude | positive | negative | own-class")
    ] = "exclude",
    judge_backend: JudgeBackendOption = None,
    judge_base_url: JudgeBaseUrlOption = None,
    judge_model: JudgeModelOption = None,
    judge_model_path: JudgeModelPathOption = None,
    judge_structured_output: JudgeStructuredOutputOption = "auto",
    api_key_env: ApiKeyEnvOption = DEFAULT_API_KEY_ENV,
    allow_remote: AllowRemoteOption = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="folder for NAME.scores.json and NAME.per_report.csv")
    ] = None,
) -> None:
    """Score generated reports: label consistency (image and region P/R/F1), BLEU-4, ROUGE-L, optional LLM judge."""
    from labeling.store.store import Store
    from model.reports.scoring import ScoreRequest

    judge = None
    if judge_backend:
        judge = llm_options(
            judge_backend,
            judge_base_url,
            judge_model,
            judge_model_path,
            judge_structured_output,
            api_key_env,
            role="judge",
        )
    request = ScoreRequest(
        name=name,
        reference=reference,
        labeler=labeler,
        judge=judge,
        uncertain=uncertain,
        allow_remote=allow_remote,
        out=out,
    )
    with Store.open_existing(db) as store:
        run_score_reports(store, request)
