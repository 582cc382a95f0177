"""CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labeling.core.cli_options import DEFAULT_DB, DataOption, DbOption, DeviceOption, ImagenomeOption, user_errors


@user_errors
def evaluate_command(
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


@user_errors
def predict_command(
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
