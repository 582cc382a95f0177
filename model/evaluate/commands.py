"""`clala evaluate` (per-lesion table and the means against the constant baseline) and
`clala predict` (a checkpoint's predictions stored as a label run)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from labeling.core.cli_options import DEFAULT_DB, DataOption, DbOption, DeviceOption, ImagenomeOption, user_errors
from labeling.core.formatting import format_number
from labeling.core.terminal import literal

if TYPE_CHECKING:
    from rich.console import Console

    from labeling.store.run_records import RunResult
    from model.evaluate.evaluate import Evaluation

CheckpointArgument = Annotated[Path, typer.Argument(help="a CLALA-Net checkpoint (best.pt)")]
BatchSizeOption = Annotated[int, typer.Option("--batch-size")]
EVALUATION_COLUMNS = (
    "lesion",
    "support",
    "threshold",
    "precision",
    "recall",
    "F1",
    "AUROC",
    "constant F1",
    "image F1",
    "image AUROC",
)


def show_evaluation(result: Evaluation, console: Console) -> None:
    """The per-lesion table, the means and where the CSV went."""
    from rich.table import Table

    number = format_number
    table = Table(
        title=f"{literal(Path(result.checkpoint).name)} vs {literal(result.reference)} "
        f"({result.split}, {result.images:,} images)"
    )
    for column in EVALUATION_COLUMNS:
        table.add_column(column, justify="left" if column == "lesion" else "right")
    for row in result.lesions:
        table.add_row(
            literal(row.lesion),
            f"{row.support:,}",
            *(number(v) for v in (row.threshold, row.precision, row.recall, row.f1, row.auroc, row.baseline_f1)),
            number(row.image_f1),
            number(row.image_auroc),
        )
    console.print(table)
    if result.not_scored:
        shown = ", ".join(f"{literal(name)} ({count:,})" for name, count in result.not_scored.items())
        fewer = (
            "no positive cell" if result.min_positives <= 1 else f"fewer than {result.min_positives:,} positive cells"
        )
        console.print(f"not scored ({fewer}; left out of the means): {shown}")
    console.print(
        f"mean lesion F1 {number(result.mean_lesion_f1)} over {len(result.scored):,} lesions (constant-prediction "
        f"baseline {number(result.baseline_mean_lesion_f1)}, ratio {number(result.ratio_to_baseline, 2)}); "
        f"image-level mean F1 {number(result.image_mean_f1)}; mean AUROC {number(result.mean_auroc)}"
    )
    console.print(f"wrote {literal(result.csv_path)}; experiment {result.experiment_id}")


def show_prediction(result: RunResult, db: Path, console: Console) -> None:
    """What `clala predict` stored, and how to compare it."""
    c = result.counts
    console.print(
        f"run {literal(result.name)} (model): {result.reports:,} reports, {result.labels:,} labels "
        f"({c['present']:,} present) from {c['images']:,} images"
        + (f"; {c['skipped_images']:,} images without a stored report skipped" if c["skipped_images"] else "")
    )
    console.print(f"compare it: clala compare {literal(result.name)} REFERENCE_RUN --db {literal(db)}")


@user_errors
def evaluate_command(
    checkpoint: CheckpointArgument,
    reference: Annotated[str, typer.Option(help="run the predictions are scored against")],
    data: DataOption,
    db: DbOption = DEFAULT_DB,
    imagenome: ImagenomeOption = None,
    split: Annotated[str, typer.Option(help="train | valid | test")] = "test",
    out: Annotated[Path | None, typer.Option("--out", help="CSV file (default: beside the checkpoint)")] = None,
    batch_size: BatchSizeOption = 16,
    device: DeviceOption = "auto",
    min_positives: Annotated[
        int, typer.Option("--min-positives", help="positive cells a lesion needs to enter the means")
    ] = 1,
) -> None:
    """Per-lesion precision, recall, F1 (region and image level) and AUROC; mean lesion F1 vs a constant baseline."""
    from labeling.core.terminal import output_console
    from labeling.store.store import Store
    from model.evaluate.evaluate import EvaluateRequest, evaluate
    from model.evaluate.inference import InferenceOptions

    options = InferenceOptions(checkpoint, data, imagenome, split, batch_size=batch_size, device=device)
    with Store.open_existing(db) as store:
        result = evaluate(store, EvaluateRequest(options, reference, out, min_positives=min_positives))
    show_evaluation(result, output_console())


@user_errors
def predict_command(
    checkpoint: CheckpointArgument,
    data: DataOption,
    name: Annotated[str, typer.Option(help="name of the new run (kind model)")],
    db: DbOption = DEFAULT_DB,
    imagenome: ImagenomeOption = None,
    split: Annotated[str | None, typer.Option(help="train | valid | test (default: every split)")] = None,
    batch_size: BatchSizeOption = 16,
    device: DeviceOption = "auto",
) -> None:
    """Store a model's region-level predictions as a label run, comparable with `clala compare`."""
    from labeling.core.terminal import output_console
    from labeling.store.store import Store
    from model.evaluate.inference import InferenceOptions
    from model.evaluate.predict import PredictRequest, predict_run

    options = InferenceOptions(checkpoint, data, imagenome, split, batch_size=batch_size, device=device)
    with Store.open_existing(db) as store:
        result = predict_run(store, PredictRequest(name, options))
    show_prediction(result, db, output_console())
