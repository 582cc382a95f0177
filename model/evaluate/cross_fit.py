"""Out-of-sample CLALA-Net probabilities for a run's own cells, by K-fold cross-fitting
(`clala audit --folds K`), and a checkpoint's probabilities on the same cells (`--by CKPT`).

Cross-fitting: the run's finished reports are split into K folds by a seeded permutation
(`assign_folds`: report i of the permutation goes to fold i mod K, so fold sizes differ by one at
most). Fold k's model trains on the run's own labels as `clala train` would, on the cohort's
train split less the fold's reports, validating (thresholds, early stopping) on the valid split
less them too (`TrainConfig.holdout_reports`); it then predicts every image of the fold's reports,
whatever their split. So each cell gets exactly one probability, from the one model that never
saw its report. A study with several images takes the maximum over the images whose region box is
valid (as `clala predict` does); a cell without a valid box stays NaN.

Calibration: K models trained on different reports are calibrated differently (on a small cohort
one fold's model may put every cell of a finding near 0.50 and the next near 0.53, each ranking
its own fold well), so their probabilities are not comparable across folds. Each fold's
probabilities are therefore Platt-scaled per finding on that model's own validation images (the
valid split less the fold, labeled by the audited run; out of sample for the model):
p' = sigmoid(a logit(p) + b) by scikit-learn's logistic regression. A finding without both
classes among those cells keeps its raw probabilities.

A fold whose `best.pt` already holds this fold's held-out reports and run is reused, so an audit
that was interrupted continues where it stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labeling.core.errors import InputError
from model.evaluate.inference import InferenceOptions
from model.train.config import TrainConfig

if TYPE_CHECKING:
    from labeling.review import AuditCells
    from labeling.store.store import Store
    from model.data.dataset import ImageRecord

FoldProgress = Callable[[int, dict[str, Any]], None]  # (fold index, a trainer progress event)


def assign_folds(report_keys: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each report, by a seeded permutation."""
    if folds < 2:
        raise InputError(f"--folds: {folds} is below 2; cross-fitting needs two folds at least")
    if folds > len(report_keys):
        raise InputError(f"--folds: {folds} folds for {len(report_keys):,} reports; give at most one per report")
    order = np.random.default_rng(seed).permutation(len(report_keys))
    fold = np.empty(len(report_keys), np.int64)
    fold[order] = np.arange(len(report_keys)) % folds
    return fold


@dataclass
class CohortImages:
    """The cohort's images (every split) whose study is an audited report, and that report's row."""

    records: list[ImageRecord]
    rows: np.ndarray  # [images] row of cells.report_keys


def audited_images(store: Store, cells: AuditCells, options: InferenceOptions, dataset: str | None) -> CohortImages:
    """Every image of the cohort whose study has exactly one stored report among the audited ones."""
    records = options.cohort().records
    found = store.report_keys([r.study_id for r in records], by="study_id", dataset=dataset)
    row_of = {int(k): i for i, k in enumerate(cells.report_keys)}
    kept, rows = [], []
    for record in records:
        hits = [row_of[key] for _, key in found.get(record.study_id, []) if key in row_of]
        if len(hits) == 1:
            kept.append(record)
            rows.append(hits[0])
    if not kept:
        raise InputError(f"{options.imagenome_root}: no image belongs to a report of run {cells.run.name!r}")
    return CohortImages(kept, np.asarray(rows, np.int64))


Platt = dict[str, tuple[float, float]]  # finding -> (a, b): p' = sigmoid(a logit(p) + b)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def platt_scaling(config: TrainConfig, options: InferenceOptions) -> Platt:
    """Per finding, the logistic regression of the audited run's labels on the logit of the
    checkpoint's probabilities over its validation cells (allowed, valid box, not ignored)."""
    from sklearn.linear_model import LogisticRegression

    from model.evaluate.inference import inference_loader, load_inference, predict_probabilities
    from model.train.loop import load_training_data

    inference = load_inference(options)
    valid = load_training_data(config).valid
    loader = inference_loader(valid.examples, inference, options)
    predicted = predict_probabilities(inference.model, loader, inference.device, inference.amp, with_losses=False)
    scaling: Platt = {}
    for j, lesion in enumerate(inference.lesions):
        scored = predicted.mask[..., j].astype(bool)
        labels = predicted.labels[..., j][scored] > 0.5
        if labels.all() or not labels.any():
            continue
        model = LogisticRegression().fit(_logit(predicted.probabilities[..., j][scored])[:, None], labels)
        scaling[lesion] = (float(model.coef_[0, 0]), float(model.intercept_[0]))
    return scaling


