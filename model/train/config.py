"""What a training run depends on: `TrainConfig` (the one statement of the training defaults; the
CLI's options take theirs from it), its checks, and what a run returns (`TrainResult`). No torch
here, so that commands can build a config without importing it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labeling.core.errors import InputError
from model.labels.targets import TargetOptions

# CLALANetConfig fields the trainer sets itself (from the data and the tokenizer).
DERIVED_MODEL_FIELDS = (
    "lesions",
    "pos_weight",
    "global_pos_weight",
    "vocab_size",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)


@dataclass
class TrainConfig:
    """Everything a training run depends on. `model` holds CLALANetConfig fields to override
    (backbone, backbone_weights, text_encoder, decoder, d_model, use_lca, ..., loss weights)."""

    run: str
    data: str  # images root (MIMIC-CXR-JPG layout)
    imagenome: str | None = None  # Chest ImaGenome root (splits, scene_graph); default: data
    db: str = "clala.duckdb"
    name: str | None = None  # experiment name; default run-time
    uncertain: str = "ignore"
    unmentioned: str = "negative"
    unlabeled: str = "error"
    sentences: str = "evidence"
    findings: list[str] = field(default_factory=list)  # default: the run's findings
    dataset: str | None = None
    image_size: int = 224
    augment: bool = True
    batch_size: int = 16  # global batch (all processes together)
    epochs: int = 10
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: float = 0.05  # fraction of all steps spent warming up
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    pos_weight_max: float = 20.0
    seed: int = 0
    workers: int = 0
    device: str = "auto"  # auto (CUDA if available) | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision, on CUDA only
    patience: int = 3  # epochs without a better validation mean lesion F1; 0 = off
    checkpoint_dir: str = "checkpoints"
    threads: int | None = None  # torch CPU threads (None: torch's default)
    tokenizer_vocab_size: int = 2000
    model: dict[str, Any] = field(default_factory=dict)
    resume: str | None = None
    # Report keys left out of training and validation: cross-fitting (`clala audit --folds`) trains
    # each fold's model without the reports it must then predict out of sample.
    holdout_reports: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def targets(self) -> TargetOptions:
        """How the run's labels become this training's targets."""
        return TargetOptions(
            findings=tuple(self.findings) or None,
            uncertain=self.uncertain,
            unmentioned=self.unmentioned,
            unlabeled=self.unlabeled,
            sentences=self.sentences,
            dataset=self.dataset,
        )

    def label_spec(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "uncertain": self.uncertain,
            "unmentioned": self.unmentioned,
            "unlabeled": self.unlabeled,
            "sentences": self.sentences,
            "dataset": self.dataset,
            "findings": list(self.findings),
        }


TRAIN_DEFAULTS = TrainConfig(run="", data="")  # the defaults, for the command line's options


@dataclass
class TrainResult:
    experiment_id: int | None
    checkpoint_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    lesions: list[str]
    thresholds: list[float]  # of the best checkpoint
    best_epoch: int
    best_valid_f1: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]]
    parameters: int
    seconds: float


def check_config(config: TrainConfig) -> None:
    """An InputError naming the first option whose value cannot train."""
    from model.net.clala_net import CLALANetConfig

    config.targets().check("--")
    for option, value, low in (
        ("--epochs", config.epochs, 1),
        ("--batch-size", config.batch_size, 1),
        ("--image-size", config.image_size, 32),
        ("--workers", config.workers, 0),
        ("--patience", config.patience, 0),
    ):
        if value < low:
            raise InputError(f"{option}: {value} is below {low}")
    if not 0 <= config.warmup < 1:
        raise InputError(f"--warmup: {config.warmup} is not a fraction in [0, 1)")
    if config.lr <= 0:
        raise InputError(f"--lr: {config.lr} must be positive")
    if config.pos_weight_max < 1:
        raise InputError(f"--pos-weight-max: {config.pos_weight_max} is below 1")
    known = {f.name for f in dataclasses.fields(CLALANetConfig)}
    for key in config.model:
        if key not in known:
            raise InputError(f"model option {key!r} is not a CLALA-Net setting")
        if key in DERIVED_MODEL_FIELDS:
            raise InputError(f"model option {key!r} is set by the trainer from the data")
