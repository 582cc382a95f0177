"""Lesion-level evaluation of a CLALA-Net checkpoint against a reference run.

`evaluate(store, EvaluateRequest(InferenceOptions(checkpoint, data, split="test"), reference))`
predicts every image of the split and scores the region lesion head against the reference run:
- region level, per lesion: precision, recall and F1 of `probability >= threshold` (the
  checkpoint's per-lesion thresholds, chosen on validation), over the cells the vocabulary allows
  for the lesion, with a valid box, whose reference label is known (uncertain reference cells are
  left out, unmentioned cells count as absent);
- mean lesion F1: the mean F1 over the scored lesions (the paper's headline measure), beside the
  same mean for the best constant prediction (every cell positive), measured on the same cells.
  A lesion is scored when it has at least `min_positives` positive reference cells (default 1:
  every lesion with support); the others are listed as not scored, with their positive count, and
  left out of every mean (F1, constant, image level, AUROC): on a few positives an F1 says nothing;
- image level: a lesion is predicted in an image when any region's probability passes the
  threshold (max over regions), true when any region has it in the reference;
- AUROC per lesion at region and image level (scikit-learn; NaN where one class is missing).
Results go to the experiments table (a row per evaluation) and a CSV, one row per lesion (with
whether it is scored) plus the mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labeling.core.formatting import finite
from model.evaluate.inference import InferenceOptions
from model.evaluate.metrics import LesionScores, ScoredArrays, is_scored, lesion_scores, mean_supported

if TYPE_CHECKING:
    from labeling.store.store import Store

CSV_COLUMNS = (
    "lesion",
    "support",
    "cells",
    "threshold",
    "precision",
    "recall",
    "f1",
    "auroc",
    "baseline_f1",
    "image_support",
    "image_precision",
    "image_recall",
    "image_f1",
    "image_auroc",
    "scored",
)


@dataclass
class EvaluateRequest:
    """Score `inference.checkpoint` on `inference.split` against run `reference`; the CSV goes to
    `out` (default: beside the checkpoint); `record`: add an experiments row; `min_positives`:
    the positive reference cells a lesion needs to be scored (enter the means)."""

    inference: InferenceOptions
    reference: str
    out: str | Path | None = None
    record: bool = True
    min_positives: int = field(default=1, kw_only=True)

    def __post_init__(self) -> None:
        if self.min_positives < 1:
            from labeling.core.errors import InputError

            raise InputError(f"--min-positives: {self.min_positives} is below 1")

    @property
    def csv_path(self) -> Path:
        checkpoint = Path(self.inference.checkpoint)
        return (
            Path(self.out)
            if self.out
            else checkpoint.with_name(f"{checkpoint.stem}-eval-{self.reference}-{self.inference.split}.csv")
        )


@dataclass
class Evaluation:
    checkpoint: str
    reference: str
    split: str
    images: int
    lesions: list[LesionScores]
    mean_lesion_f1: float
    baseline_mean_lesion_f1: float
    image_mean_f1: float
    image_baseline_mean_f1: float
    mean_auroc: float
    min_positives: int = 1  # positive reference cells a lesion needs to enter the means
    csv_path: str | None = None
    experiment_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio_to_baseline(self) -> float:
        return self.mean_lesion_f1 / self.baseline_mean_lesion_f1 if self.baseline_mean_lesion_f1 else float("nan")

    @property
    def scored(self) -> list[LesionScores]:
        """The lesions in the means: at least `min_positives` positive reference cells."""
        return [row for row in self.lesions if is_scored(row, self.min_positives)]

    @property
    def not_scored(self) -> dict[str, int]:
        """Lesion -> its positive reference cells, for the lesions left out of the means."""
        return {row.lesion: row.support for row in self.lesions if not is_scored(row, self.min_positives)}

    def summary(self) -> dict[str, Any]:
        return {
            "mean_lesion_f1": self.mean_lesion_f1,
            "baseline_mean_lesion_f1": self.baseline_mean_lesion_f1,
            "ratio_to_baseline": self.ratio_to_baseline,
            "image_mean_f1": self.image_mean_f1,
            "image_baseline_mean_f1": self.image_baseline_mean_f1,
            "mean_auroc": self.mean_auroc,
            "images": self.images,
            "lesions_with_support": sum(1 for s in self.lesions if s.support),
            "min_positives": self.min_positives,
            "lesions_scored": [row.lesion for row in self.scored],
            "lesions_not_scored": self.not_scored,
        }


def evaluate(store: Store, request: EvaluateRequest) -> Evaluation:
    """Score a checkpoint against the reference run on a split; write the CSV and (with
    `request.record`) an experiments row."""
    from labeling.core.files import atomic_path, file_sha256
    from model.data.dataset import build_examples
    from model.evaluate.inference import (
        check_images,
        inference_loader,
        load_inference,
        predict_probabilities,
    )
    from model.labels.targets import TargetOptions

    options, reference = request.inference, request.reference
    inference = load_inference(options)
    lesions = inference.lesions
    targets = TargetOptions(
        findings=tuple(lesions), unlabeled="skip", sentences="none", dataset=inference.train_config.get("dataset")
    )
    # Scored like training data: images_to_avoid stay out of the train split.
    examples = build_examples(store, options.cohort(exclude_avoided=None), reference, targets)
    check_images(examples, options, reference)
    predictions = predict_probabilities(
        inference.model, inference_loader(examples, inference, options), inference.device, inference.amp, False
    )
    # Scored cells: known in the reference, allowed, with a valid box. Image truth uses all regions.
    mask = examples.masks & predictions.box_mask[..., None] & inference.allowed[None]
    image_labels, image_mask = examples.image_level()
    arrays = ScoredArrays(
        predictions.probabilities,
        examples.targets,
        mask,
        image_labels,
        image_mask,
        predictions.box_mask,
        inference.allowed,
    )
    ckpt = inference.checkpoint
    rows = lesion_scores(lesions, list(ckpt["thresholds"]), arrays)
    result = evaluation_of(
        rows,
        image_mask,
        request.min_positives,
        checkpoint=str(options.checkpoint),
        reference=reference,
        split=str(options.split),
        images=len(examples.records),
    )
    out = request.csv_path
    with atomic_path(out) as tmp:
        _write_csv(tmp, result)
    result.csv_path = str(out)
    if request.record:
        checkpoint = options.checkpoint
        result.experiment_id = store.add_experiment(
            f"evaluate {Path(checkpoint).name} vs {reference} ({options.split})",
            {**ckpt["label_spec"], "reference": reference, "split": options.split},
            {
                "checkpoint": str(checkpoint),
                "checkpoint_sha256": file_sha256(checkpoint),
                "thresholds": dict(zip(lesions, ckpt["thresholds"])),
                "train": ckpt["train_config"],
            },
            str(checkpoint),
            {**result.summary(), "lesions": [asdict(r) for r in rows], "csv": str(out)},
            status="complete",
        )
    return result


def evaluation_of(
    rows: list[LesionScores], image_mask: np.ndarray, min_positives: int = 1, **identity: Any
) -> Evaluation:
    """The evaluation of per-lesion `rows` (`image_mask` [N, L]: the images whose truth is known per
    lesion, for the constant image-level baseline): every mean over the lesions with at least
    `min_positives` positive reference cells. `identity`: checkpoint, reference, split, images."""
    kept = [(j, row) for j, row in enumerate(rows) if is_scored(row, min_positives)]
    return Evaluation(
        **identity,
        lesions=rows,
        mean_lesion_f1=mean_supported(r.f1 for _, r in kept),
        baseline_mean_lesion_f1=mean_supported(r.baseline_f1 for _, r in kept),
        image_mean_f1=mean_supported(r.image_f1 for _, r in kept),
        image_baseline_mean_f1=mean_supported(
            2 * r.image_support / (r.image_support + int(image_mask[:, j].sum())) if r.image_support else float("nan")
            for j, r in kept
        ),
        mean_auroc=mean_supported(r.auroc for _, r in kept),
        min_positives=min_positives,
    )


def csv_value(value: Any) -> Any:
    """A value as a CSV cell: undefined (None, NaN) empty, floats to 6 decimals."""
    value = finite(value)
    if value is None:
        return ""
    return round(value, 6) if isinstance(value, float) else value


def _write_csv(path: Path, result: Evaluation) -> None:
    import csv

    cell = csv_value
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in result.lesions:
            values = {**asdict(row), "scored": int(is_scored(row, result.min_positives))}
            writer.writerow([cell(values[c]) for c in CSV_COLUMNS])
        over = "with support" if result.min_positives <= 1 else f"with >= {result.min_positives} positives"
        writer.writerow(
            [
                f"mean (lesions {over})",
                sum(r.support for r in result.lesions),
                sum(r.cells for r in result.lesions),
                "",
                "",
                "",
                cell(result.mean_lesion_f1),
                cell(result.mean_auroc),
                cell(result.baseline_mean_lesion_f1),
                sum(r.image_support for r in result.lesions),
                "",
                "",
                cell(result.image_mean_f1),
                "",
                len(result.scored),
            ]
        )


__all__ = ["evaluate", "evaluation_of", "EvaluateRequest", "Evaluation", "LesionScores", "csv_value"]
