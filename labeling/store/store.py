"""The DuckDB store: one database file holds reports, sentences, runs and their labels, the
resumable-work state, failures, the LLM cache and experiments. All of clala's SQL is here, in one
query class per group of tables (reports, runs, labels, experiments); `Store` is all of them on
one connection (labeling/store/connection.py)."""

from __future__ import annotations

from labeling.store.connection import DEFAULT_DB, Connection
from labeling.store.experiments import ExperimentQueries
from labeling.store.labels import (
    LABEL_COLUMNS,
    REQUIRED_LABEL_COLUMNS,
    LabelMatrix,
    LabelQueries,
    absent_everywhere,
    collapse_regions,
)
from labeling.store.reports import ReportQueries
from labeling.store.samples import SampleQueries

__all__ = [
    "DEFAULT_DB",
    "LABEL_COLUMNS",
    "REQUIRED_LABEL_COLUMNS",
    "Connection",
    "LabelMatrix",
    "Store",
    "collapse_regions",
    "absent_everywhere",
]


class Store(ReportQueries, LabelQueries, ExperimentQueries, SampleQueries):
    """A clala database. Open it with `Store(path)`; read-only opens allow concurrent readers."""
