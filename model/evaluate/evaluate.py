"""Lesion-level evaluation of a CLALA-Net checkpoint against a reference run.

`evaluate(store, EvaluateRequest(InferenceOptions(checkpoint, data, split="test"), reference))`
predicts every image of the split and scores the region lesion head against the reference run:
- region level, per lesion: precision, recall and F1 of `probability >= threshold` (the
  checkpoint's per-lesion thresholds, chosen on validation), over the cells the vocabulary allows
  for the lesion, with a valid box, whose reference label is known (uncertain reference cells are
  left out, unmentioned cells count as absent);
- mean lesion F1: the mean F1 over the lesions with at least one positive reference cell (the
  paper's headline measure), beside the same mean for the best constant prediction (every cell
  positive), measured on the same cells;
- image level: a lesion is predicted in an image when any region's probability passes the
  threshold (max over regions), true when any region has it in the reference;
- AUROC per lesion at region and image level (scikit-learn; NaN where one class is missing).
Results go to the experiments table (a row per evaluation) and a CSV, one row per lesion plus
the mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labeling.core.formatting import finite
from model.evaluate.inference import InferenceOptions
from model.evaluate.metrics import LesionScores, ScoredArrays, lesion_scores, mean_supported

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
)


@dataclass
class EvaluateRequest:
    """Score `inference.checkpoint` on `inference.split` against run `reference`; the CSV goes to
    `out` (default: beside the checkpoint); `record`: add an experiments row."""

    inference: InferenceOptions
    reference: str
    out: str | Path | None = None
    record: bool = True

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
    csv_path: str | None = None
    experiment_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio_to_baseline(self) -> float:
        return self.mean_lesion_f1 / self.baseline_mean_lesion_f1 if self.baseline_mean_lesion_f1 else float("nan")

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
    result = Evaluation(
        checkpoint=str(options.checkpoint),
        reference=reference,
        split=str(options.split),
        images=len(examples.records),
        lesions=rows,
        mean_lesion_f1=mean_supported(r.f1 for r in rows),
        baseline_mean_lesion_f1=mean_supported(r.baseline_f1 for r in rows),
        image_mean_f1=mean_supported(r.image_f1 for r in rows),
        image_baseline_mean_f1=mean_supported(
            2 * r.image_support / (r.image_support + int(image_mask[:, j].sum())) if r.image_support else float("nan")
            for j, r in enumerate(rows)
        ),
        mean_auroc=mean_supported(r.auroc for r in rows),
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
            values = asdict(row)
            writer.writerow([cell(values[c]) for c in CSV_COLUMNS])
        writer.writerow(
            [
                "mean (lesions with support)",
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
            ]
        )


__all__ = ["evaluate", "EvaluateRequest", "Evaluation", "LesionScores", "csv_value"]