def checkpoint_probabilities(
    options: InferenceOptions,
    images: CohortImages,
    cells: AuditCells,
    rows: np.ndarray | None = None,
    scaling: Platt | None = None,
) -> np.ndarray:
    """p(present)[report, region, finding] of `options.checkpoint` on the images of the reports
    in `rows` (default: all), NaN elsewhere, on findings it does not predict and on cells without
    a valid box; Platt-scaled per finding where `scaling` has the finding."""
    from model.data.dataset import REGION_NAMES
    from model.evaluate.inference import inference_loader, load_inference, predict_probabilities, unlabeled_examples

    if tuple(REGION_NAMES) != tuple(cells.regions):
        raise InputError("the audit's vocabulary has other regions than CLALA-Net's; audit with the shipped vocabulary")
    inference = load_inference(options)
    chosen = np.ones(len(images.records), bool) if rows is None else np.isin(images.rows, rows)
    records = [r for r, keep in zip(images.records, chosen) if keep]
    record_rows = images.rows[chosen]
    p = np.full(cells.shape, np.nan)
    if not records:
        return p
    loader = inference_loader(unlabeled_examples(records, inference.lesions), inference, options)
    predicted = predict_probabilities(inference.model, loader, inference.device, inference.amp, with_losses=False)
    lesions = [(f, inference.lesions.index(name)) for f, name in enumerate(cells.findings) if name in inference.lesions]
    best = np.full(cells.shape, -1.0)
    for i, row in enumerate(record_rows.tolist()):
        valid = predicted.box_mask[i].astype(bool)
        for f, j in lesions:
            scored = valid & inference.allowed[:, j]
            best[row, scored, f] = np.maximum(best[row, scored, f], predicted.probabilities[i, scored, j])
    p = np.where(best >= 0, best, np.nan)
    for f, name in enumerate(cells.findings):
        if scaling and name in scaling:
            a, b = scaling[name]
            p[..., f] = 1 / (1 + np.exp(-(a * _logit(p[..., f]) + b)))  # NaN stays NaN
    return p


@dataclass(kw_only=True)
class CrossFitRequest:
    """K-fold cross-fitting of `template` (the training settings; `checkpoint_dir` is the folder
    under which each fold's checkpoints go, as fold-1, fold-2, ...) on the audited run's cells."""

    template: TrainConfig
    folds: int = 5
    seed: int = 0
    batch_size: int = 16  # inference
    device: str = "auto"


@dataclass
class CrossFit:
    p_present: np.ndarray  # [report, region, finding]
    fold: np.ndarray  # [report] fold index
    checkpoints: list[Path] = field(default_factory=list)  # best.pt per fold
    reused: list[int] = field(default_factory=list)  # folds whose checkpoint was there already
    calibrated: list[list[str]] = field(default_factory=list)  # per fold: the findings Platt-scaled


def fold_config(request: CrossFitRequest, cells: AuditCells, fold: int, held_out: np.ndarray) -> TrainConfig:
    template = request.template
    return dataclasses.replace(
        template,
        run=cells.run.name,
        findings=list(cells.findings),
        holdout_reports=[int(k) for k in held_out],
        checkpoint_dir=str(Path(template.checkpoint_dir) / f"fold-{fold + 1}"),
        name=f"audit-{cells.run.name}-fold-{fold + 1}-of-{request.folds}",
        resume=None,
    )


def _finished_fold(config: TrainConfig) -> Path | None:
    """The fold's best.pt when it was trained with exactly this fold's held-out reports and run."""
    from model.train.checkpoint import load_checkpoint

    best = Path(config.checkpoint_dir) / "best.pt"
    if not best.is_file():
        return None
    saved = load_checkpoint(best)["train_config"]
    same = saved.get("holdout_reports") == config.holdout_reports and saved.get("run") == config.run
    return best if same else None


def cross_fit(request: CrossFitRequest, cells: AuditCells, on_progress: FoldProgress | None = None) -> CrossFit:
    """Train one model per fold and predict its held-out reports (see the module doc). Opens the
    database itself (read-only, and the trainer's own connections): call it with no store open."""
    from labeling.store.store import Store
    from model.train.loop import train

    template = request.template
    fold = assign_folds(cells.report_keys, request.folds, request.seed)
    options = InferenceOptions(
        checkpoint="", data=template.data, imagenome=template.imagenome, split=None,
        batch_size=request.batch_size, device=request.device,
    )  # fmt: skip
    with Store(template.db, read_only=True) as store:
        images = audited_images(store, cells, options, template.dataset)
    result = CrossFit(np.full(cells.shape, np.nan), fold)
    for k in range(request.folds):
        rows = np.flatnonzero(fold == k)
        config = fold_config(request, cells, k, cells.report_keys[rows])
        best = _finished_fold(config)
        if best is None:
            best = train(config, (lambda event, k=k: on_progress(k, event)) if on_progress else None).best_checkpoint
        else:
            result.reused.append(k)
        result.checkpoints.append(best)
        fold_options = dataclasses.replace(options, checkpoint=best)
        scaling = platt_scaling(config, fold_options)
        result.calibrated.append(sorted(scaling))
        predicted = checkpoint_probabilities(fold_options, images, cells, rows, scaling)
        result.p_present[rows] = predicted[rows]
    return result


__all__ = [
    "CohortImages",
    "CrossFit",
    "CrossFitRequest",
    "assign_folds",
    "audited_images",
    "checkpoint_probabilities",
    "cross_fit",
    "platt_scaling",
]
