"""Run records: the one result type of every label source, the one check of a new run's name,
the resume-or-create skeleton of runs made in batches (LLM, rules), and `record_run` for runs made
in one go (imports, human reviews, derived runs, predictions): created, filled and completed in a
single transaction, so a failure leaves no run behind and a stored run is always whole."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from labeling.core.errors import ClalaError, InputError
from labeling.store.store import Store
from schemas.runs import RunInfo, RunKind, RunSpec, RunStatus, run_name_problem


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
class RunResult:
    """What creating or finishing a run of any label source stored: an LLM or rules run, an
    import, a derived run, a model's predictions. One type, so that every source is shown,
    tested and compared the same way; a source's own figures go in `counts` and `details`."""

    name: str
    kind: str
    run_id: int | None = None
    status: RunStatus = RunStatus.complete
    source: str = ""  # what the labels came from: an input file, a model, a parent run
    reports: int = 0  # reports the run covers (labeled or known to have no finding)
    reports_done: int = 0
    reports_failed: int = 0
    reports_pending: int = 0
    labels: int = 0
    statuses: Counter[str] = field(default_factory=Counter)  # labels per status
    rejected: dict[str, int] = field(default_factory=dict)  # labels refused, per reason
    skipped: SkipLog = field(default_factory=SkipLog)  # input the source could not use
    counts: Counter[str] = field(default_factory=Counter)  # the source's own work: calls, sentences, images ...
    details: dict[str, Any] = field(default_factory=dict)  # anything else worth showing, as "key: value"
    seconds: float = 0.0
    stopped_because: str | None = None

    @property
    def complete(self) -> bool:
        return self.status is RunStatus.complete


@dataclass
class RunHooks:
    """What a command shows while a run works: `started(result)` once the run and its size are
    known, `advanced(result, n)` after each committed batch of `n` reports, `noted(result, text)`
    when the run waits on something worth saying (a batch job's status)."""

    started: Callable[[RunResult], None] | None = None
    advanced: Callable[[RunResult, int], None] | None = None
    noted: Callable[[RunResult, str], None] | None = None

    def start(self, result: RunResult) -> None:
        if self.started:
            self.started(result)

    def advance(self, result: RunResult, n: int) -> None:
        if self.advanced:
            self.advanced(result, n)

    def note(self, result: RunResult, text: str) -> None:
        if self.noted:
            self.noted(result, text)


def check_new_run_name(store: Store, name: str, *, resumable: bool = False) -> None:
    """The one check of a new run's name: well formed and not used yet (`resumable`: say how to
    finish the run of that name instead)."""
    problem = run_name_problem(name)
    if problem:
        raise InputError(f"--name: {problem}")
    if store.run_exists(name):
        finish = f" or finish it with --resume {name}" if resumable else ""
        raise InputError(f"{store.path}: a run named {name!r} already exists; choose another --name{finish}")


def resume_or_create(
    store: Store,
    *,
    resume: str | None,
    kind: RunKind,
    create: Callable[[], tuple[RunSpec, Sequence[int]]],
) -> tuple[RunInfo, bool]:
    """The run to work on: run `resume` (which must be of `kind`; set running again), or a new
    run from `create()` -> (spec, report keys to do), created with its work rows in one
    transaction. Returns the run and whether it was resumed."""
    if resume:
        run = store.run(resume)
        if run.kind is not kind:
            raise ClalaError(f"run {run.name!r} is a {run.kind.value} run, not a {kind.value} run")
        store.set_run_status(run.run_id, RunStatus.running)
        return store.run(run.run_id), True
    spec, report_keys = create()
    check_new_run_name(store, spec.name, resumable=True)
    with store.transaction():
        run_id = store.create_run(spec)
        store.add_work(run_id, report_keys)
    return store.run(run_id), False


def record_run(
    store: Store, spec: RunSpec, report_keys: Sequence[int], labels: pa.Table | Mapping[str, Sequence[Any]]
) -> int:
    """Create run `spec`, mark `report_keys` covered, store `labels`, and complete it: all in one
    transaction. Returns the run id."""
    check_new_run_name(store, spec.name)
    with store.transaction():
        run_id = store.create_run(spec)
        store.add_done_work(run_id, report_keys)
        table = pa.table(dict(labels)) if isinstance(labels, Mapping) else labels
        if table.num_rows:
            store.write_labels(run_id, table)
        store.set_run_status(run_id, RunStatus.complete)
    return run_id


def status_counts(labels: Mapping[str, Sequence[Any]] | pa.Table) -> Counter[str]:
    """Labels per status, of an Arrow table or a column mapping."""
    if isinstance(labels, Mapping):
        return Counter(labels["status"])
    return Counter(labels.column("status").to_pylist())
