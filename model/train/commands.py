"""`clala train`: build the TrainConfig from the options (or load it from the checkpoint to
resume), train, and show progress (a bar per epoch with the loss terms beside it, a line per
finished epoch) and where the checkpoints went. `TrainingDisplay` also serves `ablate` and
`sensitivity`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from labeling.core.cli_options import DEFAULT_DB, DbOption, DeviceOption, ImagenomeOption, user_errors
from labeling.core.formatting import format_number
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
    from rich.progress import TaskID

    from model.train.config import TrainConfig, TrainResult

D = TRAIN_DEFAULTS


class TrainingDisplay:
    """Turns the trainer's progress events into a bar per epoch and a line per finished epoch."""

    def __init__(self, console: Console, label: str = "train"):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

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
        self.task: TaskID | None = None
        self.epochs = 0

    def __enter__(self) -> TrainingDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "start":
            self.console.print(
                f"{literal(self.label)}: {event['train_images']:,} training / {event['valid_images']:,} validation "
                f"images, {len(event['lesions'])} lesions, {event['parameters']:,} parameters, "
                f"{literal(event['device'])}"
                + (f" x {event['processes']} processes" if event["processes"] > 1 else "")
                + f", experiment {event['experiment_id']}, checkpoints in {literal(event['checkpoint_dir'])}"
            )
            self.task = self.progress.add_task(
                f"epoch {event['first_epoch']}/{event['epochs']}", total=event["steps_per_epoch"], losses=""
            )
            self.epochs = event["epochs"]
        elif kind == "step" and self.task is not None:
            terms = " ".join(f"{k} {v:.3f}" for k, v in event["losses"].items())
            self.progress.update(
                self.task, completed=event["step"], losses=terms, description=f"epoch {event['epoch']}/{self.epochs}"
            )
        elif kind == "epoch" and self.task is not None:
            train_terms = " ".join(f"{k} {v:.3f}" for k, v in event["train"].items())
            mark = " *" if event["improved"] else ""
            self.console.print(
                f"epoch {event['epoch']}: {train_terms} | valid mean lesion F1 "
                f"{format_number(event['valid_mean_lesion_f1'])} (constant baseline "
                f"{format_number(event['valid_baseline_f1'])}){mark}"
            )
            self.progress.reset(self.task, losses="")


def run_train(config: TrainConfig, console: Console | None = None) -> TrainResult:
    """Train as `config` says, with the progress display; print the best epoch and checkpoints."""
    from labeling.core.terminal import output_console
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
            f"{format_number(result.best_valid_f1)}; {result.seconds:.0f} s"
        )
    console.print(
        f"checkpoint: {literal(result.best_checkpoint)} (last: {literal(result.last_checkpoint)}); "
        f"experiment {result.experiment_id}"
    )
    return result


@user_errors
def train_command(
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            "--label-run",
            help="label run to train on (name or id); spell it --label-run under torchrun, "
            "whose own options swallow --run",
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="images root (MIMIC-CXR-JPG layout, or a clala synth folder)")
    ] = None,
    db: DbOption = DEFAULT_DB,
    imagenome: ImagenomeOption = None,
    name: Annotated[str | None, typer.Option(help="experiment name (default: RUN-time)")] = None,
    uncertain: UncertainOption = D.uncertain,
    unmentioned: Annotated[str, typer.Option(help="unmentioned cells: negative | ignore")] = D.unmentioned,
    unlabeled: UnlabeledOption = D.unlabeled,
    sentences: Annotated[str, typer.Option(help="region sentences: evidence | scene-graph | none")] = D.sentences,
    findings: FindingsOption = None,
    image_size: ImageSizeOption = D.image_size,
    no_augment: Annotated[bool, typer.Option("--no-augment", help="no random scale/shift")] = False,
    batch_size: BatchSizeOption = D.batch_size,
    epochs: EpochsOption = D.epochs,
    lr: LrOption = D.lr,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = D.weight_decay,
    warmup: Annotated[float, typer.Option(help="fraction of steps warming up")] = D.warmup,
    grad_clip: Annotated[float, typer.Option("--grad-clip", help="max gradient norm (0: off)")] = D.grad_clip,
    pos_weight_max: Annotated[
        float, typer.Option("--pos-weight-max", help="clip of the class-imbalance weights")
    ] = D.pos_weight_max,
    seed: SeedOption = D.seed,
    workers: WorkersOption = D.workers,
    device: DeviceOption = D.device,
    no_amp: Annotated[bool, typer.Option("--no-amp", help="full precision on CUDA")] = False,
    patience: PatienceOption = D.patience,
    checkpoint_dir: Annotated[Path, typer.Option("--checkpoint-dir")] = Path(D.checkpoint_dir),
    threads: ThreadsOption = D.threads,
    backbone: BackboneOption = DEFAULT_BACKBONE,
    backbone_weights: BackboneWeightsOption = None,
    text_encoder: Annotated[
        Path | None, typer.Option("--text-encoder", help="local transformers encoder folder (default: small BERT)")
    ] = None,
    decoder: Annotated[
        Path | None, typer.Option(help="local transformers causal LM folder (default: small GPT-2)")
    ] = None,
    d_model: DModelOption = None,
    no_lca: Annotated[bool, typer.Option("--no-lca")] = False,
    no_llcl: Annotated[bool, typer.Option("--no-llcl")] = False,
    no_itcl: Annotated[bool, typer.Option("--no-itcl")] = False,
    no_decoder: Annotated[bool, typer.Option("--no-decoder")] = False,
    region_weight: Annotated[float | None, typer.Option("--region-weight")] = None,
    global_weight: Annotated[float | None, typer.Option("--global-weight")] = None,
    llcl_weight: Annotated[float | None, typer.Option("--llcl-weight")] = None,
    itcl_weight: Annotated[float | None, typer.Option("--itcl-weight")] = None,
    decoder_weight: Annotated[float | None, typer.Option("--decoder-weight")] = None,
    model_option: ModelOptionOption = None,
    resume: Annotated[
        Path | None, typer.Option(help="continue from this checkpoint (last.pt) with its saved settings")
    ] = None,
) -> None:
    """Train CLALA-Net on a label run; checkpoints, thresholds and the experiment row are saved."""
    from labeling.core.errors import InputError
    from model.train.config import TrainConfig
    from model.train.options import model_settings

    if resume is not None:
        from model.train.checkpoint import resumed_config

        run_train(resumed_config(resume))  # a resumed run keeps its saved settings
        return
    if not run or data is None:
        raise InputError("--run and --data are required (or --resume CHECKPOINT)")
    model = model_settings(
        model_option,
        backbone=backbone,
        backbone_weights=backbone_weights,
        text_encoder=text_encoder,
        decoder=decoder,
        d_model=d_model,
        region_weight=region_weight,
        global_weight=global_weight,
        llcl_weight=llcl_weight,
        itcl_weight=itcl_weight,
        decoder_weight=decoder_weight,
        no_lca=no_lca,
        no_llcl=no_llcl,
        no_itcl=no_itcl,
        no_decoder=no_decoder,
    )
    config = TrainConfig(
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
    run_train(config)
