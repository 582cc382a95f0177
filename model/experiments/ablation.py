"""Ablation of CLALA-Net's components: the same data, seeds and settings, one component off at a time.

`ablate(config)` trains four variants of `config` (each in its own checkpoint folder under
`config.checkpoint_dir`): full, no-LCA, no-LLCL, no-ITCL. The "full" variant is `config` as given
(so a base configuration with the decoder off ablates the recognition model only). Each best
checkpoint is evaluated on `split` against `reference` (default: the training run), and the table
holds mean lesion F1, image-level mean F1, the constant-prediction baseline, parameters and
training time.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.train.config import TrainConfig

VARIANTS: dict[str, dict[str, bool]] = {
    "full": {},
    "no-lca": {"use_lca": False},
    "no-llcl": {"use_llcl": False},
    "no-itcl": {"use_itcl": False},
}


@dataclass
class AblationRow:
    variant: str
    mean_lesion_f1: float
    image_mean_f1: float
    baseline_mean_lesion_f1: float
    valid_mean_lesion_f1: float
    best_epoch: int
    parameters: int
    train_seconds: float
    checkpoint: str


def ablate(
    config: TrainConfig,
    variants: list[str] | None = None,
    reference: str | None = None,
    split: str = "test",
    on_progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> list[AblationRow]:
    """Train and evaluate each variant of `config` (a TrainConfig); returns one row per variant."""
    from labeling.core.errors import InputError
    from labeling.store.store import Store
    from model.evaluate.evaluate import EvaluateRequest, evaluate
    from model.evaluate.inference import InferenceOptions
    from model.train.loop import train

    names = variants or list(VARIANTS)
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise InputError(f"--variants: {unknown[0]!r} is not one of {', '.join(VARIANTS)}")
    if config.resume:
        raise InputError("--resume: an ablation trains every variant from scratch")
    rows = []
    for name in names:
        variant = dataclasses.replace(
            config,
            model={**config.model, **VARIANTS[name]},
            checkpoint_dir=str(Path(config.checkpoint_dir) / name),
            name=f"{config.name or config.run}-ablation-{name}",
        )
        notify = functools.partial(on_progress, name) if on_progress else None
        result = train(variant, notify)
        options = InferenceOptions(
            result.best_checkpoint,
            config.data,
            config.imagenome,
            split,
            batch_size=config.batch_size,
            device=config.device,
            workers=config.workers,
        )
        # The trainer has closed its connections: the evaluation's one may write.
        with Store.open_existing(config.db) as store:
            scores = evaluate(store, EvaluateRequest(options, reference or config.run))
        rows.append(
            AblationRow(
                name,
                scores.mean_lesion_f1,
                scores.image_mean_f1,
                scores.baseline_mean_lesion_f1,
                result.best_valid_f1,
                result.best_epoch,
                result.parameters,
                result.seconds,
                str(result.best_checkpoint),
            )
        )
    return rows


__all__ = ["ablate", "AblationRow", "VARIANTS"]
