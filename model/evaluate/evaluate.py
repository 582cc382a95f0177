"""Lesion-level evaluation of a CLALA-Net checkpoint, and its predictions as a label run.

`evaluate(checkpoint, db, data_dir, reference_run, split="test")` predicts every image of the
split and scores the region lesion head against the reference run:
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

`predict(checkpoint, db, data_dir, name, split=None)` stores the model's region-level predictions
as a new run of kind `model`: for every predicted study and every region the vocabulary allows for
a lesion, `present` when the probability reaches the lesion's threshold, else `absent`; the
confidence is that of the stated status (p for present, 1 - p for absent). Several images of one
study are combined by the maximum probability. Provenance: the checkpoint's path and sha256, its
label spec and configs. The run is written in one transaction, so `clala compare` can score it
like any other label source.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labeling.core.errors import InputError

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
class LesionScores:
    lesion: str
    support: int  # positive reference cells (region level)
    cells: int  # scored cells
    threshold: float
    precision: float
    recall: float
    f1: float
    auroc: float
    baseline_f1: float  # every scored cell predicted positive
    image_support: int
    image_precision: float
    image_recall: float
    image_f1: float
    image_auroc: float


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


def _auroc(truth: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if truth.size == 0 or truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, scores))


def _mean(values) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def lesion_scores(
    lesions: list[str],
    thresholds: list[float],
    probabilities: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    image_labels: np.ndarray,
    image_mask: np.ndarray,
    box_mask: np.ndarray,
    allowed: np.ndarray,
) -> list[LesionScores]:
    """Scores per lesion from region probabilities [N, R, L], region labels and scored-cell mask
    [N, R, L], image labels and known-image mask [N, L], valid boxes [N, R], allowed cells [R, L]."""
    from sklearn.metrics import precision_recall_fscore_support

    rows = []
    usable = box_mask[..., None] & allowed[None]  # cells the model speaks for
    image_probability = np.where(usable, probabilities, 0.0).max(axis=1)  # [N, L]
    for j, lesion in enumerate(lesions):
        cells = mask[..., j]
        truth = labels[..., j][cells] > 0.5
        scores = probabilities[..., j][cells]
        predicted = scores >= thresholds[j]
        p, r, f, _ = precision_recall_fscore_support(truth, predicted, average="binary", zero_division=0)
        support = int(truth.sum())
        known = image_mask[:, j]
        image_truth = image_labels[known, j] > 0.5
        image_scores = image_probability[known, j]
        ip, ir, i_f, _ = precision_recall_fscore_support(
            image_truth, image_scores >= thresholds[j], average="binary", zero_division=0
        )
        image_support = int(image_truth.sum())
        rows.append(
            LesionScores(
                lesion=lesion,
                support=support,
                cells=int(cells.sum()),
                threshold=float(thresholds[j]),
                precision=float(p),
                recall=float(r),
                f1=float(f) if support else float("nan"),
                auroc=_auroc(truth, scores),
                baseline_f1=2 * support / (support + cells.sum()) if support else float("nan"),
                image_support=image_support,
                image_precision=float(ip),
                image_recall=float(ir),
                image_f1=float(i_f) if image_support else float("nan"),
                image_auroc=_auroc(image_truth, image_scores),
            )
        )
    return rows


@dataclass
class _Predicted:
    checkpoint: dict[str, Any]
    dataset: Any
    probabilities: np.ndarray
    box_mask: np.ndarray
    allowed: np.ndarray


def _predict_split(
    checkpoint_path: str | Path,
    db: str | Path,
    data_dir: str | Path,
    run: str | None,
    split: str | None,
    imagenome: str | Path | None,
    batch_size: int,
    device: str,
    workers: int,
) -> _Predicted:
    import torch
    from torch.utils.data import DataLoader

    from model.data.dataset import REGION_NAMES, Examples, RegionDataset, load_cohort
    from model.train.loop import (
        BatchCollator,
        allowed_cells,
        load_checkpoint,
        model_from_checkpoint,
        predict_probabilities,
        resolve_device,
    )

    checkpoint = load_checkpoint(checkpoint_path)
    lesions = list(checkpoint["lesions"])
    train_config = checkpoint["train_config"]
    imagenome = imagenome or data_dir
    common = dict(image_size=train_config["image_size"], augment=None)
    if run is not None:
        dataset = RegionDataset.from_store(
            db,
            data_dir,
            imagenome,
            run,
            split=split,
            findings=lesions,
            uncertain="ignore",
            unmentioned="negative",
            unlabeled="skip",
            sentences="none",
            dataset=train_config.get("dataset"),
            **common,
        )
    else:
        # Prediction needs no labels: every image of the split, with empty targets.
        cohort = load_cohort(data_dir, imagenome, split, exclude_avoided=False)
        shape = (len(cohort.records), len(REGION_NAMES), len(lesions))
        examples = Examples(
            cohort.records,
            tuple(lesions),
            np.full(len(cohort.records), -1, np.int64),
            np.zeros(shape, np.float32),
            np.ones(shape, bool),
            [[""] * len(REGION_NAMES) for _ in cohort.records],
        )
        dataset = RegionDataset(examples, **common)
    if len(dataset) == 0:
        where = f"split {split!r}" if split else "any split"
        covered = f" with a report that run {run!r} covers" if run else ""
        raise InputError(f"{imagenome}: no images in {where}{covered}")
    target = resolve_device(device)
    model = model_from_checkpoint(checkpoint, target)
    allowed = allowed_cells(lesions)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=BatchCollator(allowed)
    )
    amp = target.type == "cuda" and train_config.get("amp", True)
    with torch.no_grad():
        predictions = predict_probabilities(model, loader, target, amp=amp, with_losses=False)
    return _Predicted(checkpoint, dataset, predictions.probabilities, predictions.box_mask, allowed)


def evaluate(
    checkpoint: str | Path,
    db: str | Path,
    data_dir: str | Path,
    reference_run: str,
    split: str = "test",
    imagenome: str | Path | None = None,
    out: str | Path | None = None,
    batch_size: int = 16,
    device: str = "auto",
    workers: int = 0,
    record: bool = True,
) -> Evaluation:
    """Score a checkpoint against `reference_run` on a split; write the CSV and an experiments row."""
    from labeling.core.files import atomic_path, file_sha256
    from labeling.store.store import Store

    predicted = _predict_split(checkpoint, db, data_dir, reference_run, split, imagenome, batch_size, device, workers)
    ckpt, examples = predicted.checkpoint, predicted.dataset.examples
    lesions = list(ckpt["lesions"])
    # Scored cells: known in the reference, allowed, with a valid box. Image truth uses all regions.
    mask = examples.masks & predicted.box_mask[..., None] & predicted.allowed[None]
    image_labels = ((examples.targets > 0.5) & examples.masks).any(axis=1)
    image_mask = image_labels | examples.masks.all(axis=1)
    rows = lesion_scores(
        lesions,
        list(ckpt["thresholds"]),
        predicted.probabilities,
        examples.targets,
        mask,
        image_labels.astype(np.float32),
        image_mask,
        predicted.box_mask,
        predicted.allowed,
    )
    result = Evaluation(
        checkpoint=str(checkpoint),
        reference=reference_run,
        split=split,
        images=len(examples.records),
        lesions=rows,
        mean_lesion_f1=_mean(r.f1 for r in rows),
        baseline_mean_lesion_f1=_mean(r.baseline_f1 for r in rows),
        image_mean_f1=_mean(r.image_f1 for r in rows),
        image_baseline_mean_f1=_mean(
            2 * r.image_support / (r.image_support + int(image_mask[:, j].sum())) if r.image_support else float("nan")
            for j, r in enumerate(rows)
        ),
        mean_auroc=_mean(r.auroc for r in rows),
    )

    out = Path(out) if out else Path(checkpoint).with_name(f"{Path(checkpoint).stem}-eval-{reference_run}-{split}.csv")
    with atomic_path(out) as tmp:
        _write_csv(tmp, result)
    result.csv_path = str(out)
    if record:
        with Store(db) as store:
            result.experiment_id = store.add_experiment(
                f"evaluate {Path(checkpoint).name} vs {reference_run} ({split})",
                {**ckpt["label_spec"], "reference": reference_run, "split": split},
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


def _write_csv(path: Path, result: Evaluation) -> None:
    import csv

    def cell(value: Any) -> Any:
        return (
            ""
            if isinstance(value, float) and math.isnan(value)
            else (round(value, 6) if isinstance(value, float) else value)
        )

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


@dataclass
class PredictionRun:
    name: str
    run_id: int
    reports: int
    labels: int
    present: int
    images: int
    skipped_images: int


def predict(
    checkpoint: str | Path,
    db: str | Path,
    data_dir: str | Path,
    name: str,
    split: str | None = None,
    imagenome: str | Path | None = None,
    batch_size: int = 16,
    device: str = "auto",
    workers: int = 0,
) -> PredictionRun:
    """Store the checkpoint's region-level predictions on a split (None: every split) as run `name`."""
    import pyarrow as pa

    from labeling.core.files import file_sha256
    from labeling.store.run_records import check_new_run_name, record_run
    from labeling.store.store import Store
    from schemas.runs import RunKind, RunSpec

    with Store(db, read_only=True) as store:
        check_new_run_name(store, name)
        reports = store.con.execute("SELECT count(*) FROM current_reports").fetchall()[0][0]
    if not reports:
        raise InputError(f"{db}: no reports stored; ingest the cohort's reports first")
    predicted = _predict_split(checkpoint, db, data_dir, None, split, imagenome, batch_size, device, workers)
    ckpt, records = predicted.checkpoint, predicted.dataset.examples.records
    lesions = list(ckpt["lesions"])
    thresholds = np.asarray(ckpt["thresholds"], np.float32)
    dataset_name = ckpt["train_config"].get("dataset")
    with Store(db, read_only=True) as store:
        found = store.report_keys([r.study_id for r in records], by="study_id", dataset=dataset_name)
    # One probability per (study, region, lesion): the maximum over the study's images with a valid box.
    study_probability: dict[int, np.ndarray] = {}
    study_seen: dict[int, np.ndarray] = {}
    skipped = 0
    for i, record in enumerate(records):
        hits = found.get(record.study_id, [])
        if len(hits) != 1:
            skipped += 1  # no stored report for this study (or several datasets: ambiguous)
            continue
        key = hits[0][1]
        valid = predicted.box_mask[i]
        probability = np.where(valid[:, None], predicted.probabilities[i], -1.0)
        study_probability[key] = np.maximum(study_probability.get(key, probability), probability)
        study_seen[key] = study_seen.get(key, np.zeros_like(valid)) | valid
    if not study_probability:
        raise InputError(f"{data_dir}: none of the predicted images has a report in {db}")

    from model.data.dataset import REGION_NAMES

    columns: dict[str, list] = {"report_key": [], "region": [], "finding": [], "status": [], "confidence": []}
    for key in sorted(study_probability):
        probability, seen = study_probability[key], study_seen[key]
        regions, lesion_index = np.nonzero(predicted.allowed & seen[:, None])
        for r, j in zip(regions.tolist(), lesion_index.tolist()):
            p = float(probability[r, j])
            present = p >= thresholds[j]
            columns["report_key"].append(key)
            columns["region"].append(REGION_NAMES[r])
            columns["finding"].append(lesions[j])
            columns["status"].append("present" if present else "absent")
            columns["confidence"].append(p if present else 1.0 - p)
    table = pa.table(
        {
            **{k: columns[k] for k in ("report_key", "region", "finding", "status")},
            "confidence": pa.array(columns["confidence"], pa.float32()),
        }
    )
    spec = RunSpec(
        name=name,
        kind=RunKind.model,
        vocabulary_version=ckpt["vocabulary_version"],
        backend="clala-net",
        model=str(Path(checkpoint).resolve()),
        source=str(Path(checkpoint).resolve()),
        params={
            "checkpoint": str(Path(checkpoint).resolve()),
            "checkpoint_sha256": file_sha256(checkpoint),
            "split": split,
            "thresholds": dict(zip(lesions, thresholds.tolist())),
            "label_spec": ckpt["label_spec"],
            "train_config": ckpt["train_config"],
            "model_config": {
                k: v for k, v in ckpt["model_config"].items() if k not in ("pos_weight", "global_pos_weight")
            },
            "epoch": ckpt["epoch"],
        },
    )
    with Store(db) as store:
        run_id = record_run(store, spec, sorted(study_probability), table)
    return PredictionRun(
        name,
        run_id,
        len(study_probability),
        table.num_rows,
        sum(1 for s in columns["status"] if s == "present"),
        len(records),
        skipped,
    )


__all__ = ["evaluate", "predict", "Evaluation", "LesionScores", "PredictionRun", "lesion_scores"]
