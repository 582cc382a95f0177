"""CLI view of `clala generate`: generate reports from a checkpoint, store them, and show what was
written and how to score it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from labeling.core.cli_options import (
    DEFAULT_DB,
    ClalaError,
    DataOption,
    DbOption,
    DeviceOption,
    ImagenomeOption,
    user_errors,
)
from labeling.core.terminal import output_console
from model.reports.generation import Generation, generate_reports
from model.reports.writer import LLMOptions


def run_generate(
    checkpoint: Path,
    db: Path,
    data: Path,
    name: str,
    split: str = "test",
    imagenome: Path | None = None,
    regions: str = "abnormal",
    beams: int = 1,
    max_new_tokens: int | None = None,
    llm: LLMOptions | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    allow_remote: bool = False,
    show: int = 1,
    console: Console | None = None,
) -> Generation:
    console = console or output_console()
    result = generate_reports(
        checkpoint,
        db,
        data,
        name,
        split,
        imagenome,
        regions,
        beams,
        max_new_tokens,
        llm,
        limit,
        batch_size,
        device,
        allow_remote,
    )
    aggregators = ", ".join(f"{k} {v:,}" for k, v in sorted(result.aggregators.items()))
    console.print(
        f"generation [bold]{escape(result.name)}[/bold]: {result.reports:,} reports in dataset "
        f"{escape(result.dataset)} ({aggregators}); {result.region_sentences:,} region sentences from the "
        f"{result.sentences_source}",
        highlight=False,
    )
    for note in result.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    from labeling.store.store import Store
    from model.reports.writer import generated_reports

    with Store(db, read_only=True) as store:
        for row in generated_reports(store, name)[:show]:
            console.print(f"\n[bold]{escape(row['report_id'])}[/bold]\n{escape(row['text'].strip())}", highlight=False)
    console.print(f"\nscore them: clala score-reports {name} --reference RUN --db {db}", highlight=False)
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
    llm_backend: Annotated[
        str, typer.Option("--llm-backend", help="aggregator: none (deterministic) | local | openai | vllm")
    ] = "none",
    llm_base_url: Annotated[list[str] | None, typer.Option("--llm-base-url", help="server URL (repeat)")] = None,
    llm_model: Annotated[str | None, typer.Option("--llm-model", help="model name on the server")] = None,
    llm_model_path: Annotated[
        Path | None, typer.Option("--llm-model-path", help="GGUF for --llm-backend local")
    ] = None,
    llm_structured_output: Annotated[
        str, typer.Option("--llm-structured-output", help="auto | json_schema | llama_cpp | none")
    ] = "auto",
    api_key_env: Annotated[
        str, typer.Option("--api-key-env", help="environment variable holding the API key")
    ] = "OPENAI_API_KEY",
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="allow sending to a server that is not on this machine")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    device: DeviceOption = "auto",
) -> None:
    """Write reports from a checkpoint: region sentences + predicted lesions -> FINDINGS/IMPRESSION, stored with provenance."""
    from model.reports.commands import run_generate
    from model.reports.writer import LLMOptions

    llm = None
    if llm_backend != "none":
        try:
            llm = LLMOptions(
                backend=llm_backend,
                base_urls=llm_base_url or [],
                model=llm_model,
                model_path=str(llm_model_path) if llm_model_path else None,
                structured_output=llm_structured_output,
                api_key_env=api_key_env,
            )
        except ValueError as exc:
            raise ClalaError(f"invalid LLM option: {' '.join(str(exc).split())}") from None
    run_generate(
        checkpoint,
        db,
        data,
        name,
        split,
        imagenome,
        regions,
        beams,
        max_new_tokens,
        llm,
        limit,
        batch_size,
        device,
        allow_remote,
    )


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
    judge_backend: Annotated[
        str | None,
        typer.Option(
            "--judge-backend",
            help="LLM judge for the consistency score out of 20: local | openai | vllm (default: no judge)",
        ),
    ] = None,
    judge_base_url: Annotated[
        list[str] | None, typer.Option("--judge-base-url", help="judge server URL (repeat)")
    ] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="judge model name on the server")] = None,
    judge_model_path: Annotated[
        Path | None, typer.Option("--judge-model-path", help="GGUF for --judge-backend local")
    ] = None,
    judge_structured_output: Annotated[
        str, typer.Option("--judge-structured-output", help="auto | json_schema | llama_cpp | none")
    ] = "auto",
    api_key_env: Annotated[
        str, typer.Option("--api-key-env", help="environment variable holding the API key")
    ] = "OPENAI_API_KEY",
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="allow sending reports to a server that is not on this machine")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="folder for NAME.scores.json and NAME.per_report.csv")
    ] = None,
) -> None:
    """Score generated reports: label consistency (image and region P/R/F1), BLEU-4, ROUGE-L, optional LLM judge."""
    from model.reports.scoring_commands import run_score_reports
    from model.reports.writer import LLMOptions

    judge = None
    if judge_backend:
        try:
            judge = LLMOptions(
                backend=judge_backend,
                base_urls=judge_base_url or [],
                model=judge_model,
                model_path=str(judge_model_path) if judge_model_path else None,
                structured_output=judge_structured_output,
                api_key_env=api_key_env,
            )
        except ValueError as exc:
            raise ClalaError(f"invalid judge option: {' '.join(str(exc).split())}") from None
    run_score_reports(db, name, reference, labeler, judge, uncertain, out, allow_remote)
