"""Lesion metrics: the F1-maximising threshold per lesion, the lesions a report may state, the
constant-prediction baseline, the mean over the scored lesions, AUROC, and the per-lesion scores of
an evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
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


def reportable_lesions(predictions: Predictions, thresholds: Sequence[float]) -> tuple[list[bool], float]:
    """Which lesions a generated report may state, each at its own threshold: the set that
    maximises the micro F1 over every lesion's validation cells pooled (what a report's label
    consistency measures), and that F1 (nan without validation positives).

    A lesion's own F1-maximising threshold serves that lesion's F1 alone: where the model can
    barely tell a lesion, it is a low cut that flags many cells (a few true ones among them), and
    in a report those are false statements that outweigh the rest. Pooled, a lesion raises the
    micro F1 exactly when its precision exceeds half of it, so the best set is a prefix of the
    lesions ordered by validation precision (Dinkelbach); this takes the best prefix. A lesion
    with no true positive on validation is never in it."""
    lesions = predictions.probabilities.shape[-1]
    cuts = np.asarray(thresholds, dtype=np.float64)
    predicted = (predictions.probabilities >= cuts) & predictions.mask
    truth = (predictions.labels > 0.5) & predictions.mask
    tp = (predicted & truth).reshape(-1, lesions).sum(axis=0)
    flagged = predicted.reshape(-1, lesions).sum(axis=0)
    positives = int(truth.sum())
    keep = [False] * lesions
    if not positives:
        return keep, float("nan")
    order = np.argsort(-(tp / np.maximum(flagged, 1)), kind="stable")
    best, count = 0.0, 0
    for k in range(1, lesions + 1):
        if tp[order[k - 1]] == 0:
            break
        chosen = order[:k]
        f1 = 2 * float(tp[chosen].sum()) / (float(flagged[chosen].sum()) + positives)
        if f1 > best:
            best, count = f1, k
    for j in order[:count]:
        keep[int(j)] = True
    return keep, best


def constant_baseline_f1(labels: np.ndarray, mask: np.ndarray) -> list[float]:
    """Per lesion, F1 of predicting every scored cell positive, the best constant prediction
    (all-negative scores 0): 2P / (P + N) with P positives among N cells; nan without positives."""
    scores = []
    for lesion in range(labels.shape[-1]):
        cells = mask[..., lesion]
        positives, total = float((labels[..., lesion][cells] > 0.5).sum()), float(cells.sum())
        scores.append(2 * positives / (positives + total) if positives else float("nan"))
    return scores


def is_scored(row: LesionScores, min_positives: int = 1) -> bool:
    """Whether a lesion enters an evaluation's means: at least `min_positives` positive reference
    cells (and at least one: a lesion without support has no F1)."""
    return row.support >= max(1, min_positives)


def scored_lesions(rows: Iterable[LesionScores], min_positives: int = 1) -> list[LesionScores]:
    """The rows of the lesions scored (`is_scored`), in their order."""
    return [row for row in rows if is_scored(row, min_positives)]


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
