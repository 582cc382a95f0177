"""CLI view of `clala sensitivity`: a line per grid cell (with the trainer's progress bar while it
trains), then the table of label quality against model mean lesion F1 (mean ± std over seeds)
and where the CSVs and the plot were written."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

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
