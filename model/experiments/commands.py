"""CLI view of `clala sensitivity`: a line per grid cell (with the trainer's progress bar while it
trains), then the table of label quality against model mean lesion F1 (mean ± std over seeds)
and where the CSVs and the plot were written."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labeling.core.cli_options import (
    DEFAULT_DB,
    DataOption,
    DbOption,
    DeviceOption,
    ImagenomeOption,
    user_errors,
)
from labeling.core.errors import InputError
from labeling.core.terminal import output_console
from model.experiments.sensitivity import SensitivityGrid, SensitivityResult, SummaryRow, parse_rates, run_sensitivity
from model.train.commands import TrainingDisplay


def _number(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


def _spread(mean: float, std: float) -> str:
    return _number(mean) if math.isnan(std) else f"{_number(mean)} ± {std:.3f}"


def summary_table(rows: list[SummaryRow], reference: str, split: str) -> Table:
    table = Table(
        title=f"Label quality vs model quality (reference {reference}, {split} split; mean ± std over seeds)",
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
            row.series,
            row.setting,
            str(row.seeds),
            _number(row.label_precision_mean),
            _number(row.label_recall_mean),
            _spread(row.label_f1_mean, row.label_f1_std),
            _spread(row.model_f1_mean, row.model_f1_std),
            _number(row.baseline_f1_mean),
            _number(row.image_f1_mean),
            _number(row.auroc_mean),
        )
    return table


def sensitivity_template(
    data: Path,
    db: Path,
    imagenome: Path | None,
    epochs: int,
    image_size: int,
    batch_size: int,
    lr: float,
    patience: int,
    backbone: str,
    d_model: int | None,
    decoder: bool,
    unlabeled: str,
    workers: int,
    device: str,
    threads: int | None,
    model_option: list[str] | None,
):
    """The training settings every cell shares, as a TrainConfig (run, seed, lesions set per cell)."""
    from model.train.commands import _parse_model_options
    from model.train.loop import TrainConfig

    model: dict[str, Any] = {"backbone": backbone}
    if d_model is not None:
        model["d_model"] = d_model
    if not decoder:
        model["use_decoder"] = False
    model.update(_parse_model_options(model_option or []))
    return TrainConfig(
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
        model=model,
    )


def show_sensitivity(
    data: Path,
    db: Path,
    base: str,
    reference: str,
    drop: str | None,
    add: str | None,
    shift: str | None,
    sources: str | None,
    seeds: int,
    out: Path,
    uncertain: str = "ignore",
    shift_side: str = "same",
    findings: list[str] | None = None,
    split: str = "test",
    imagenome: Path | None = None,
    epochs: int = 3,
    image_size: int = 128,
    batch_size: int = 16,
    lr: float = 1e-3,
    patience: int = 0,
    backbone: str = "resnet18",
    d_model: int | None = None,
    decoder: bool = False,
    unlabeled: str = "error",
    workers: int = 0,
    device: str = "auto",
    threads: int | None = None,
    model_option: list[str] | None = None,
    console: Console | None = None,
) -> SensitivityResult:
    console = console or output_console()
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
    template = sensitivity_template(
        data,
        db,
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
    display: dict[str, TrainingDisplay] = {}

    def progress(event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "grid":
            console.print(f"sensitivity grid: {event['cells']} cells; lesions: {', '.join(event['lesions'])}")
        elif kind == "next":
            cell = event["cell"]
            console.print(
                f"[bold]cell {event['index']}/{event['total']}[/bold]: {cell.series} {escape(cell.setting)} "
                f"seed {cell.seed}",
                highlight=False,
            )
        elif kind == "cell":
            outcome = event["outcome"]
            if outcome == "start":
                q = event["label_quality"]["region"]
                console.print(
                    f"  labels {escape(event['derived_run'])}: precision {_number(q['precision'])} recall "
                    f"{_number(q['recall'])} F1 {_number(q['f1'])}; experiment {event['experiment_id']}",
                    highlight=False,
                )
            elif outcome == "reused":
                console.print(f"  done before (cell {event['key']}): not retrained", highlight=False)
            elif outcome == "shared":
                console.print(f"  the same labels and seed as an earlier cell ({event['key']})", highlight=False)
            else:
                model = event["result"].model
                console.print(
                    f"  {outcome}: test mean lesion F1 {_number(model['mean_lesion_f1'])} (constant "
                    f"{_number(model['baseline_mean_lesion_f1'])})",
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
    console.print(summary_table(result.rows, grid.reference, split))
    trained = sum(1 for c in result.cells if c.outcome == "trained")
    console.print(
        f"{len(result.cells)} cells: {trained} trained now, {len(result.cells) - trained} done before or shared"
    )
    console.print(f"wrote {result.csv_path}, {result.cells_csv_path} and {result.png_path}", highlight=False)
    return result


from model.train.commands import _train_config  # noqa: E402


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
    """Synthesise, ingest, label (rules + local LLM), compare, train on two sources, evaluate, generate, score."""
    from model.experiments.quickstart import QuickstartSettings, run_quickstart

    run_quickstart(
        workdir, llm=not no_llm, llm_aggregator=llm_aggregator, settings=QuickstartSettings.small() if small else None
    )
