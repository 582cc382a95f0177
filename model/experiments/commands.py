"""`clala ablate` (a table of the variants), `clala sensitivity` (a line per grid cell, with the
trainer's progress bar while it trains, then the table of label quality against model mean
lesion F1, mean ± std over seeds, and where the CSVs and the plot went) and `clala quickstart`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from labeling.core.cli_options import DEFAULT_DB, DataOption, DbOption, DeviceOption, ImagenomeOption, user_errors
from labeling.core.formatting import format_mean_std, format_number
from labeling.core.terminal import literal
from model.train.options import (
    DEFAULT_BACKBONE,
    TRAIN_DEFAULTS,
    BackboneOption,
    BackboneWeightsOption,
    BatchSizeOption,
    DModelOption,
    EpochsOption,
    FindingsOption,
    ImageSizeOption,
    LrOption,
    ModelOptionOption,
    PatienceOption,
    SeedOption,
    ThreadsOption,
    UncertainOption,
    UnlabeledOption,
    WorkersOption,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from model.experiments.ablation import AblationRow
    from model.experiments.sensitivity import SensitivityGrid, SensitivityResult, SummaryRow
    from model.train.commands import TrainingDisplay
    from model.train.config import TrainConfig

D = TRAIN_DEFAULTS
ABLATION_COLUMNS = (
    "variant",
    "mean lesion F1",
    "image F1",
    "constant F1",
    "valid F1",
    "best epoch",
    "parameters",
    "train s",
)


def summary_table(rows: list[SummaryRow], reference: str, split: str) -> Table:
    from rich.table import Table

    table = Table(
        title=f"Label quality vs model quality (reference {literal(reference)}, {literal(split)} split; "
        "mean ± std over seeds)",
        title_justify="left",
    )
    for column in (
        "series",
        "setting",
        "seeds",
        "label P",
        "label R",
        "label F1",
        "model mean lesion F1",
        "constant F1",
        "image F1",
        "AUROC",
    ):
        table.add_column(column, justify="left" if column in ("series", "setting") else "right")
    for row in rows:
        table.add_row(
            literal(row.series),
            literal(row.setting),
            str(row.seeds),
            format_number(row.label_precision_mean),
            format_number(row.label_recall_mean),
            format_mean_std(row.label_f1_mean, row.label_f1_std),
            format_mean_std(row.model_f1_mean, row.model_f1_std),
            format_number(row.baseline_f1_mean),
            format_number(row.image_f1_mean),
            format_number(row.auroc_mean),
        )
    return table


def show_sensitivity(grid: SensitivityGrid, template: TrainConfig, console: Console | None = None) -> SensitivityResult:
    """Run the grid with `template`'s training settings, showing each cell; then the summary
    table and where the files went."""
    from labeling.core.terminal import output_console
    from model.experiments.sensitivity import run_sensitivity
    from model.train.commands import TrainingDisplay

    console = console or output_console()
    display: dict[str, TrainingDisplay] = {}

    def progress(event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "grid":
            console.print(f"sensitivity grid: {event['cells']} cells; lesions: {literal(', '.join(event['lesions']))}")
        elif kind == "next":
            cell = event["cell"]
            console.print(
                f"[bold]cell {event['index']}/{event['total']}[/bold]: {literal(cell.series)} {literal(cell.setting)} "
                f"seed {cell.seed}",
                highlight=False,
            )
        elif kind == "cell":
            outcome = event["outcome"]
            if outcome == "start":
                q = event["label_quality"]["region"]
                console.print(
                    f"  labels {literal(event['derived_run'])}: precision {format_number(q['precision'])} recall "
                    f"{format_number(q['recall'])} F1 {format_number(q['f1'])}; experiment {event['experiment_id']}",
                    highlight=False,
                )
            elif outcome == "reused":
                console.print(f"  done before (cell {event['key']}): not retrained", highlight=False)
            elif outcome == "shared":
                console.print(f"  the same labels and seed as an earlier cell ({event['key']})", highlight=False)
            else:
                model = event["result"].model
                console.print(
                    f"  {outcome}: test mean lesion F1 {format_number(model['mean_lesion_f1'])} (constant "
                    f"{format_number(model['baseline_mean_lesion_f1'])})",
                    highlight=False,
                )
        elif kind == "start":
            display["bar"] = TrainingDisplay(console, label="  train").__enter__()
            display["bar"](event)
        elif "bar" in display:
            display["bar"](event)
            if kind == "done":
                display.pop("bar").__exit__(None, None, None)

    try:
        result = run_sensitivity(grid, template, progress)
    finally:
        if "bar" in display:
            display.pop("bar").progress.stop()
    console.print(summary_table(result.rows, grid.reference, grid.split))
    trained = sum(1 for c in result.cells if c.outcome == "trained")
    console.print(
        f"{len(result.cells)} cells: {trained} trained now, {len(result.cells) - trained} done before or shared"
    )
    console.print(
        f"wrote {literal(result.csv_path)}, {literal(result.cells_csv_path)} and {literal(result.png_path)}",
        highlight=False,
    )
    return result


def show_ablation(
    config: TrainConfig, variants: list[str] | None, reference: str | None, split: str, console: Console | None = None
) -> list[AblationRow]:
    """Train and evaluate the variants with a progress bar each; then their table."""
    from rich.table import Table

    from labeling.core.terminal import output_console
    from model.experiments.ablation import ablate
    from model.train.commands import TrainingDisplay

    console = console or output_console()
    displays: dict[str, TrainingDisplay] = {}

    def progress(variant: str, event: dict[str, Any]) -> None:
        if event["event"] == "start":
            displays[variant] = TrainingDisplay(console, label=variant).__enter__()
        display = displays.get(variant)
        if display is not None:
            display(event)
            if event["event"] == "done":
                display.__exit__(None, None, None)

    try:
        rows = ablate(config, variants, reference, split, progress)
    finally:
        for display in displays.values():
            display.progress.stop()
    table = Table(
        title=f"ablation: {literal(config.run)} ({literal(split)}, reference {literal(reference or config.run)})"
    )
    for column in ABLATION_COLUMNS:
        table.add_column(column, justify="left" if column == "variant" else "right")
    for row in rows:
        table.add_row(
            literal(row.variant),
            format_number(row.mean_lesion_f1),
            format_number(row.image_mean_f1),
            format_number(row.baseline_mean_lesion_f1),
            format_number(row.valid_mean_lesion_f1),
            str(row.best_epoch),
            f"{row.parameters:,}",
            f"{row.train_seconds:.0f}",
        )
    console.print(table)
    return rows


@user_errors
def ablate_command(
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
    uncertain: UncertainOption = D.uncertain,
    unlabeled: UnlabeledOption = D.unlabeled,
    findings: FindingsOption = None,
    image_size: ImageSizeOption = D.image_size,
    batch_size: BatchSizeOption = D.batch_size,
    epochs: EpochsOption = D.epochs,
    lr: LrOption = D.lr,
    seed: SeedOption = D.seed,
    workers: WorkersOption = D.workers,
    device: DeviceOption = D.device,
    patience: PatienceOption = D.patience,
    checkpoint_dir: Annotated[Path, typer.Option("--checkpoint-dir", help="one subfolder per variant")] = Path(
        "ablation"
    ),
    threads: ThreadsOption = D.threads,
    backbone: BackboneOption = DEFAULT_BACKBONE,
    backbone_weights: BackboneWeightsOption = None,
    d_model: DModelOption = None,
    no_decoder: Annotated[bool, typer.Option("--no-decoder", help="ablate the recognition model only")] = False,
    model_option: ModelOptionOption = None,
) -> None:
    """Train full / no-LCA / no-LLCL / no-ITCL on the same data and seeds, evaluate each, print the table."""
    from model.train.config import TrainConfig
    from model.train.options import model_settings

    model = model_settings(
        model_option, backbone=backbone, backbone_weights=backbone_weights, d_model=d_model, no_decoder=no_decoder
    )
    config = TrainConfig(
        run=run,
        data=str(data),
        imagenome=str(imagenome) if imagenome else None,
        db=str(db),
        uncertain=uncertain,
        unlabeled=unlabeled,
        findings=list(findings or []),
        image_size=image_size,
        batch_size=batch_size,
        epochs=epochs,
        lr=lr,
        seed=seed,
        workers=workers,
        device=device,
        patience=patience,
        checkpoint_dir=str(checkpoint_dir),
        threads=threads,
        model=model,
    )
    show_ablation(config, variants, reference, split)


@user_errors
def sensitivity_command(
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
    uncertain: UncertainOption = D.uncertain,
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
    epochs: EpochsOption = D.epochs,
    image_size: ImageSizeOption = D.image_size,
    batch_size: BatchSizeOption = D.batch_size,
    lr: LrOption = D.lr,
    patience: PatienceOption = D.patience,
    backbone: BackboneOption = DEFAULT_BACKBONE,
    d_model: DModelOption = None,
    decoder: Annotated[
        bool,
        typer.Option("--decoder", help="train the sentence decoder too (off: it does not change lesion recognition)"),
    ] = False,
    unlabeled: UnlabeledOption = D.unlabeled,
    workers: WorkersOption = D.workers,
    device: DeviceOption = D.device,
    threads: ThreadsOption = D.threads,
    model_option: ModelOptionOption = None,
) -> None:
    """Train over a grid of label corruptions and sources; table and plot of model F1 against label F1 (resumable)."""
    from labeling.core.errors import InputError
    from model.experiments.sensitivity import SensitivityGrid, parse_rates
    from model.train.config import TrainConfig
    from model.train.options import model_settings

    if seeds < 1:
        raise InputError(f"--seeds: {seeds} is below 1")
    grid = SensitivityGrid(
        data=str(data),
        db=str(db),
        base=base,
        reference=reference,
        drop=parse_rates(drop, "--drop"),
        add=parse_rates(add, "--add"),
        shift=parse_rates(shift, "--shift"),
        sources=[s.strip() for s in (sources or "").split(",") if s.strip()],
        seeds=list(range(seeds)),
        uncertain=uncertain,
        shift_side=shift_side,
        findings=list(findings or []),
        split=split,
        imagenome=str(imagenome) if imagenome else None,
        out=str(out),
    )
    # The training settings every cell shares (run, seed, lesions and folders are set per cell).
    template = TrainConfig(
        run="(per cell)",
        data=str(data),
        imagenome=str(imagenome) if imagenome else None,
        db=str(db),
        unlabeled=unlabeled,
        image_size=image_size,
        batch_size=batch_size,
        epochs=epochs,
        lr=lr,
        patience=patience,
        workers=workers,
        device=device,
        threads=threads,
        model=model_settings(model_option, backbone=backbone, d_model=d_model, no_decoder=not decoder),
    )
    show_sensitivity(grid, template)


@user_errors
def quickstart_command(
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
    """Synthesise, ingest, label (rules + local LLM), compare, train on two sources, evaluate, generate, score.

    Exit code 0 when every step finished; 3 when one failed or did not finish (the summary marks it
    FAILED with the reason and the command that finishes it; the other steps still ran)."""
    from model.experiments.quickstart import FAILED_EXIT_CODE, QuickstartSettings, run_quickstart

    result = run_quickstart(
        workdir, llm=not no_llm, llm_aggregator=llm_aggregator, settings=QuickstartSettings.small() if small else None
    )
    if result.failed:  # a step that failed never reads as success; the summary said which and how to finish it
        raise typer.Exit(FAILED_EXIT_CODE)
