"""The rules label source's runs: the labeler over the stored sentences of the selected reports,
in batches, each stored whole with its work rows; an interrupted run resumes with --resume.

A sentence's labels depend on its text alone, so each distinct sentence text is labeled once per
run and its labels are placed at every occurrence's offsets.
"""

from __future__ import annotations

import time
from collections import Counter

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from labeling.core.errors import ClalaError
from labeling.ingest.sections import FINDING_SECTIONS
from labeling.sources.rules.labeler import RULES_VERSION, RulesLabeler, SentenceLabel
from labeling.sources.selection import ReportSelection, select_reports
from labeling.store.run_records import RunHooks, RunResult, resume_or_create
from labeling.store.store import LABEL_COLUMNS, Store
from schemas.labels import STATUS_RANK
from schemas.runs import RunKind, RunSpec, RunStatus
from schemas.vocabulary import load_vocabulary

RULES_COLUMNS = tuple(c for c in LABEL_COLUMNS if c != "confidence")  # the rules state no confidence


class RulesRequest(BaseModel):
    """Label with the rules: a new run `name` (default: rules-time) over `reports`, or finish run
    `resume` (its own vocabulary and rules). Each batch of `batch_size` reports is stored whole."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    resume: str | None = None
    reports: ReportSelection = Field(default_factory=ReportSelection)
    vocabulary: str | None = None
    enable: list[str] = []
    batch_size: int = Field(default=2000, ge=1)


def reading_sentences(store: Store, report_keys: list[int]) -> pa.Table:
    """The sentences the rules read: FINDINGS and IMPRESSION where a report has them, else all."""
    return store.reading_sentences(report_keys, FINDING_SECTIONS)


def label_batch(
    store: Store,
    labeler: RulesLabeler,
    report_keys: list[int],
    memo: dict[str, list[SentenceLabel]],
    result: RunResult,
) -> pa.Table:
    """Labels of a batch of reports, one row per cell (present > uncertain > absent; the first
    mention of the winning status gives the evidence)."""
    sentences = reading_sentences(store, report_keys)
    keys = sentences["report_key"].to_pylist()
    starts = sentences["start_char"].to_pylist()
    texts = sentences["text"].to_pylist()
    new = list(dict.fromkeys(t for t in texts if t not in memo))
    for text, labels in zip(new, labeler.label_sentences(new, result.details["skipped_context"])):
        memo[text] = labels
    result.counts["sentences"] += len(texts)
    result.counts["distinct_sentences"] = len(memo)
    cells: dict[tuple[int, str | None, str], tuple] = {}
    for key, offset, text in zip(keys, starts, texts):
        for label in memo[text]:
            cell = (key, label.region, label.finding)
            row = (
                key,
                label.region,
                label.finding,
                label.status,
                label.severity,
                label.temporal,
                offset + label.start,
                offset + label.end,
                text[label.start : label.end],
            )
            held = cells.get(cell)
            if held is None or STATUS_RANK[label.status] < STATUS_RANK[held[3]]:
                cells[cell] = row
    rows = list(cells.values())
    return pa.table({name: [r[i] for r in rows] for i, name in enumerate(RULES_COLUMNS)})


def _labeler(store: Store, request: RulesRequest) -> RulesLabeler:
    """The labeler of a new run, or of the run to resume (which must have been made by these rules)."""
    if request.resume:
        run = store.run(request.resume)
        if run.kind is not RunKind.rules:
            raise ClalaError(f"run {run.name!r} is a {run.kind.value} run, not a rules run")
        labeler = RulesLabeler(load_vocabulary(run.params.get("vocabulary"), enable=run.params.get("enable", [])))
        if labeler.sha256 != run.params.get("rules_sha256"):
            raise ClalaError(
                f"run {run.name!r} was made with other rules (sha256 {run.params.get('rules_sha256', '?')[:12]}); "
                "start a new run instead"
            )
        return labeler
    try:
        return RulesLabeler(load_vocabulary(request.vocabulary, enable=request.enable))
    except (ValueError, FileNotFoundError) as exc:
        raise ClalaError(str(exc)) from None


def _new_run(store: Store, request: RulesRequest, labeler: RulesLabeler) -> tuple[RunSpec, list[int]]:
    import medspacy

    spec = RunSpec(
        name=request.name or f"rules-{time.strftime('%Y%m%d-%H%M%S')}",
        kind=RunKind.rules,
        vocabulary_version=labeler.vocabulary.version,
        backend="rules",
        model=f"medspacy-{medspacy.__version__}",
        prompt_name=None,
        prompt_sha256=None,
        decoding={},
        params={
            "rules_version": RULES_VERSION,
            "rules_sha256": labeler.sha256,
            "vocabulary": request.vocabulary,
            "enable": request.enable,
            "sections": list(FINDING_SECTIONS),
        },
    )
    return spec, select_reports(store, request.reports)


def label_with_rules(store: Store, request: RulesRequest, *, hooks: RunHooks | None = None) -> RunResult:
    """Label reports with the rules as a new run, or finish run `request.resume`. Each batch of
    reports is stored whole with its work rows, or not at all."""
    started = time.perf_counter()
    hooks = hooks or RunHooks()
    labeler = _labeler(store, request)
    run, _ = resume_or_create(
        store, resume=request.resume, kind=RunKind.rules, create=lambda: _new_run(store, request, labeler)
    )
    pending = store.work(run.run_id)
    result = RunResult(name=run.name, kind=RunKind.rules.value, run_id=run.run_id, status=RunStatus.running)
    result.reports = sum(store.work_counts(run.run_id).values())
    result.reports_done = result.reports - len(pending)
    result.counts.update(sentences=0, distinct_sentences=0)
    result.details["skipped_context"] = Counter()  # historical/hypothetical/family mentions
    hooks.start(result)
    memo: dict[str, list[SentenceLabel]] = {}
    try:
        for first in range(0, len(pending), request.batch_size):
            batch = pending[first : first + request.batch_size]
            table = label_batch(store, labeler, batch, memo, result)
            with store.transaction():
                if table.num_rows:
                    store.write_labels(run.run_id, table)
                store.set_work(run.run_id, batch, "done")
            result.reports_done += len(batch)
            result.labels += table.num_rows
            result.statuses.update(table["status"].to_pylist())
            hooks.advance(result, len(batch))
    except BaseException:
        store.set_run_status(run.run_id, RunStatus.incomplete)
        raise
    store.set_run_status(run.run_id, RunStatus.complete)
    result.status = RunStatus.complete
    result.seconds = time.perf_counter() - started
    return result
