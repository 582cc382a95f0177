"""The clala command line. Each command parses its options and calls one function."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from labeling.core.errors import ClalaError
from labeling.core.terminal import output_console

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
    path: Annotated[
        Path, typer.Argument(help="CSV, JSONL, IU X-ray indiana_reports.csv, or a MIMIC-CXR reports folder")
    ],
    db: DbOption = DEFAULT_DB,
    fmt: Annotated[str, typer.Option("--format", help="auto | csv | jsonl | mimic | iu-xray")] = "auto",
    dataset: Annotated[str | None, typer.Option(help="dataset name (default: from the format or file name)")] = None,
    id_col: Annotated[str, typer.Option("--id-col", help="column (CSV) or field (JSONL) with the report id")] = "id",
    text_col: Annotated[str, typer.Option("--text-col", help="column or field with the report text")] = "text",
    patient_col: Annotated[str | None, typer.Option("--patient-col")] = None,
    study_col: Annotated[str | None, typer.Option("--study-col")] = None,
    image_col: Annotated[str | None, typer.Option("--image-col", help="image paths (list, or ';'-separated)")] = None,
    encoding: Annotated[str, typer.Option(help="text encoding of the input")] = "utf-8",
    blank: Annotated[
        str,
        typer.Option(
            help="reports with no text: auto (error for CSV/JSONL, skip and list for "
            "MIMIC-CXR and IU X-ray) | error | skip"
        ),
    ] = "auto",
    max_chars: Annotated[int, typer.Option("--max-chars", help="reject reports longer than this")] = 100_000,
) -> None:
    """Ingest reports: sections, sentences with exact offsets; re-ingesting adds nothing new."""
    from labeling.ingest.readers import Columns
    from labeling.store.commands import run_ingest

    columns = Columns(id=id_col, text=text_col, patient=patient_col, study=study_col, images=image_col)
    run_ingest(db, path, fmt=fmt, columns=columns, dataset=dataset, encoding=encoding, blank=blank, max_chars=max_chars)


@reports_app.command("list")
@user_errors
def reports_list(
    db: DbOption = DEFAULT_DB,
    dataset: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 20,
    offset: Annotated[int, typer.Option()] = 0,
    all_versions: Annotated[
        bool, typer.Option("--all-versions", help="every stored version, not only the latest")
    ] = False,
) -> None:
    """List reports (latest versions)."""
    from labeling.store.commands import show_report_list

    show_report_list(db, dataset, limit, offset, all_versions)


@reports_app.command("show")
@user_errors
def reports_show(
    report_id: Annotated[str, typer.Argument(help="the report id as ingested")],
    db: DbOption = DEFAULT_DB,
    dataset: Annotated[str | None, typer.Option()] = None,
    version: Annotated[int | None, typer.Option(help="a stored version (default: the latest)")] = None,
) -> None:
    """Show one report: text with sentence boundaries, sections, and its labels per run."""
    from labeling.store.commands import show_report

    show_report(db, report_id, dataset, version)


@app.command()
@user_errors
def stats(db: DbOption = DEFAULT_DB) -> None:
    """Counts per table, per dataset and per run."""
    from labeling.store.commands import show_stats

    show_stats(db)


@export_app.command("labels")
@user_errors
def export_labels(
    run: Annotated[str, typer.Option("--run", help="run name or id")],
    out: Annotated[Path, typer.Option("--out", help="output file (.parquet, .csv, .jsonl)")],
    db: DbOption = DEFAULT_DB,
    fmt: Annotated[str | None, typer.Option("--format", help="parquet | csv | jsonl (default: from --out)")] = None,
) -> None:
    """Export a run's labels, one row per (report, region, finding) cell."""
    from labeling.store.export import export_labels as export

    rows = export(db, run, out, fmt)
    output_console().print(f"wrote {rows:,} labels to {out}")


@export_app.command("reports")
@user_errors
def export_reports(
    out: Annotated[Path, typer.Option("--out", help="output file (.parquet, .csv, .jsonl)")],
    db: DbOption = DEFAULT_DB,
    run: Annotated[str | None, typer.Option("--run", help="only reports this run labeled")] = None,
    dataset: Annotated[str | None, typer.Option()] = None,
    all_versions: Annotated[bool, typer.Option("--all-versions")] = False,
    fmt: Annotated[str | None, typer.Option("--format", help="parquet | csv | jsonl (default: from --out)")] = None,
) -> None:
    """Export reports (text, sections, metadata)."""
    from labeling.store.export import export_reports as export

    rows = export(db, out, fmt, dataset, run, all_versions)
    output_console().print(f"wrote {rows:,} reports to {out}")


