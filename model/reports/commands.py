"""CLI view of `clala generate`: generate reports from a checkpoint, store them, and show what was
written and how to score it."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

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
