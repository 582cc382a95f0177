"""Reading reports: files -> validated reports with sections and sentences in the store.

The names below are imported on first use, so that importing the package stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labeling.core.lazy import lazy_exports

if TYPE_CHECKING:
    from labeling.ingest.pipeline import IngestInput, IngestOptions, IngestResult, batch_tables, ingest, read_input
    from labeling.ingest.readers import Columns
    from labeling.ingest.samples import sample_reports_path
    from labeling.ingest.sections import FINDING_SECTIONS, detect_sections
    from labeling.ingest.sentences import normalize_sentence, split_sentences_many

_WHERE = {
    "IngestInput": "labeling.ingest.pipeline",
    "IngestOptions": "labeling.ingest.pipeline",
    "IngestResult": "labeling.ingest.pipeline",
    "batch_tables": "labeling.ingest.pipeline",
    "ingest": "labeling.ingest.pipeline",
    "read_input": "labeling.ingest.pipeline",
    "Columns": "labeling.ingest.readers",
    "FINDING_SECTIONS": "labeling.ingest.sections",
    "detect_sections": "labeling.ingest.sections",
    "normalize_sentence": "labeling.ingest.sentences",
    "split_sentences_many": "labeling.ingest.sentences",
    "sample_reports_path": "labeling.ingest.samples",
}
__all__ = [
    "Columns",
    "FINDING_SECTIONS",
    "IngestInput",
    "IngestOptions",
    "IngestResult",
    "batch_tables",
    "detect_sections",
    "ingest",
    "normalize_sentence",
    "read_input",
    "sample_reports_path",
    "split_sentences_many",
]

__getattr__ = lazy_exports(__name__, _WHERE)
