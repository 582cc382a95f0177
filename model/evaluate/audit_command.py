"""`clala audit RUN --by RUN|CKPT ... [--folds K --data IMAGES] --out QUEUE`: the run's cells
ranked by how likely they are wrong (confident learning), written as CSV/JSONL and, with
--labelstudio, as Label Studio tasks; training progress of the folds on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from labeling.core.cli_options import DEFAULT_DB, DbOption, DeviceOption, ImagenomeOption, user_errors
from labeling.core.terminal import literal
from model.train.options import (
    TRAIN_DEFAULTS,
    BackboneOption,
    BatchSizeOption,
    DModelOption,
    EpochsOption,
    ImageSizeOption,
    LrOption,
    ModelOptionOption,
    PatienceOption,
    SeedOption,
    ThreadsOption,
    UncertainOption,
    WorkersOption,
)

if TYPE_CHECKING:
    from rich.console import Console

    from model.evaluate.audit import AuditOutcome

D = TRAIN_DEFAULTS
AUDIT_BACKBONE = "resnet18"
SHOWN = 10  # queue rows printed


def show_audit(outcome: AuditOutcome, out: Path, labelstudio: Path | None, console: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    from labeling.core.terminal import visible

    result = outcome.result
    for source in result.sources:
        console.print(f"source {literal(source.name)}: {literal(source.note)}")
    if outcome.cross_fit is not None and outcome.cross_fit.reused:
        reused = ", ".join(str(k + 1) for k in outcome.cross_fit.reused)
        console.print(f"folds {reused}: their checkpoints were there already and were reused")
    if outcome.cross_fit is not None:
        counts = ", ".join(f"{len(found)}" for found in outcome.cross_fit.calibrated)
        console.print(f"folds Platt-scaled on their validation images, findings per fold: {counts}")
    console.print(
        f"audited {result.audited:,} cells: {result.queue.num_rows:,} ranked, {result.flagged:,} flagged by "
        f"confident learning; left out: {result.uncertain:,} uncertain, {result.without_probability:,} "
        "without a probability"
    )
    table = Table("rank", "report", "region", "finding", "given", "suspicion", "flagged", "reason")
    for row in result.queue.slice(0, SHOWN).to_pylist():
        table.add_row(
            str(row["rank"]),
            Text(visible(f"{row['dataset']}:{row['report_id']}")),
            Text(visible(row["region"])),
            Text(visible(row["finding"])),
            row["given"],
            f"{row['suspicion']:.3f}",
            "yes" if row["flagged"] else "",
            Text(visible(row["reason"])),
        )
    console.print(table)
    console.print(f"queue: {literal(out)} ({outcome.rows_written:,} rows, most suspect first)")
    if labelstudio is not None:
        console.print(
            f"Label Studio: {literal(labelstudio)} ({outcome.tasks:,} tasks; tasks.json, labeling_config.xml)"
        )


class FoldDisplay:
    """The trainer's progress of each fold, through `clala train`'s display, labeled by fold."""

    def __init__(self, console: Console, folds: int):
        from model.train.commands import TrainingDisplay

        self.display = TrainingDisplay(console)
        self.folds = folds

    def __call__(self, fold: int, event: dict[str, Any]) -> None:
        self.display.label = f"fold {fold + 1}/{self.folds}"
        self.display(event)


@user_errors
def audit_command(
    run: Annotated[str, typer.Argument(help="run to audit (name or id)")],
    out: Annotated[Path, typer.Option("--out", help="ranked queue, .csv or .jsonl")],
    by: Annotated[
        list[str] | None,
        typer.Option("--by", help="a probability source: a run (name or id) or a checkpoint file (repeat)"),
    ] = None,
    folds: Annotated[
        int | None, typer.Option("--folds", help="K-fold CLALA-Net cross-fitting on the run's own images")
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help="images root (for --folds and checkpoints)")] = None,
    db: DbOption = DEFAULT_DB,
    imagenome: ImagenomeOption = None,
    labelstudio: Annotated[
        Path | None, typer.Option("--labelstudio", help="folder for Label Studio tasks of the most suspect cells")
    ] = None,
    review: Annotated[int, typer.Option(help="cells (most suspect first) whose reports become tasks")] = 100,
    limit: Annotated[int | None, typer.Option(help="queue rows written (default: all)")] = None,
    unmentioned_p: Annotated[
        float | None,
        typer.Option("--unmentioned-p", help="p(present) of a --by run's unmentioned cells (default 0.05)"),
    ] = None,
    split_seed: Annotated[int, typer.Option("--split-seed", help="seed of the fold split")] = 0,
    checkpoint_dir: Annotated[
        Path, typer.Option("--checkpoint-dir", help="the folds' checkpoints go to DIR/fold-1, ...")
    ] = Path("audit-folds"),
    uncertain: UncertainOption = D.uncertain,
    epochs: EpochsOption = D.epochs,
    image_size: ImageSizeOption = D.image_size,
    batch_size: BatchSizeOption = D.batch_size,
    lr: LrOption = D.lr,
    patience: PatienceOption = D.patience,
    seed: SeedOption = D.seed,
    backbone: BackboneOption = AUDIT_BACKBONE,
    d_model: DModelOption = None,
    workers: WorkersOption = D.workers,
    device: DeviceOption = D.device,
    threads: ThreadsOption = D.threads,
    model_option: ModelOptionOption = None,
) -> None:
    """Rank a run's cells by how likely they are wrong (confident learning on out-of-sample probabilities)."""
    from labeling.core.terminal import error_console, output_console
    from model.evaluate.audit import AuditRequest, run_audit
    from model.train.config import TrainConfig
    from model.train.options import model_settings

    # The folds train on the audited run's own labels; images without a report of the run are
    # skipped (they have nothing to audit), and the sentence decoder is off (it ranks nothing).
    template = TrainConfig(
        run="(the audited run)",
        data=str(data) if data else "",
        imagenome=str(imagenome) if imagenome else None,
        db=str(db),
        uncertain=uncertain,
        unlabeled="skip",
        image_size=image_size,
        batch_size=batch_size,
        epochs=epochs,
        lr=lr,
        patience=patience,
        seed=seed,
        workers=workers,
        device=device,
        threads=threads,
        checkpoint_dir=str(checkpoint_dir),
        model=model_settings(model_option, backbone=backbone, d_model=d_model, no_decoder=True),
    )
    request = AuditRequest(
        run=run,
        db=str(db),
        out=out,
        by=list(by or []),
        folds=folds,
        template=template,
        seed=split_seed,
        unmentioned=unmentioned_p,
        limit=limit,
        labelstudio=labelstudio,
        review=review,
        device=device,
    )
    display = FoldDisplay(error_console(), folds or 0)
    with display.display:
        outcome = run_audit(request, display)
    show_audit(outcome, out, labelstudio, output_console())
