"""Review: comparing runs, review queues of their disagreements, Label Studio tasks, heatmaps.

The names below are imported on first use, so that importing the package stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labeling.core.lazy import lazy_exports

if TYPE_CHECKING:
    from labeling.review.audit import (
        UNMENTIONED_PROBABILITY,
        AuditCells,
        AuditResult,
        ProbabilitySource,
        audit_cells,
        check_queue_out,
        check_tasks_out,
        rank_cells,
        run_probabilities,
        write_audit_tasks,
        write_queue,
    )
    from labeling.review.compare import (
        CompareOptions,
        Comparison,
        MetricRow,
        bin_counts,
        cell_bins,
        check_options,
        compare_runs,
        compare_to_reference,
        comparison_vocabulary,
        metrics_from_counts,
    )
    from labeling.review.disagreements import QueueOptions, disagreement_queue, write_disagreements
    from labeling.review.labelstudio import LabelStudioExport, export_labelstudio

_WHERE = {
    "UNMENTIONED_PROBABILITY": "labeling.review.audit",
    "AuditCells": "labeling.review.audit",
    "AuditResult": "labeling.review.audit",
    "ProbabilitySource": "labeling.review.audit",
    "audit_cells": "labeling.review.audit",
    "check_queue_out": "labeling.review.audit",
    "check_tasks_out": "labeling.review.audit",
    "rank_cells": "labeling.review.audit",
    "run_probabilities": "labeling.review.audit",
    "write_audit_tasks": "labeling.review.audit",
    "write_queue": "labeling.review.audit",
    "CompareOptions": "labeling.review.compare",
    "Comparison": "labeling.review.compare",
    "MetricRow": "labeling.review.compare",
    "bin_counts": "labeling.review.compare",
    "cell_bins": "labeling.review.compare",
    "check_options": "labeling.review.compare",
    "compare_runs": "labeling.review.compare",
    "compare_to_reference": "labeling.review.compare",
    "comparison_vocabulary": "labeling.review.compare",
    "metrics_from_counts": "labeling.review.compare",
    "QueueOptions": "labeling.review.disagreements",
    "disagreement_queue": "labeling.review.disagreements",
    "write_disagreements": "labeling.review.disagreements",
    "LabelStudioExport": "labeling.review.labelstudio",
    "export_labelstudio": "labeling.review.labelstudio",
}
__all__ = [
    "UNMENTIONED_PROBABILITY",
    "AuditCells",
    "AuditResult",
    "ProbabilitySource",
    "audit_cells",
    "check_queue_out",
    "check_tasks_out",
    "rank_cells",
    "run_probabilities",
    "write_audit_tasks",
    "write_queue",
    "CompareOptions",
    "Comparison",
    "LabelStudioExport",
    "MetricRow",
    "QueueOptions",
    "bin_counts",
    "cell_bins",
    "check_options",
    "compare_runs",
    "compare_to_reference",
    "comparison_vocabulary",
    "disagreement_queue",
    "export_labelstudio",
    "metrics_from_counts",
    "write_disagreements",
]

__getattr__ = lazy_exports(__name__, _WHERE)
