"""Runs made in one go (imports, human reviews, rules): created, filled and completed in a single
transaction, so a failure leaves no run behind and a stored run is always whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pyarrow as pa

from labeling.errors import InputError
from labeling.store import Store
from schemas.runs import RunSpec, RunStatus, run_name_problem


@dataclass
class SkipLog:
    """Input the source could not use, counted per reason with a few examples each, so that
    nothing is dropped silently."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    keep: int = 10

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.keep and example not in examples:
            examples.append(example)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class ImportResult:
    """What an import (or any one-go run) stored and what it skipped."""

    run: str
    kind: str
    source: str
    reports: int = 0          # reports the run covers (labeled or known to have no finding)
    labels: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    skipped: SkipLog = field(default_factory=SkipLog)
    details: dict[str, Any] = field(default_factory=dict)


def check_new_run_name(store: Store, name: str) -> None:
    problem = run_name_problem(name)
    if problem:
        raise InputError(f"--name: {problem}")
    if store.con.execute("SELECT count(*) FROM runs WHERE name = ?", [name]).fetchall()[0][0]:
        raise InputError(f"{store.path}: a run named {name!r} already exists; choose another --name")


def record_run(store: Store, spec: RunSpec, report_keys: Sequence[int],
               labels: pa.Table | Mapping[str, Sequence[Any]]) -> int:
    """Create run `spec`, mark `report_keys` covered, store `labels`, and complete it: all in one
    transaction. Returns the run id."""
    check_new_run_name(store, spec.name)
    with store.transaction():
        run_id = store.create_run(spec)
        store.add_done_work(run_id, report_keys)
        table = labels if isinstance(labels, pa.Table) else pa.table(dict(labels))
        if table.num_rows:
            store.write_labels(run_id, table)
        store.set_run_status(run_id, RunStatus.complete)
    return run_id


def status_counts(labels: Mapping[str, Sequence[Any]] | pa.Table) -> dict[str, int]:
    statuses = labels["status"]
    values = statuses.to_pylist() if hasattr(statuses, "to_pylist") else list(statuses)
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts
