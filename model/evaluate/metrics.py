"""Lesion metrics: the F1-maximising threshold per lesion, the constant-prediction baseline, the
mean over supported lesions, AUROC, and the per-lesion scores of an evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from model.evaluate.inference import Predictions


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
class ScoredArrays:
    """What an evaluation scores: region probabilities [N, R, L], region labels and scored-cell
    mask [N, R, L], image labels and known-image mask [N, L], valid boxes [N, R], allowed cells [R, L]."""

    probabilities: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    image_labels: np.ndarray
    image_mask: np.ndarray
    box_mask: np.ndarray
    allowed: np.ndarray


def auroc(truth: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's AUROC; NaN where one class is missing."""
    from sklearn.metrics import roc_auc_score

    if truth.size == 0 or truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, scores))


def best_f1_threshold(truth: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of `scores >= threshold`; the cut sits half-way between the
    lowest score kept and the highest one dropped. (0.5, nan) without positives."""
    from sklearn.metrics import precision_recall_curve

    truth = truth.astype(bool)
    if not truth.any():
        return 0.5, float("nan")
    precision, recall, cuts = precision_recall_curve(truth, scores)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)[:-1]
    best = int(np.argmax(f1))
    threshold = float(cuts[best])
    lower = scores[scores < threshold]
    if len(lower):
        threshold = float((threshold + lower.max()) / 2)
    return threshold, float(f1[best])


def choose_thresholds(predictions: Predictions) -> tuple[list[float], list[float]]:
    """Per lesion: the validation F1-maximising threshold and that F1 (nan without positives)
    (`predictions`: a `model.evaluate.inference.Predictions`)."""
    thresholds, scores = [], []
    for lesion in range(predictions.probabilities.shape[-1]):
        cells = predictions.mask[..., lesion]
        threshold, f1 = best_f1_threshold(
            predictions.labels[..., lesion][cells] > 0.5, predictions.probabilities[..., lesion][cells]
        )
        thresholds.append(threshold)
        scores.append(f1)
    return thresholds, scores


def constant_baseline_f1(labels: np.ndarray, mask: np.ndarray) -> list[float]:
    """Per lesion, F1 of predicting every scored cell positive, the best constant prediction
    (all-negative scores 0): 2P / (P + N) with P positives among N cells; nan without positives."""
    scores = []
    for lesion in range(labels.shape[-1]):
        cells = mask[..., lesion]
        positives, total = float((labels[..., lesion][cells] > 0.5).sum()), float(cells.sum())
        scores.append(2 * positives / (positives + total) if positives else float("nan"))
    return scores


def mean_supported(values: Iterable[float]) -> float:
    """The mean of the defined values (NaN: a lesion without support); NaN when none is."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def lesion_scores(lesions: list[str], thresholds: list[float], arrays: ScoredArrays) -> list[LesionScores]:
    """Scores per lesion of `arrays` at the lesions' `thresholds`."""
    from sklearn.metrics import precision_recall_fscore_support

    probabilities, labels, mask, allowed = arrays.probabilities, arrays.labels, arrays.mask, arrays.allowed
    image_labels, image_mask, box_mask = arrays.image_labels, arrays.image_mask, arrays.box_mask
    rows = []
    usable = box_mask[..., None] & allowed[None]  # cells the model speaks for
    image_probability = np.where(usable, probabilities, 0.0).max(axis=1)  # [N, L]
    for j, lesion in enumerate(lesions):
        cells = mask[..., j]
        truth = labels[..., j][cells] > 0.5
        scores = probabilities[..., j][cells]
        predicted = scores >= thresholds[j]
        # zero_division=0: sklearn accepts a number; its stubs say str.
        p, r, f, _ = precision_recall_fscore_support(
            truth,
            predicted,
            average="binary",
            zero_division=0,  # pyright: ignore[reportArgumentType]
        )
        support = int(truth.sum())
        known = image_mask[:, j]
        image_truth = image_labels[known, j] > 0.5
        image_scores = image_probability[known, j]
        ip, ir, i_f, _ = precision_recall_fscore_support(
            image_truth,
            image_scores >= thresholds[j],
            average="binary",
            zero_division=0,  # pyright: ignore[reportArgumentType]
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
                auroc=auroc(truth, scores),
                baseline_f1=2 * support / (support + cells.sum()) if support else float("nan"),
                image_support=image_support,
                image_precision=float(ip),
                image_recall=float(ir),
                image_f1=float(i_f) if image_support else float("nan"),
                image_auroc=auroc(image_truth, image_scores),
            )
        )
    return rows