VocabularyOption = Annotated[Path | None, typer.Option("--vocabulary", help="vocabulary file (default: shipped)")]
EnableOption = Annotated[
    list[str] | None,
    typer.Option("--enable", help="add a finding category (tubesandlines, device, technicalassessment)"),
]


@schema_app.command("export")
@user_errors
def schema_export(
    out: Annotated[Path | None, typer.Option("--out", help="file to write (default: stdout)")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
) -> None:
    """Write the JSON Schema of one unit's LLM answer, as the labeling engine sends it."""
    from labeling.sources.llm.commands import export_label_schema

    export_label_schema(out, vocabulary, enable or [])


@schema_app.command("vocabulary")
@user_errors
def schema_vocabulary(vocabulary: VocabularyOption = None, enable: EnableOption = None) -> None:
    """Print the regions and findings of a vocabulary."""
    from labeling.sources.llm.commands import show_vocabulary

    show_vocabulary(vocabulary, enable or [])


@app.command()
@user_errors
def label(
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


@runs_app.command("list")
@user_errors
def runs_list(db: DbOption = DEFAULT_DB) -> None:
    """All runs with their status and counts."""
    from labeling.sources.commands import show_runs

    show_runs(db)


@runs_app.command("show")
@user_errors
def runs_show(run: Annotated[str, typer.Argument(help="run name or id")], db: DbOption = DEFAULT_DB) -> None:
    """A run's provenance: model, prompt sha256, vocabulary, decoding, work, labels, rejections."""
    from labeling.sources.commands import show_run

    show_run(db, run)


@app.command("import")
@user_errors
def import_(
    kind: Annotated[
        str, typer.Argument(help="scene-graphs | imagenome-gold | chexpert | mesh | labelstudio | synth-gold")
    ],
    path: Annotated[Path, typer.Argument(help="the file or folder to import")],
    name: Annotated[str, typer.Option(help="name of the new run")],
    db: DbOption = DEFAULT_DB,
    dataset: Annotated[str | None, typer.Option(help="match reports of this dataset only")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
) -> None:
    """Import existing labels (scene graphs, CheXpert, MeSH, Label Studio, synthetic gold) as a run."""
    from labeling.sources.imports.commands import run_import

    run_import(db, kind, path, name, dataset, str(vocabulary) if vocabulary else None, enable or [])


@app.command()
@user_errors
def failures(
    run: Annotated[str, typer.Argument(help="run name or id")],
    db: DbOption = DEFAULT_DB,
    limit: Annotated[int, typer.Option()] = 50,
) -> None:
    """Units that failed validation after re-asking, with the raw model output."""
    from labeling.sources.commands import show_failures

    show_failures(db, run, limit)


@prompts_app.command("list")
@user_errors
def prompts_list() -> None:
    """Available prompt templates."""
    from labeling.sources.llm.commands import show_prompts

    show_prompts()


@prompts_app.command("show")
@user_errors
def prompts_show(name: Annotated[str, typer.Argument()] = "region_labels") -> None:
    """A prompt's template files as written."""
    from labeling.sources.llm.commands import show_prompt_source

    show_prompt_source(name)


@prompts_app.command("render")
@user_errors
def prompts_render(
    name: Annotated[str, typer.Argument()] = "region_labels",
    text: Annotated[str, typer.Option(help="the unit text")] = "Small left pleural effusion.",
    context: Annotated[str | None, typer.Option(help="context sentences")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
) -> None:
    """The exact chat one unit sends, with the prompt's sha256."""
    from labeling.sources.llm.commands import render_prompt

    render_prompt(name, text, context, vocabulary, enable or [])


@app.command("compare")
@user_errors
def compare(
    runs: Annotated[
        list[str],
        typer.Argument(help="two runs (the second is the reference), or several runs scored against --reference"),
    ],
    db: DbOption = DEFAULT_DB,
    reference: Annotated[str | None, typer.Option(help="the run the others are scored against")] = None,
    level: Annotated[
        str, typer.Option(help="region (report, region, finding cells) | image (regions collapsed)")
    ] = "region",
    findings: Annotated[
        list[str] | None,
        typer.Option("--findings", help="only these findings (repeat); default: those present or uncertain in any run"),
    ] = None,
    regions: Annotated[list[str] | None, typer.Option("--regions", help="only these regions (region level)")] = None,
    uncertain: Annotated[
        str, typer.Option(help="uncertain labels: exclude | positive | negative | own-class")
    ] = "exclude",
    metric: Annotated[str, typer.Option(help="heatmap value: f1 | kappa | agreement | precision | recall")] = "f1",
    out: Annotated[Path | None, typer.Option("--out", help="folder for the CSV and heatmap PNG")] = None,
    vocabulary: VocabularyOption = None,
) -> None:
    """Agreement, Cohen's kappa, precision, recall and F1 of runs against a reference, per finding and region."""
    from labeling.review.commands import show_comparison

    show_comparison(
        db, runs, reference, level, findings, regions, uncertain, metric, out, str(vocabulary) if vocabulary else None
    )


@app.command("disagreements")
@user_errors
def disagreements(
    run_a: Annotated[str, typer.Argument(help="run name or id")],
    run_b: Annotated[str, typer.Argument(help="run name or id")],
    out: Annotated[Path, typer.Option("--out", help="review queue file (.csv or .jsonl)")],
    db: DbOption = DEFAULT_DB,
    level: Annotated[str, typer.Option(help="region | image")] = "region",
    findings: Annotated[list[str] | None, typer.Option("--findings", help="only these findings (repeat)")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many cells (the queue's head)")] = None,
    vocabulary: VocabularyOption = None,
) -> None:
    """A review queue of the cells two runs disagree on, the decisions that matter most first."""
    from labeling.review.commands import show_disagreements

    show_disagreements(db, run_a, run_b, out, level, findings, limit, str(vocabulary) if vocabulary else None)


@app.command("export-labelstudio")
@user_errors
def export_labelstudio(
    run: Annotated[str, typer.Argument(help="run name or id")],
    out: Annotated[Path, typer.Option("--out", help="folder for tasks.json and labeling_config.xml")],
    db: DbOption = DEFAULT_DB,
    limit: Annotated[int | None, typer.Option(help="at most this many reports")] = None,
    vocabulary: VocabularyOption = None,
    enable: EnableOption = None,
) -> None:
    """Write a run's labels as Label Studio pre-annotated tasks, with the labeling config."""
    from labeling.review.labelstudio_commands import run_export_labelstudio

    run_export_labelstudio(db, run, out, limit, str(vocabulary) if vocabulary else None, enable or [])


@app.command()
@user_errors
def synth(
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


@app.command()
@user_errors
def derive(
    run: Annotated[str, typer.Argument(help="source run name or id")],
    name: Annotated[str, typer.Option(help="name of the new derived run")],
    db: DbOption = DEFAULT_DB,
    uncertain: Annotated[
        str,
        typer.Option(
            help="uncertain labels become: positive | negative | ignore (kept uncertain, left out of training)"
        ),
    ] = "ignore",
    drop: Annotated[float, typer.Option(help="rate at which present labels are omitted")] = 0.0,
    add: Annotated[float, typer.Option(help="rate at which allowed absent/unmentioned cells turn present")] = 0.0,
    shift: Annotated[float, typer.Option(help="rate at which present labels move to a neighbouring region")] = 0.0,
    shift_side: Annotated[
        str, typer.Option("--shift-side", help="same (adjacent zone, same side) | other (mirror region)")
    ] = "same",
    keep: Annotated[float, typer.Option(help="fraction of the source's reports kept labeled")] = 1.0,
    seed: Annotated[int, typer.Option(help="the same seed gives the same labels")] = 0,
    reference: Annotated[str | None, typer.Option(help="run to measure the derived labels against")] = None,
    vocabulary: VocabularyOption = None,
) -> None:
    """Store a run's labels after an uncertainty policy and seeded corruptions as a derived run."""
    from model.labels.commands import run_derive

    run_derive(
        db,
        run,
        name,
        uncertain,
        drop,
        add,
        shift,
        shift_side,
        keep,
        seed,
        reference,
        str(vocabulary) if vocabulary else None,
    )


# --- CLALA-Net: train, evaluate, predict, ablate ------------------------------------------------------
DataOption = Annotated[Path, typer.Option("--data", help="images root (MIMIC-CXR-JPG layout, or a clala synth folder)")]
ImagenomeOption = Annotated[
    Path | None,
    typer.Option("--imagenome", help="Chest ImaGenome root with splits/ and scene_graph/ (default: --data)"),
]
DeviceOption = Annotated[str, typer.Option(help="auto (CUDA if available) | cpu | cuda | cuda:N")]


def _train_config(*options):
    """The training options, in `model.train.commands.train_config_from_options`'s order, as a TrainConfig."""
    from model.train.commands import train_config_from_options

    return train_config_from_options(*options)


@app.command()
@user_errors
def train(
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            "--label-run",
            help="label run to train on (name or id); spell it --label-run under torchrun, whose own options swallow --run",
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="images root (MIMIC-CXR-JPG layout, or a clala synth folder)")
    ] = None,
    db: DbOption = DEFAULT_DB,
    imagenome: ImagenomeOption = None,
    name: Annotated[str | None, typer.Option(help="experiment name (default: RUN-time)")] = None,
    uncertain: Annotated[str, typer.Option(help="uncertain labels: ignore | positive | negative")] = "ignore",
    unmentioned: Annotated[str, typer.Option(help="unmentioned cells: negative | ignore")] = "negative",
    unlabeled: Annotated[
        str, typer.Option(help="images whose report the run did not cover: error | skip | all-negative")
    ] = "error",
    sentences: Annotated[str, typer.Option(help="region sentences: evidence | scene-graph | none")] = "evidence",
    findings: Annotated[
        list[str] | None,
        typer.Option("--findings", help="train on these lesions (repeat; default: the run's findings)"),
    ] = None,
    image_size: Annotated[int, typer.Option("--image-size")] = 224,
    no_augment: Annotated[bool, typer.Option("--no-augment", help="no random scale/shift")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="global batch (over all processes)")] = 16,
    epochs: Annotated[int, typer.Option()] = 10,
    lr: Annotated[float, typer.Option()] = 3e-4,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 0.01,
    warmup: Annotated[float, typer.Option(help="fraction of steps warming up")] = 0.05,
    grad_clip: Annotated[float, typer.Option("--grad-clip", help="max gradient norm (0: off)")] = 1.0,
    pos_weight_max: Annotated[
        float, typer.Option("--pos-weight-max", help="clip of the class-imbalance weights")
    ] = 20.0,
    seed: Annotated[int, typer.Option()] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader processes")] = 0,
    device: DeviceOption = "auto",
    no_amp: Annotated[bool, typer.Option("--no-amp", help="full precision on CUDA")] = False,
    patience: Annotated[
        int, typer.Option(help="early stopping: epochs without a better validation mean lesion F1 (0: off)")
    ] = 3,
    checkpoint_dir: Annotated[Path, typer.Option("--checkpoint-dir")] = Path("checkpoints"),
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    backbone: Annotated[str, typer.Option(help="timm model name")] = "resnet18",
    backbone_weights: Annotated[Path | None, typer.Option("--backbone-weights", help="local state-dict file")] = None,
    text_encoder: Annotated[
        Path | None, typer.Option("--text-encoder", help="local transformers encoder folder (default: small BERT)")
    ] = None,
    decoder: Annotated[
        Path | None, typer.Option(help="local transformers causal LM folder (default: small GPT-2)")
    ] = None,
    d_model: Annotated[int | None, typer.Option("--d-model")] = None,
    no_lca: Annotated[bool, typer.Option("--no-lca")] = False,
    no_llcl: Annotated[bool, typer.Option("--no-llcl")] = False,
    no_itcl: Annotated[bool, typer.Option("--no-itcl")] = False,
    no_decoder: Annotated[bool, typer.Option("--no-decoder")] = False,
    region_weight: Annotated[float | None, typer.Option("--region-weight")] = None,
    global_weight: Annotated[float | None, typer.Option("--global-weight")] = None,
    llcl_weight: Annotated[float | None, typer.Option("--llcl-weight")] = None,
    itcl_weight: Annotated[float | None, typer.Option("--itcl-weight")] = None,
    decoder_weight: Annotated[float | None, typer.Option("--decoder-weight")] = None,
    model_option: Annotated[
        list[str] | None,
        typer.Option("--model-option", help="any CLALA-Net setting, KEY=VALUE (repeat), e.g. lca_heads=8"),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="continue from this checkpoint (last.pt) with its saved settings")
    ] = None,
) -> None:
    """Train CLALA-Net on a label run; checkpoints, thresholds and the experiment row are saved."""
    from model.train.commands import run_train

    run_train(
        _train_config(
            run,
            data,
            db,
            imagenome,
            name,
            uncertain,
            unmentioned,
            unlabeled,
            sentences,
            findings,
            image_size,
            no_augment,
            batch_size,
            epochs,
            lr,
            weight_decay,
            warmup,
            grad_clip,
            pos_weight_max,
            seed,
            workers,
            device,
            no_amp,
            patience,
            checkpoint_dir,
            threads,
            backbone,
            backbone_weights,
            text_encoder,
            decoder,
            d_model,
            no_lca,
            no_llcl,
            no_itcl,
            no_decoder,
            region_weight,
            global_weight,
            llcl_weight,
            itcl_weight,
            decoder_weight,
            model_option,
            resume,
        )
    )


@app.command("evaluate")
@user_errors
def evaluate_(
    checkpoint: Annotated[Path, typer.Argument(help="a CLALA-Net checkpoint (best.pt)")],
    reference: Annotated[str, typer.Option(help="run the predictions are scored against")],
    data: DataOption,
    db: DbOption = DEFAULT_DB,
    imagenome: ImagenomeOption = None,
    split: Annotated[str, typer.Option(help="train | valid | test")] = "test",
    out: Annotated[Path | None, typer.Option("--out", help="CSV file (default: beside the checkpoint)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    device: DeviceOption = "auto",
) -> None:
    """Per-lesion precision, recall, F1 (region and image level) and AUROC; mean lesion F1 vs a constant baseline."""
    from model.train.commands import show_evaluation

    show_evaluation(checkpoint, db, data, reference, split, imagenome, out, batch_size, device)


@app.command()
@user_errors
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="a CLALA-Net checkpoint (best.pt)")],
    data: DataOption,
    name: Annotated[str, typer.Option(help="name of the new run (kind model)")],
    db: DbOption = DEFAULT_DB,
    imagenome: ImagenomeOption = None,
    split: Annotated[str | None, typer.Option(help="train | valid | test (default: every split)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    device: DeviceOption = "auto",
) -> None:
    """Store a model's region-level predictions as a label run, comparable with `clala compare`."""
    from model.train.commands import run_predict

    run_predict(checkpoint, db, data, name, split, imagenome, batch_size, device)


@app.command()
@user_errors
def ablate(
    run: Annotated[str, typer.Option("--run", help="label run to train on (name or id)")],
    data: DataOption,
    db: DbOption = DEFAULT_DB,
    imagenome: ImagenomeOption = None,
    variants: Annotated[
        list[str] | None,
        typer.Option("--variants", help="full | no-lca | no-llcl | no-itcl (repeat; default: all four)"),
    ] = None,
    reference: Annotated[str | None, typer.Option(help="run to score against (default: --run)")] = None,
    split: Annotated[str, typer.Option(help="split to score on")] = "test",
    uncertain: Annotated[str, typer.Option(help="uncertain labels: ignore | positive | negative")] = "ignore",
    unlabeled: Annotated[str, typer.Option(help="error | skip | all-negative")] = "error",
    findings: Annotated[list[str] | None, typer.Option("--findings", help="train on these lesions (repeat)")] = None,
    image_size: Annotated[int, typer.Option("--image-size")] = 224,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    epochs: Annotated[int, typer.Option()] = 10,
    lr: Annotated[float, typer.Option()] = 3e-4,
    seed: Annotated[int, typer.Option()] = 0,
    workers: Annotated[int, typer.Option()] = 0,
    device: DeviceOption = "auto",
    patience: Annotated[int, typer.Option()] = 3,
    checkpoint_dir: Annotated[Path, typer.Option("--checkpoint-dir", help="one subfolder per variant")] = Path(
        "ablation"
    ),
    threads: Annotated[int | None, typer.Option()] = None,
    backbone: Annotated[str, typer.Option()] = "resnet18",
    backbone_weights: Annotated[Path | None, typer.Option("--backbone-weights")] = None,
    d_model: Annotated[int | None, typer.Option("--d-model")] = None,
    no_decoder: Annotated[bool, typer.Option("--no-decoder", help="ablate the recognition model only")] = False,
    model_option: Annotated[list[str] | None, typer.Option("--model-option", help="KEY=VALUE (repeat)")] = None,
) -> None:
    """Train full / no-LCA / no-LLCL / no-ITCL on the same data and seeds, evaluate each, print the table."""
    from model.train.commands import run_ablate

    config = _train_config(
        run,
        data,
        db,
        imagenome,
        None,
        uncertain,
        "negative",
        unlabeled,
        "evidence",
        findings,
        image_size,
        False,
        batch_size,
        epochs,
        lr,
        0.01,
        0.05,
        1.0,
        20.0,
        seed,
        workers,
        device,
        False,
        patience,
        checkpoint_dir,
        threads,
        backbone,
        backbone_weights,
        None,
        None,
        d_model,
        False,
        False,
        False,
        no_decoder,
        None,
        None,
        None,
        None,
        None,
        model_option,
        None,
    )
    run_ablate(config, variants, reference, split)


@app.command()
@user_errors
def sensitivity(
    data: DataOption,
    base: Annotated[str, typer.Option(help="run whose labels are corrupted (name or id)")],
    reference: Annotated[str, typer.Option(help="run label quality and model quality are measured against")],
    db: DbOption = DEFAULT_DB,
    drop: Annotated[str | None, typer.Option(help="omission rates, e.g. 0,0.1,0.2,0.4")] = None,
    add: Annotated[str | None, typer.Option(help="false-positive rates, e.g. 0,0.05,0.1")] = None,
    shift: Annotated[str | None, typer.Option(help="neighbouring-region shift rates, e.g. 0,0.2,0.4")] = None,
    shift_side: Annotated[str, typer.Option("--shift-side", help="same | other")] = "same",
    sources: Annotated[
        str | None, typer.Option(help="real label runs trained as they are, e.g. rules,gold-report")
    ] = None,
    seeds: Annotated[int, typer.Option(help="seeds per grid point (labels and training): 0..N-1")] = 3,
    uncertain: Annotated[str, typer.Option(help="uncertain labels: ignore | positive | negative")] = "ignore",
    findings: Annotated[
        list[str] | None,
        typer.Option(
            "--findings", help="train and score these lesions (repeat; default: the reference's present findings)"
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="split the models are scored on")] = "test",
    imagenome: ImagenomeOption = None,
    out: Annotated[Path, typer.Option("--out", help="folder for the CSVs, the plot and the cells' checkpoints")] = Path(
        "sensitivity"
    ),
    epochs: Annotated[int, typer.Option()] = 10,
    image_size: Annotated[int, typer.Option("--image-size")] = 224,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    lr: Annotated[float, typer.Option()] = 3e-4,
    patience: Annotated[int, typer.Option(help="early stopping (0: off)")] = 3,
    backbone: Annotated[str, typer.Option(help="timm model name")] = "resnet18",
    d_model: Annotated[int | None, typer.Option("--d-model")] = None,
    decoder: Annotated[
        bool,
        typer.Option("--decoder", help="train the sentence decoder too (off: it does not change lesion recognition)"),
    ] = False,
    unlabeled: Annotated[str, typer.Option(help="images a run did not cover: error | skip | all-negative")] = "error",
    workers: Annotated[int, typer.Option()] = 0,
    device: DeviceOption = "auto",
    threads: Annotated[int | None, typer.Option()] = None,
    model_option: Annotated[list[str] | None, typer.Option("--model-option", help="KEY=VALUE (repeat)")] = None,
) -> None:
    """Train over a grid of label corruptions and sources; table and plot of model F1 against label F1 (resumable)."""
    from model.experiments.commands import show_sensitivity

    show_sensitivity(
        data,
        db,
        base,
        reference,
        drop,
        add,
        shift,
        sources,
        seeds,
        out,
        uncertain,
        shift_side,
        findings,
        split,
        imagenome,
        epochs,
        image_size,
        batch_size,
        lr,
        patience,
        backbone,
        d_model,
        decoder,
        unlabeled,
        workers,
        device,
        threads,
        model_option,
    )


@app.command()
@user_errors
def generate(
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


@app.command("score-reports")
@user_errors
def score_reports(
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


@app.command()
@user_errors
def quickstart(
    workdir: Annotated[
        Path, typer.Option("--workdir", "--dir", help="scratch folder (a second run continues where the first stopped)")
    ] = Path("clala-quickstart"),
    no_llm: Annotated[bool, typer.Option("--no-llm", help="skip labeling with the embedded local LLM")] = False,
    llm_aggregator: Annotated[
        bool,
        typer.Option(
            "--llm-aggregator", help="write the generated reports with the local LLM (default: deterministic)"
        ),
    ] = False,
    small: Annotated[bool, typer.Option("--small", help="a tiny cohort and model: seconds, for tests")] = False,
) -> None:
    """Synthesise, ingest, label (rules + local LLM), compare, train on two sources, evaluate, generate, score."""
    from model.experiments.quickstart import QuickstartSettings, run_quickstart

    run_quickstart(
        workdir, llm=not no_llm, llm_aggregator=llm_aggregator, settings=QuickstartSettings.small() if small else None
    )


if __name__ == "__main__":
    app()
