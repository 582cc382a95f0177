"""The clala command line. Each command parses its options and calls one function."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console

from labeling.terminal import output_console

from labeling.errors import ClalaError

app = typer.Typer(help="Per-region chest X-ray lesion labels from reports, with provenance, in DuckDB.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
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

DbOption = Annotated[Path, typer.Option("--db", help="database file", envvar="CLALA_DB")]
DEFAULT_DB = Path("clala.duckdb")
err = Console(stderr=True)


def user_errors(command: Callable) -> Callable:
    """Print a ClalaError as one line on stderr and exit 1; Ctrl-C exits 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ClalaError as exc:
            err.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False, markup=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted; committed batches are kept, run the command again to finish")
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@user_errors
def ingest(
    path: Annotated[Path, typer.Argument(help="CSV, JSONL, IU X-ray indiana_reports.csv, or a MIMIC-CXR reports folder")],
    db: DbOption = DEFAULT_DB,
    fmt: Annotated[str, typer.Option("--format", help="auto | csv | jsonl | mimic | iu-xray")] = "auto",
    dataset: Annotated[Optional[str], typer.Option(help="dataset name (default: from the format or file name)")] = None,
    id_col: Annotated[str, typer.Option("--id-col", help="column (CSV) or field (JSONL) with the report id")] = "id",
    text_col: Annotated[str, typer.Option("--text-col", help="column or field with the report text")] = "text",
    patient_col: Annotated[Optional[str], typer.Option("--patient-col")] = None,
    study_col: Annotated[Optional[str], typer.Option("--study-col")] = None,
    image_col: Annotated[Optional[str], typer.Option("--image-col", help="image paths (list, or ';'-separated)")] = None,
    encoding: Annotated[str, typer.Option(help="text encoding of the input")] = "utf-8",
    blank: Annotated[str, typer.Option(help="reports with no text: auto (error for CSV/JSONL, skip and list for "
                                            "MIMIC-CXR and IU X-ray) | error | skip")] = "auto",
    max_chars: Annotated[int, typer.Option("--max-chars", help="reject reports longer than this")] = 100_000,
) -> None:
    """Ingest reports: sections, sentences with exact offsets; re-ingesting adds nothing new."""
    from labeling.readers import Columns
    from labeling.views import run_ingest

    columns = Columns(id=id_col, text=text_col, patient=patient_col, study=study_col, images=image_col)
    run_ingest(db, path, fmt=fmt, columns=columns, dataset=dataset, encoding=encoding, blank=blank,
               max_chars=max_chars)


