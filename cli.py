"""The clala command line: the app, its sub-apps and which command runs which function. Each
command lives beside the stage it drives (`labeling/*/commands.py`, `model/*/commands.py`): it parses
its options into one options object, opens the store once, calls one function and renders the result."""

from __future__ import annotations

import typer

from labeling.ingest.commands import ingest_command
from labeling.review.commands import compare_command, disagreements_command, export_labelstudio_command
from labeling.review.sample_commands import estimate_command, sample_command
from labeling.sources.combine.commands import combine_command
from labeling.sources.commands import failures_command, label_command, runs_list_command, runs_show_command
from labeling.sources.imports.commands import import_command
from labeling.sources.llm.commands import (
    prompts_list_command,
    prompts_render_command,
    prompts_show_command,
    schema_export_command,
    schema_vocabulary_command,
)
from labeling.store.commands import (
    export_labels_command,
    export_reports_command,
    reports_list_command,
    reports_show_command,
    stats_command,
)
from model.evaluate.audit_command import audit_command
from model.evaluate.commands import evaluate_command, predict_command
from model.experiments.commands import ablate_command, quickstart_command, sensitivity_command
from model.labels.commands import derive_command
from model.reports.commands import generate_command, score_reports_command
from model.synth.commands import synth_command
from model.train.commands import train_command

app = typer.Typer(
    help="Per-region chest X-ray lesion labels from reports, with provenance, in DuckDB.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
reports_app = typer.Typer(help="List and show ingested reports.", no_args_is_help=True)
export_app = typer.Typer(help="Export labels or reports to Parquet, CSV or JSONL.", no_args_is_help=True)
schema_app = typer.Typer(help="The vocabulary and the label schema sent to LLM servers.", no_args_is_help=True)
runs_app = typer.Typer(help="Label runs and their provenance.", no_args_is_help=True)
prompts_app = typer.Typer(help="Prompt templates.", no_args_is_help=True)
app.add_typer(reports_app, name="reports")
app.add_typer(runs_app, name="runs")
app.add_typer(prompts_app, name="prompts")
app.add_typer(export_app, name="export")
app.add_typer(schema_app, name="schema")

app.command("ingest")(ingest_command)
reports_app.command("list")(reports_list_command)
reports_app.command("show")(reports_show_command)
app.command("stats")(stats_command)
export_app.command("labels")(export_labels_command)
export_app.command("reports")(export_reports_command)
schema_app.command("export")(schema_export_command)
schema_app.command("vocabulary")(schema_vocabulary_command)
app.command("label")(label_command)
runs_app.command("list")(runs_list_command)
runs_app.command("show")(runs_show_command)
app.command("import")(import_command)
app.command("failures")(failures_command)
prompts_app.command("list")(prompts_list_command)
prompts_app.command("show")(prompts_show_command)
prompts_app.command("render")(prompts_render_command)
app.command("compare")(compare_command)
app.command("disagreements")(disagreements_command)
app.command("export-labelstudio")(export_labelstudio_command)
app.command("sample")(sample_command)
app.command("estimate")(estimate_command)
app.command("synth")(synth_command)
app.command("derive")(derive_command)
app.command("combine")(combine_command)
app.command("train")(train_command)
app.command("evaluate")(evaluate_command)
app.command("predict")(predict_command)
app.command("audit")(audit_command)
app.command("ablate")(ablate_command)
app.command("sensitivity")(sensitivity_command)
app.command("generate")(generate_command)
app.command("score-reports")(score_reports_command)
app.command("quickstart")(quickstart_command)

if __name__ == "__main__":
    app()
