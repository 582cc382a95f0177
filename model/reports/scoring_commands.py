"""CLI view of `clala score-reports`: label consistency, BLEU-4 / ROUGE-L and the optional LLM
judge for a generation, printed as tables, stored as an experiment and written to --out."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from labeling.core.terminal import output_console
from model.reports.scoring import CRITERIA, MAX_TOTAL, ReportScores, record_scores, score_reports
from model.reports.writer import LLMOptions


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or value != value else f"{value:.{digits}f}"


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
            f"Label consistency: {scores.label_run} on the generated reports vs {scores.reference} on "
            f"the source reports (uncertain: {scores.uncertain})"
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
            _fmt(micro.precision),
            _fmt(micro.recall),
            _fmt(micro.f1),
            _fmt(macro.f1),
            f"{micro.tp:,}",
            f"{micro.fp:,}",
            f"{micro.fn:,}",
        )
    return table


def judge_table(scores: ReportScores) -> Table | None:
    means = scores.judge_means()
    if means is None:
        return None
    table = Table(
        "criterion",
        "mean (0-5)",
        title_justify="left",
        title=Text(f"LLM judge {scores.judge_model} ({len(scores.judged):,} reports)"),
    )
    for name in CRITERIA:
        table.add_row(name.replace("_", " "), _fmt(means[name], 2))
    table.add_row("[bold]consistency score[/bold]", f"[bold]{_fmt(means['total'], 2)} / {MAX_TOTAL}[/bold]")
    return table


def run_score_reports(
    db: str | Path,
    name: str,
    reference: str,
    labeler: str = "rules",
    judge_options: LLMOptions | None = None,
    uncertain: str = "exclude",
    out: str | Path | None = None,
    allow_remote: bool = False,
    console: Console | None = None,
) -> ReportScores:
    console = console or output_console()
    scores = score_reports(db, name, reference, labeler, judge_options, uncertain, allow_remote)
    console.print(
        f"generation [bold]{escape(name)}[/bold]: {scores.reports:,} reports, {scores.aligned:,} with a source report",
        emoji=False,
    )
    console.print(consistency_table(scores))
    console.print(
        f"BLEU-4 {_fmt(scores.bleu4, 2)} (corpus, sacrebleu)   ROUGE-L {_fmt(scores.rouge_l)} "
        "(mean F, rouge-score)   on FINDINGS + IMPRESSION"
    )
    table = judge_table(scores)
    if table is not None:
        console.print(table)
    if scores.judge_note:
        console.print(f"judge: {escape(scores.judge_note)}", emoji=False)
    for note in scores.notes:
        console.print(f"note: {escape(note)}", emoji=False)
    experiment_id, files = record_scores(db, scores, judge_options, out)
    console.print(
        f"stored as experiment {experiment_id}" + (f"; wrote {', '.join(map(str, files))}" if files else ""),
        emoji=False,
        markup=False,
    )
    return scores
