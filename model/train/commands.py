"""CLI views of the model commands: `clala train`, `evaluate`, `predict` and `ablate`, with rich
progress bars (loss terms beside the bar) and result tables."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from labeling.core.cli_options import (
    DEFAULT_DB,
    DbOption,
    DeviceOption,
    ImagenomeOption,
    user_errors,
)
from labeling.core.terminal import output_console


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return "—"
    return f"{value:.{digits}f}"


class TrainingDisplay:
    """Turns the trainer's progress events into a bar per epoch and a line per finished epoch."""

    def __init__(self, console: Console, label: str = "train"):
        self.console = console
        self.label = label
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[losses]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task = None

    def __enter__(self) -> TrainingDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "start":
            self.console.print(
                f"{self.label}: {event['train_images']:,} training / {event['valid_images']:,} validation images, "
                f"{len(event['lesions'])} lesions, {event['parameters']:,} parameters, {event['device']}"
                + (f" x {event['processes']} processes" if event["processes"] > 1 else "")
                + f", experiment {event['experiment_id']}, checkpoints in {event['checkpoint_dir']}"
            )
            self.task = self.progress.add_task(
                f"epoch {event['first_epoch']}/{event['epochs']}", total=event["steps_per_epoch"], losses=""
            )
            self.epochs = event["epochs"]
        elif kind == "step":
            terms = " ".join(f"{k} {v:.3f}" for k, v in event["losses"].items())
            self.progress.update(
                self.task, completed=event["step"], losses=terms, description=f"epoch {event['epoch']}/{self.epochs}"
            )
        elif kind == "epoch":
            train_terms = " ".join(f"{k} {v:.3f}" for k, v in event["train"].items())
            mark = " *" if event["improved"] else ""
            self.console.print(
                f"epoch {event['epoch']}: {train_terms} | valid mean lesion F1 "
                f"{_number(event['valid_mean_lesion_f1'])} (constant baseline "
                f"{_number(event['valid_baseline_f1'])}){mark}"
            )
            self.progress.reset(self.task, losses="")


def run_train(config, console: Console | None = None):
    from model.train.loop import train

    console = console or output_console()
    with TrainingDisplay(console) as display:
        result = train(config, display)
    if os.environ.get("RANK", "0") != "0":
        return result  # under torchrun only rank 0 reports
    if result.best_epoch:
        stop = " (stopped early)" if result.stopped_early else ""
        console.print(
            f"best epoch {result.best_epoch} of {result.epochs_run}{stop}: validation mean lesion F1 "
            f"{_number(result.best_valid_f1)}; {result.seconds:.0f} s"
        )
    console.print(
        f"checkpoint: {result.best_checkpoint} (last: {result.last_checkpoint}); experiment {result.experiment_id}"
    )
    return result


def show_evaluation(
    checkpoint: Path,
    db: Path,
    data: Path,
    reference: str,
    split: str,
    imagenome: Path | None,
    out: Path | None,
    batch_size: int,
    device: str,
    console: Console | None = None,
):
    from model.evaluate.evaluate import evaluate

    console = console or output_console()
    result = evaluate(
        checkpoint, db, data, reference, split=split, imagenome=imagenome, out=out, batch_size=batch_size, device=device
    )
    table = Table(title=f"{Path(checkpoint).name} vs {reference} ({split}, {result.images:,} images)")
    for column in (
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
    ):
        table.add_column(column, justify="left" if column == "lesion" else "right")
    for row in result.lesions:
        table.add_row(
            row.lesion,
            f"{row.support:,}",
            _number(row.threshold),
            _number(row.precision),
            _number(row.recall),
            _number(row.f1),
            _number(row.auroc),
            _number(row.baseline_f1),
            _number(row.image_f1),
            _number(row.image_auroc),
        )
    console.print(table)
    console.print(
        f"mean lesion F1 {_number(result.mean_lesion_f1)} (constant-prediction baseline "
        f"{_number(result.baseline_mean_lesion_f1)}, ratio {_number(result.ratio_to_baseline, 2)}); "
        f"image-level mean F1 {_number(result.image_mean_f1)}; mean AUROC {_number(result.mean_auroc)}"
    )
    console.print(f"wrote {result.csv_path}; experiment {result.experiment_id}")
    return result


