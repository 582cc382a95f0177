"""Corrections: a reviewed run applied on top of a derived matrix, so that "LLM labels + 200
reviewed cells" becomes one training run (`clala derive SOURCE --corrections REVIEWED`).

The unit of a correction is the reviewed report. A reviewer in Label Studio sees a report with
the source's labels pre-filled and leaves the annotation as the report's labels should be, so
the reviewed run's labels are the reviewer's last word on every cell of that report: for every
report the reviewed run covers and the derived matrix holds, its cells (all regions x all
findings of the layout) and its region-less labels (one per finding) are the reviewed run's,
after the same uncertainty policy. A reviewed cell with no label is unmentioned there, whatever
the source said (a source's "no pneumothorax" goes when the reviewer left no such label). Reviewed reports the matrix
does not hold (the source never finished them, or `keep` left them out) are counted and left out:
a correction corrects, it does not add reports.

Corrections come after the spec's corruptions, so the reviewed cells win over them too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from labeling.core.errors import InputError
from labeling.store.store import Store
from model.labels.targets import apply_uncertainty
from schemas.labels import PRESENT


@dataclass
class CorrectionCounts:
    """What the reviewed run changed in the matrix (codes after the uncertainty policy); a
    region-less label counts as one cell."""

    reviewed_reports: int = 0  # reports the reviewed run covers
    applied_reports: int = 0  # of those, reports the matrix holds: their cells were replaced
    outside_reports: int = 0  # reviewed reports the matrix does not hold (left out)
    cells_changed: int = 0  # cells (region cells and region-less labels) of the applied reports whose code changed
    present_added: int = 0  # not present before, present after review
    present_removed: int = 0  # present before, not present after review

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Corrected:
    """A matrix after corrections: region codes and mask [n, R, F], region-less codes and mask
    [n, F], which reports were corrected [n], and what changed."""

    codes: np.ndarray
    mask: np.ndarray
    placeless: np.ndarray
    placeless_mask: np.ndarray
    corrected: np.ndarray
    counts: CorrectionCounts


def correct_matrix(
    store: Store,
    cells: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    layout: tuple[tuple[str, ...], tuple[str, ...], np.ndarray],
    *,
    reviewed: str,
    uncertain: str,
) -> Corrected:
    """The matrix `cells` = (region codes, region mask, region-less codes, region-less mask) over
    `layout` = (regions, findings, report keys) with the reviewed run's cells and region-less
    labels in every report it covers. The inputs are not changed."""
    regions, findings, report_keys = layout
    reviewed_keys = store.covered_reports(reviewed)
    counts = CorrectionCounts(reviewed_reports=len(reviewed_keys))
    corrected = np.isin(report_keys, reviewed_keys)
    counts.applied_reports = int(corrected.sum())
    counts.outside_reports = counts.reviewed_reports - counts.applied_reports
    codes, mask, placeless, placeless_mask = (array.copy() for array in cells)
    if not counts.applied_reports:
        return Corrected(codes, mask, placeless, placeless_mask, corrected, counts)
    rows = np.flatnonzero(corrected)
    keys = report_keys[rows].tolist()
    new_codes, new_mask = apply_uncertainty(store.label_matrix(reviewed, regions, findings, keys).codes, uncertain)
    new_placeless, new_placeless_mask = apply_uncertainty(
        store.placeless_matrix(reviewed, findings, keys).codes, uncertain
    )
    for before, after in ((codes[rows], new_codes), (placeless[rows], new_placeless)):
        counts.cells_changed += int((before != after).sum())
        counts.present_added += int(((before != PRESENT) & (after == PRESENT)).sum())
        counts.present_removed += int(((before == PRESENT) & (after != PRESENT)).sum())
    codes[rows], mask[rows] = new_codes, new_mask
    placeless[rows], placeless_mask[rows] = new_placeless, new_placeless_mask
    return Corrected(codes, mask, placeless, placeless_mask, corrected, counts)


def check_corrections(store: Store, reviewed: str, source: str) -> str:
    """The reviewed run's name, after refusing one that cannot correct `source`: itself, one with
    image-level labels only, or one that covers none of the source's reports."""
    run = store.run(reviewed)
    if run.name == store.run(source).name:
        raise InputError(f"--corrections {run.name!r} is the source run itself")
    regional, image_level = store.label_level_counts(run.run_id)
    if image_level and not regional:
        raise InputError(f"--corrections {run.name!r} has image-level labels only; corrections replace region cells")
    overlap = np.intersect1d(store.covered_reports(run.run_id), store.covered_reports(source))
    if not len(overlap):
        raise InputError(f"--corrections {run.name!r} covers none of the reports of {store.run(source).name!r}")
    return run.name


__all__ = ["CorrectionCounts", "Corrected", "check_corrections", "correct_matrix"]
