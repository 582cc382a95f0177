"""clala's data types: the vocabulary (regions, findings), labels, reports and runs."""

from schemas.labels import Evidence, Label, Severity, Status, Temporal, merge_labels
from schemas.reports import Section, Sentence, SourceReport
from schemas.runs import RunInfo, RunKind, RunSpec, RunStatus
from schemas.vocabulary import Finding, Region, Vocabulary, load_vocabulary

__all__ = [
    "Evidence",
    "Finding",
    "Label",
    "Region",
    "RunInfo",
    "RunKind",
    "RunSpec",
    "RunStatus",
    "Section",
    "Sentence",
    "Severity",
    "SourceReport",
    "Status",
    "Temporal",
    "Vocabulary",
    "load_vocabulary",
    "merge_labels",
]
