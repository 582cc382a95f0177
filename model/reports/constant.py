"""The constant report: what a report generator that never looks at the image would best write.

A generated report is worth something only where it beats the same report written for every
study. `constant_report(store, run, report_keys)` finds that report from a label run's labels of
the training reports:
- findings: the most frequent ones (share of the training reports that state them present, at
  image level: region labels and region-less ones together), as many of them as maximise the
  image-level micro F1 of saying them in every training report (the best constant, as the
  evaluation's constant-prediction baseline is the best constant for one lesion);
- regions of each finding: those where the run places it in at least half of the training reports
  that state it (at least its most frequent one); none where the run never places it.
`write_constant_reports` writes it, with the same writer as `clala generate` (model/reports/writer.py,
the deterministic path), once for each report of an existing generation (same study ids, same
source reports) and stores them as generation `<name>`, so that `score-reports` scores both alike.
Uncertain labels do not count as present.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labeling.core.errors import InputError
from labeling.store.store import Store
from model.reports.writer import (
    GENERATED_PREFIX,
    PredictedLesion,
    ReportInputs,
    StoredReports,
    generated_reports,
    store_generated_reports,
    write_reports,
)
from schemas.labels import PRESENT
from schemas.vocabulary import Vocabulary, load_vocabulary

REGION_SHARE = 0.5  # a region is the constant finding's when the run places it there this often


@dataclass(frozen=True)
class ConstantFinding:
    finding: str
    frequency: float  # share of the training reports that state it present
    regions: tuple[str, ...]  # where the constant report places it


@dataclass(frozen=True)
class ConstantReport:
    run: str
    reports: int  # training reports it was counted on
    findings: tuple[ConstantFinding, ...]
    train_f1: float  # image-level micro F1 of saying these findings in every training report

    @property
    def lesions(self) -> list[PredictedLesion]:
        """The report's lesions as the writer takes them (probability: the training frequency)."""
        return [PredictedLesion(finding=f.finding, probability=f.frequency, regions=f.regions) for f in self.findings]

    def inputs(self, report_id: str, source_report_key: int | None) -> ReportInputs:
        """This report for one study (it looks at no image)."""
        return ReportInputs(report_id=report_id, source_report_key=source_report_key, lesions=self.lesions)

    def describe(self) -> str:
        return "; ".join(
            f"{f.finding} ({f.frequency:.0%}{', ' + ', '.join(f.regions) if f.regions else ''})" for f in self.findings
        )


def best_constant_count(frequencies: Sequence[float]) -> tuple[int, float]:
    """(k, F1): how many of the findings, by decreasing `frequencies` (the share of reports stating
    each, one entry per finding of the vocabulary), to state in every report to maximise the
    image-level micro F1 over the reports, and that F1. Saying the top k gives TP = N sum(p_1..p_k),
    FP = N k - TP and FN = N sum(p) - TP, so F1 = 2 sum(p_1..p_k) / (k + sum(p)). (0, 0.0) when no
    finding is ever present."""
    ordered = np.sort(np.asarray(frequencies, dtype=np.float64))[::-1]
    total = float(ordered.sum())
    if total <= 0:
        return 0, 0.0
    k = np.arange(1, len(ordered) + 1)
    f1 = 2 * np.cumsum(ordered) / (k + total)
    best = int(np.argmax(f1))
    return best + 1, float(f1[best])


def constant_report(
    store: Store, run: str, report_keys: Sequence[int], vocabulary: Vocabulary | None = None
) -> ConstantReport:
    """The constant report of label run `run` over the (training) reports `report_keys`; see the
    module doc. Reports the run does not cover are left out."""
    vocabulary = vocabulary or load_vocabulary()
    name = store.run(run).name
    covered = np.intersect1d(np.asarray(report_keys, dtype=np.int64), store.covered_reports(name))
    if not len(covered):
        raise InputError(f"run {name!r} covers none of the {len(report_keys):,} reports given")
    regions, findings = vocabulary.region_names, vocabulary.finding_names
    image = store.image_matrix(name, regions, findings, report_keys=covered.tolist()).codes == PRESENT  # [N, F]
    placed = store.label_matrix(name, regions, findings, report_keys=covered.tolist()).codes == PRESENT  # [N, R, F]
    frequency = image.mean(axis=0)
    count, train_f1 = best_constant_count(frequency)
    # Most frequent first; the vocabulary's order among equals (a stable sort).
    order = np.argsort(-frequency, kind="stable")[:count]
    chosen = []
    for j in order:
        stating = image[:, j]
        share = placed[stating, :, j].mean(axis=0) if stating.any() else np.zeros(len(regions))
        where = [r for r in np.flatnonzero(share >= REGION_SHARE)] or (
            [int(np.argmax(share))] if share.max() > 0 else []
        )
        chosen.append(ConstantFinding(findings[j], float(frequency[j]), tuple(regions[r] for r in where)))
    return ConstantReport(name, len(covered), tuple(chosen), train_f1)


def split_report_keys(
    store: Store, data: str | Path, split: str = "train", imagenome: str | Path | None = None
) -> list[int]:
    """The stored (not generated) report of each study of a cohort split, as training reads it
    (images_to_avoid left out): the reports a training run learns from."""
    from model.data.dataset import load_cohort

    cohort = load_cohort(data, imagenome or data, split)
    studies = sorted({record.study_id for record in cohort.records})
    found = store.report_keys(studies, by="study_id")
    keys = []
    for hits in found.values():
        sources = [key for dataset, key in hits if not dataset.startswith(GENERATED_PREFIX)]
        if len(sources) == 1:
            keys.append(sources[0])
    return sorted(keys)


def write_constant_reports(
    store: Store, name: str, like: str, constant: ConstantReport, *, vocabulary: Vocabulary | None = None
) -> StoredReports:
    """The constant report, written by the deterministic writer for each report of generation
    `like` (same report id and source report) and stored as generation `name`."""
    items = [constant.inputs(row["report_id"], row["source_report_key"]) for row in generated_reports(store, like)]
    written = write_reports(items, None, threshold=0.0, vocabulary=vocabulary)
    provenance = {
        "constant": {
            "run": constant.run,
            "training_reports": constant.reports,
            "train_image_f1": constant.train_f1,
            "findings": [
                {"finding": f.finding, "frequency": f.frequency, "regions": list(f.regions)} for f in constant.findings
            ],
        },
        "like": like,
    }
    return store_generated_reports(store, name, written, provenance=provenance)


__all__ = [
    "ConstantFinding",
    "ConstantReport",
    "best_constant_count",
    "constant_report",
    "split_report_keys",
    "write_constant_reports",
]