def run_predict(
    checkpoint: Path,
    db: Path,
    data: Path,
    name: str,
    split: str | None,
    imagenome: Path | None,
    batch_size: int,
    device: str,
    console: Console | None = None,
):
    from model.evaluate.evaluate import predict

    console = console or output_console()
    result = predict(checkpoint, db, data, name, split=split, imagenome=imagenome, batch_size=batch_size, device=device)
    console.print(
        f"run {result.name} (model): {result.reports:,} reports, {result.labels:,} labels "
        f"({result.present:,} present) from {result.images:,} images"
        + (f"; {result.skipped_images:,} images without a stored report skipped" if result.skipped_images else "")
    )
    console.print(f"compare it: clala compare {result.name} REFERENCE_RUN --db {db}")
    return result


def run_ablate(config, variants: list[str] | None, reference: str | None, split: str, console: Console | None = None):
    from model.experiments.ablation import ablate

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
    table = Table(title=f"ablation: {config.run} ({split}, reference {reference or config.run})")
    for column in (
        "variant",
        "mean lesion F1",
        "image F1",
        "constant F1",
        "valid F1",
        "best epoch",
        "parameters",
        "train s",
    ):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for row in rows:
        table.add_row(
            row.variant,
            _number(row.mean_lesion_f1),
            _number(row.image_mean_f1),
            _number(row.baseline_mean_lesion_f1),
            _number(row.valid_mean_lesion_f1),
            str(row.best_epoch),
            f"{row.parameters:,}",
            f"{row.train_seconds:.0f}",
        )
    console.print(table)
    return rows


def _parse_model_options(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE items -> CLALA-Net settings, each value read as JSON when it parses (numbers,
    true/false, null), else as text."""
    import json

    from labeling.core.errors import InputError

    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--model-option {item!r}: write KEY=VALUE")
        try:
            values[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip()] = raw
    return values


def train_config_from_options(
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
):
    """The command line's options as a TrainConfig (a resumed run takes its saved settings)."""
    from labeling.core.errors import InputError
    from model.train.loop import TrainConfig, load_checkpoint

    if resume is not None:
        saved = load_checkpoint(resume)["train_config"]
        return TrainConfig.from_dict({**saved, "resume": str(resume)})
    if not run or data is None:
        raise InputError("--run and --data are required (or --resume CHECKPOINT)")
    model: dict[str, Any] = {"backbone": backbone}
    for key, value in (
        ("backbone_weights", backbone_weights),
        ("text_encoder", text_encoder),
        ("decoder", decoder),
        ("d_model", d_model),
        ("region_loss_weight", region_weight),
        ("global_loss_weight", global_weight),
        ("llcl_loss_weight", llcl_weight),
        ("itcl_loss_weight", itcl_weight),
        ("decoder_loss_weight", decoder_weight),
    ):
        if value is not None:
            model[key] = str(value) if isinstance(value, Path) else value
    for key, off in (("use_lca", no_lca), ("use_llcl", no_llcl), ("use_itcl", no_itcl), ("use_decoder", no_decoder)):
        if off:
            model[key] = False
    model.update(_parse_model_options(model_option or []))
    for key, value in model.items():
        if key in ("backbone_weights", "text_encoder", "decoder") and value and not Path(value).exists():
            raise InputError(f"{value}: --{key.replace('_', '-')} path not found")
    return TrainConfig(
        run=run,
        data=str(data),
        imagenome=str(imagenome) if imagenome else None,
        db=str(db),
        name=name,
        uncertain=uncertain,
        unmentioned=unmentioned,
        unlabeled=unlabeled,
        sentences=sentences,
        findings=list(findings or []),
        image_size=image_size,
        augment=not no_augment,
        batch_size=batch_size,
        epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        warmup=warmup,
        grad_clip=grad_clip,
        pos_weight_max=pos_weight_max,
        seed=seed,
        workers=workers,
        device=device,
        amp=not no_amp,
        patience=patience,
        checkpoint_dir=str(checkpoint_dir),
        threads=threads,
        model=model,
    )


def _train_config(*options):
    """The training options, in `train_config_from_options`'s order, as a TrainConfig."""
    return train_config_from_options(*options)


@user_errors
def train_command(
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
