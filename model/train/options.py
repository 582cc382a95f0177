"""The training options that `clala train`, `ablate` and `sensitivity` share, declared once. Their
defaults are TrainConfig's (`TRAIN_DEFAULTS`), so that a default is stated in one place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from labeling.core.errors import InputError
from model.train.config import TRAIN_DEFAULTS

__all__ = [
    "DEFAULT_BACKBONE",
    "TRAIN_DEFAULTS",
    "BackboneOption",
    "BackboneWeightsOption",
    "BatchSizeOption",
    "DModelOption",
    "EpochsOption",
    "FindingsOption",
    "ImageSizeOption",
    "LrOption",
    "ModelOptionOption",
    "PatienceOption",
    "SeedOption",
    "ThreadsOption",
    "UncertainOption",
    "UnlabeledOption",
    "WorkersOption",
    "model_settings",
]

UncertainOption = Annotated[str, typer.Option(help="uncertain labels: ignore | positive | negative")]
UnlabeledOption = Annotated[
    str, typer.Option(help="images whose report the run did not cover: error | skip | all-negative")
]
FindingsOption = Annotated[
    list[str] | None,
    typer.Option("--findings", help="train on these lesions (repeat; default: the run's findings)"),
]
ImageSizeOption = Annotated[int, typer.Option("--image-size")]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", help="global batch (over all processes)")]
EpochsOption = Annotated[int, typer.Option()]
LrOption = Annotated[float, typer.Option()]
SeedOption = Annotated[int, typer.Option()]
WorkersOption = Annotated[int, typer.Option(help="DataLoader processes")]
PatienceOption = Annotated[
    int, typer.Option(help="early stopping: epochs without a better validation mean lesion F1 (0: off)")
]
ThreadsOption = Annotated[int | None, typer.Option(help="torch CPU threads")]
BackboneOption = Annotated[str, typer.Option(help="timm model name")]
BackboneWeightsOption = Annotated[Path | None, typer.Option("--backbone-weights", help="local state-dict file")]
DModelOption = Annotated[int | None, typer.Option("--d-model")]
ModelOptionOption = Annotated[
    list[str] | None,
    typer.Option("--model-option", help="any CLALA-Net setting, KEY=VALUE (repeat), e.g. lca_heads=8"),
]

DEFAULT_BACKBONE = "resnet18"  # the commands' backbone: small enough for a CPU
# --no-* flags and the CLALA-Net setting each turns off; --*-weight options and their setting.
_TURNS_OFF = {"no_lca": "use_lca", "no_llcl": "use_llcl", "no_itcl": "use_itcl", "no_decoder": "use_decoder"}
_SETTING_OF = {
    "region_weight": "region_loss_weight",
    "global_weight": "global_loss_weight",
    "llcl_weight": "llcl_loss_weight",
    "itcl_weight": "itcl_loss_weight",
    "decoder_weight": "decoder_loss_weight",
}
_PATH_SETTINGS = ("backbone_weights", "text_encoder", "decoder")


def parse_model_options(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE items -> CLALA-Net settings, each value read as JSON when it parses (numbers,
    true/false, null), else as text."""
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


def model_settings(model_option: list[str] | None = None, **flags: Any) -> dict[str, Any]:
    """TrainConfig.model from a command's model flags, given by option name (backbone=...,
    d_model=..., no_lca=..., region_weight=...): a value left at None is not set, a `no_*` flag
    that is on turns its component off, then the --model-option KEY=VALUE items. A path setting
    must exist."""
    model: dict[str, Any] = {}
    for key, value in flags.items():
        if key in _TURNS_OFF:
            if value:
                model[_TURNS_OFF[key]] = False
        elif value is not None:
            model[_SETTING_OF.get(key, key)] = str(value) if isinstance(value, Path) else value
    model.update(parse_model_options(model_option or []))
    for key, value in model.items():
        if key in _PATH_SETTINGS and value and not Path(value).exists():
            raise InputError(f"{value}: --{key.replace('_', '-')} path not found")
    return model