@reports_app.command("list")
@user_errors
def reports_list(
    db: DbOption = DEFAULT_DB,
    dataset: Annotated[Optional[str], typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 20,
    offset: Annotated[int, typer.Option()] = 0,
    all_versions: Annotated[bool, typer.Option("--all-versions", help="every stored version, not only the latest")] = False,
) -> None:
    """List reports (latest versions)."""
    from labeling.views import show_report_list

    show_report_list(db, dataset, limit, offset, all_versions)


@reports_app.command("show")
@user_errors
def reports_show(
    report_id: Annotated[str, typer.Argument(help="the report id as ingested")],
    db: DbOption = DEFAULT_DB,
    dataset: Annotated[Optional[str], typer.Option()] = None,
    version: Annotated[Optional[int], typer.Option(help="a stored version (default: the latest)")] = None,
) -> None:
    """Show one report: text with sentence boundaries, sections, and its labels per run."""
    from labeling.views import show_report

    show_report(db, report_id, dataset, version)


@app.command()
@user_errors
def stats(db: DbOption = DEFAULT_DB) -> None:
    """Counts per table, per dataset and per run."""
    from labeling.views import show_stats

    show_stats(db)


@export_app.command("labels")
@user_errors
def export_labels(
    run: Annotated[str, typer.Option("--run", help="run name or id")],
    out: Annotated[Path, typer.Option("--out", help="output file (.parquet, .csv, .jsonl)")],
    db: DbOption = DEFAULT_DB,
    fmt: Annotated[Optional[str], typer.Option("--format", help="parquet | csv | jsonl (default: from --out)")] = None,
) -> None:
    """Export a run's labels, one row per (report, region, finding) cell."""
    from labeling.export import export_labels as export

    rows = export(db, run, out, fmt)
    output_console().print(f"wrote {rows:,} labels to {out}")


@export_app.command("reports")
@user_errors
def export_reports(
    out: Annotated[Path, typer.Option("--out", help="output file (.parquet, .csv, .jsonl)")],
    db: DbOption = DEFAULT_DB,
    run: Annotated[Optional[str], typer.Option("--run", help="only reports this run labeled")] = None,
    dataset: Annotated[Optional[str], typer.Option()] = None,
    all_versions: Annotated[bool, typer.Option("--all-versions")] = False,
    fmt: Annotated[Optional[str], typer.Option("--format", help="parquet | csv | jsonl (default: from --out)")] = None,
) -> None:
    """Export reports (text, sections, metadata)."""
    from labeling.export import export_reports as export

    rows = export(db, out, fmt, dataset, run, all_versions)
    output_console().print(f"wrote {rows:,} reports to {out}")


VocabularyOption = Annotated[Optional[Path], typer.Option("--vocabulary", help="vocabulary file (default: shipped)")]
EnableOption = Annotated[Optional[list[str]], typer.Option("--enable", help="add a finding category "
                                                          "(tubesandlines, device, technicalassessment)")]


@schema_app.command("export")
@user_errors
def schema_export(
    out: Annotated[Optional[Path], typer.Option("--out", help="file to write (default: stdout)")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
) -> None:
    """Write the JSON Schema of one unit's LLM answer, as the labeling engine sends it."""
    from labeling.schema_views import export_label_schema

    export_label_schema(out, vocabulary, enable or [])


@schema_app.command("vocabulary")
@user_errors
def schema_vocabulary(vocabulary: VocabularyOption = None, enable: EnableOption = None) -> None:
    """Print the regions and findings of a vocabulary."""
    from labeling.schema_views import show_vocabulary

    show_vocabulary(vocabulary, enable or [])


@app.command()
@user_errors
def label(
    db: DbOption = DEFAULT_DB,
    name: Annotated[Optional[str], typer.Option(help="run name (default: backend-model-time)")] = None,
    backend: Annotated[str, typer.Option(help="local (embedded llama.cpp server) | openai (any OpenAI-compatible "
                                              "server) | vllm (in-process, GPU) | rules (medspaCy, no model)")] = "local",
    base_url: Annotated[Optional[list[str]], typer.Option("--base-url", help="server URL, e.g. "
                                                          "http://127.0.0.1:8000/v1; repeat to spread load")] = None,
    model: Annotated[Optional[str], typer.Option(help="model name on the server (openai, vllm)")] = None,
    model_path: Annotated[Optional[Path], typer.Option("--model-path", help="GGUF file for --backend local")] = None,
    api_key_env: Annotated[str, typer.Option("--api-key-env", help="environment variable holding the API key")] = "OPENAI_API_KEY",
    structured_output: Annotated[str, typer.Option("--structured-output", help="auto | json_schema | llama_cpp | none")] = "auto",
    unit: Annotated[str, typer.Option(help="sentence | report")] = "sentence",
    context: Annotated[int, typer.Option(help="neighbouring sentences sent as context")] = 0,
    prompt: Annotated[str, typer.Option(help="prompt template name (clala prompts list)")] = "region_labels",
    samples: Annotated[int, typer.Option(help="answers per unit; confidence = agreement")] = 1,
    temperature: Annotated[Optional[float], typer.Option(help="default 0, or 0.7 with --samples > 1")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens")] = None,
    max_retries: Annotated[int, typer.Option("--max-retries", help="re-asks of an invalid answer")] = 2,
    timeout: Annotated[float, typer.Option(help="seconds per request")] = 120.0,
    concurrency: Annotated[int, typer.Option(help="requests in flight")] = 4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="reports per committed batch (at least --concurrency)")] = 16,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="ask the model even for cached units")] = False,
    dataset: Annotated[Optional[str], typer.Option(help="only this dataset's reports")] = None,
    report: Annotated[Optional[list[str]], typer.Option("--report", help="only these report ids")] = None,
    limit: Annotated[Optional[int], typer.Option(help="at most this many reports")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
    allow_remote: Annotated[bool, typer.Option("--allow-remote", help="allow sending reports to a server that "
                                                                       "is not on this machine")] = False,
    resume: Annotated[Optional[str], typer.Option(help="finish an interrupted run")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count units, cache hits and tokens; call nothing")] = False,
) -> None:
    """Label reports with an LLM (or --backend rules): validated, grounded per-region labels stored as a run."""
    from labeling.llm_source import LabelOptions
    from labeling.run_views import run_label, show_dry_run

    try:
        options = LabelOptions(
            backend=backend, base_urls=base_url or [], model=model, model_path=str(model_path) if model_path else None,
            api_key_env=api_key_env, structured_output=structured_output, unit=unit, context=context, prompt=prompt,
            samples=samples, temperature=temperature, max_tokens=max_tokens, max_retries=max_retries,
            timeout=timeout, concurrency=concurrency, batch_size=batch_size, use_cache=not no_cache,
            vocabulary=str(vocabulary) if vocabulary else None, enable=enable or [], dataset=dataset,
            report_ids=report or [], limit=limit)
    except ValueError as exc:
        raise ClalaError(f"invalid option: {' '.join(str(exc).split())}") from None
    if dry_run:
        show_dry_run(db, options)
    else:
        summary = run_label(db, name, options, resume, allow_remote)
        if summary.status.value != "complete":
            raise typer.Exit(3)


@runs_app.command("list")
@user_errors
def runs_list(db: DbOption = DEFAULT_DB) -> None:
    """All runs with their status and counts."""
    from labeling.run_views import show_runs

    show_runs(db)


@runs_app.command("show")
@user_errors
def runs_show(run: Annotated[str, typer.Argument(help="run name or id")], db: DbOption = DEFAULT_DB) -> None:
    """A run's provenance: model, prompt sha256, vocabulary, decoding, work, labels, rejections."""
    from labeling.run_views import show_run

    show_run(db, run)


@app.command("import")
@user_errors
def import_(
    kind: Annotated[str, typer.Argument(help="scene-graphs | imagenome-gold | chexpert | mesh | labelstudio | synth-gold")],
    path: Annotated[Path, typer.Argument(help="the file or folder to import")],
    name: Annotated[str, typer.Option(help="name of the new run")],
    db: DbOption = DEFAULT_DB,
    dataset: Annotated[Optional[str], typer.Option(help="match reports of this dataset only")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
) -> None:
    """Import existing labels (scene graphs, CheXpert, MeSH, Label Studio, synthetic gold) as a run."""
    from labeling.import_views import run_import

    run_import(db, kind, path, name, dataset, str(vocabulary) if vocabulary else None, enable or [])


@app.command()
@user_errors
def failures(run: Annotated[str, typer.Argument(help="run name or id")], db: DbOption = DEFAULT_DB,
             limit: Annotated[int, typer.Option()] = 50) -> None:
    """Units that failed validation after re-asking, with the raw model output."""
    from labeling.run_views import show_failures

    show_failures(db, run, limit)


@prompts_app.command("list")
@user_errors
def prompts_list() -> None:
    """Available prompt templates."""
    from labeling.schema_views import show_prompts

    show_prompts()


@prompts_app.command("show")
@user_errors
def prompts_show(name: Annotated[str, typer.Argument()] = "region_labels") -> None:
    """A prompt's template files as written."""
    from labeling.schema_views import show_prompt_source

    show_prompt_source(name)


@prompts_app.command("render")
@user_errors
def prompts_render(
    name: Annotated[str, typer.Argument()] = "region_labels",
    text: Annotated[str, typer.Option(help="the unit text")] = "Small left pleural effusion.",
    context: Annotated[Optional[str], typer.Option(help="context sentences")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
) -> None:
    """The exact chat one unit sends, with the prompt's sha256."""
    from labeling.schema_views import render_prompt

    render_prompt(name, text, context, vocabulary, enable or [])


@app.command("compare")
@user_errors
def compare(
    runs: Annotated[list[str], typer.Argument(help="two runs (the second is the reference), or several runs "
                                                   "scored against --reference")],
    db: DbOption = DEFAULT_DB,
    reference: Annotated[Optional[str], typer.Option(help="the run the others are scored against")] = None,
    level: Annotated[str, typer.Option(help="region (report, region, finding cells) | image (regions "
                                            "collapsed)")] = "region",
    findings: Annotated[Optional[list[str]], typer.Option("--findings", help="only these findings (repeat); "
                                                          "default: those present or uncertain in any run")] = None,
    regions: Annotated[Optional[list[str]], typer.Option("--regions", help="only these regions (region level)")] = None,
    uncertain: Annotated[str, typer.Option(help="uncertain labels: exclude | positive | negative | own-class")] = "exclude",
    metric: Annotated[str, typer.Option(help="heatmap value: f1 | kappa | agreement | precision | recall")] = "f1",
    out: Annotated[Optional[Path], typer.Option("--out", help="folder for the CSV and heatmap PNG")] = None,
    vocabulary: VocabularyOption = None,
) -> None:
    """Agreement, Cohen's kappa, precision, recall and F1 of runs against a reference, per finding and region."""
    from labeling.compare_views import show_comparison

    show_comparison(db, runs, reference, level, findings, regions, uncertain, metric, out,
                    str(vocabulary) if vocabulary else None)


@app.command("disagreements")
@user_errors
def disagreements(
    run_a: Annotated[str, typer.Argument(help="run name or id")],
    run_b: Annotated[str, typer.Argument(help="run name or id")],
    out: Annotated[Path, typer.Option("--out", help="review queue file (.csv or .jsonl)")],
    db: DbOption = DEFAULT_DB,
    level: Annotated[str, typer.Option(help="region | image")] = "region",
    findings: Annotated[Optional[list[str]], typer.Option("--findings", help="only these findings (repeat)")] = None,
    limit: Annotated[Optional[int], typer.Option(help="at most this many cells (the queue's head)")] = None,
    vocabulary: VocabularyOption = None,
) -> None:
    """A review queue of the cells two runs disagree on, the decisions that matter most first."""
    from labeling.compare_views import show_disagreements

    show_disagreements(db, run_a, run_b, out, level, findings, limit, str(vocabulary) if vocabulary else None)


@app.command("export-labelstudio")
@user_errors
def export_labelstudio(
    run: Annotated[str, typer.Argument(help="run name or id")],
    out: Annotated[Path, typer.Option("--out", help="folder for tasks.json and labeling_config.xml")],
    db: DbOption = DEFAULT_DB,
    limit: Annotated[Optional[int], typer.Option(help="at most this many reports")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
) -> None:
    """Write a run's labels as Label Studio pre-annotated tasks, with the labeling config."""
    from labeling.labelstudio_views import run_export_labelstudio

    run_export_labelstudio(db, run, out, limit, str(vocabulary) if vocabulary else None, enable or [])


@app.command()
@user_errors
def synth(
    n: Annotated[int, typer.Option("--n", help="number of studies")] = 200,
    out: Annotated[Path, typer.Option("--out", help="new folder for the cohort")] = Path("synth-cohort"),
    seed: Annotated[int, typer.Option(help="the same seed writes the same cohort")] = 0,
    size: Annotated[int, typer.Option(help="image height in pixels (width varies, 82-100% of it)")] = 256,
    image_format: Annotated[str, typer.Option("--format", help="png | jpg")] = "png",
    prevalence: Annotated[Optional[list[str]], typer.Option(
        help="FINDING=RATE (repeatable) or a JSON object; findings as in the vocabulary")] = None,
    workers: Annotated[int, typer.Option(help="processes drawing studies")] = 1,
) -> None:
    """Write a synthetic cohort (phantom images, reports, scene graphs, splits, gold) in the real layouts."""
    from model.synth.views import run_synth

    run_synth(out, n, seed, size, image_format, prevalence or [], workers)


@app.command()
@user_errors
def quickstart(
    workdir: Annotated[Path, typer.Option("--dir", help="scratch folder")] = Path("clala-quickstart"),
) -> None:
    """Run the mission on the embedded defaults in a scratch folder."""
    from labeling.quickstart import run_quickstart

    run_quickstart(workdir)


if __name__ == "__main__":
    app()
