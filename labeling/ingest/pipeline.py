"""Ingestion: report files -> validated reports with sections and sentences in the store.

The whole input is read and validated (`read_input`) before the database is opened, so bad input
leaves the database untouched. Reports are then written in batches (reports with their sentences),
all of them and the `ingests` row in one transaction: an error or an interrupt leaves the database
as it was (no half-recorded ingest), and running the ingest again stores it, because reports
already stored with the same text are skipped. A report whose text changed is stored
as a new version beside the old one, never over it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from labeling.core.errors import InputError
from labeling.ingest.readers import FORMATS, Columns, detect_format, read_csv, read_iu_xray, read_jsonl, read_mimic
from labeling.ingest.sections import detect_sections
from labeling.ingest.sentences import split_sentences_many
from labeling.store.store import Store
from schemas.reports import SourceReport

DEFAULT_MAX_CHARS = 100_000  # real chest X-ray reports are a few thousand characters at most
BATCH_SIZE = 2_000
DEFAULT_DATASETS = {"mimic": "mimic-cxr", "iu-xray": "iu_xray"}
BLANK_POLICIES = ("auto", "error", "skip")


@dataclass(frozen=True)
class IngestOptions:
    """How to read an input: its format, which columns or fields hold what, the dataset to store it
    as, its encoding, what to do with blank reports, and the longest report accepted."""

    format: str = "auto"
    columns: Columns = field(default_factory=Columns)
    dataset: str | None = None
    encoding: str = "utf-8"
    blank: str = "auto"
    max_chars: int = DEFAULT_MAX_CHARS


@dataclass
class IngestInput:
    """An input read and validated, ready to be stored."""

    path: Path
    format: str
    dataset: str
    read: int  # rows read
    reports: list[SourceReport]  # the reports to store
    skipped_blank: list[str]
    duplicates: int


@dataclass
class IngestResult:
    source: str
    format: str
    dataset: str
    read: int = 0
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0
    duplicates: int = 0  # same id and same text repeated in the input
    skipped_blank: list[str] = field(default_factory=list)
    sentences: int = 0


def read_reports(path: Path, options: IngestOptions) -> tuple[str, str, list[SourceReport]]:
    """(format, dataset, reports) from an input file or folder."""
    fmt, encoding = options.format, options.encoding
    if fmt not in FORMATS:
        raise InputError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if not path.exists():
        raise InputError(f"{path}: file not found")
    fmt = detect_format(path) if fmt == "auto" else fmt
    dataset = options.dataset or DEFAULT_DATASETS.get(fmt) or path.stem
    if fmt == "csv":
        reports = read_csv(path, options.columns, dataset, encoding)
    elif fmt == "jsonl":
        reports = read_jsonl(path, options.columns, dataset, encoding)
    elif fmt == "mimic":
        reports = read_mimic(path, dataset, encoding)
    else:
        reports = read_iu_xray(path, dataset, encoding)
    return fmt, dataset, reports


def validate_reports(
    reports: list[SourceReport], fmt: str, blank: str = "auto", max_chars: int = DEFAULT_MAX_CHARS
) -> tuple[list[SourceReport], list[str], int]:
    """(reports to store, ids skipped as blank, duplicate rows dropped), or InputError.

    Blank reports are an error in CSV and JSONL files (usually the wrong --text-col), but a known
    property of real corpora (IU X-ray has 25 rows with no report text), which are skipped and
    listed by default; `blank` overrides either way.
    """
    if blank not in BLANK_POLICIES:
        raise InputError(f"--blank: {blank!r} is not one of {', '.join(BLANK_POLICIES)}")
    skip_blank = blank == "skip" or (blank == "auto" and fmt in ("mimic", "iu-xray"))
    kept: list[SourceReport] = []
    skipped: list[str] = []
    first_seen: dict[str, SourceReport] = {}
    duplicates = 0
    for report in reports:
        if not report.text.strip():
            if skip_blank:
                skipped.append(report.report_id)
                continue
            raise InputError(
                f"{report.source} (id {report.report_id}): report text is blank; "
                "fix the row, check --text-col, or pass --blank skip"
            )
        if len(report.text) > max_chars:
            raise InputError(
                f"{report.source} (id {report.report_id}): report is {len(report.text):,} characters, "
                f"over the limit of {max_chars:,} (--max-chars)"
            )
        earlier = first_seen.get(report.report_id)
        if earlier is not None:
            if earlier.text != report.text:
                raise InputError(
                    f"{report.source}: id {report.report_id!r} was already used with different text "
                    f"at {earlier.source.rsplit(': ', 1)[-1]}; report ids must be unique"
                )
            duplicates += 1
            continue
        first_seen[report.report_id] = report
        kept.append(report)
    return kept, skipped, duplicates


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def batch_tables(
    batch: list[tuple[SourceReport, int, int]], ingest_id: int, now: datetime
) -> tuple[pa.Table, pa.Table, int]:
    """Arrow tables for reports [(report, report_key, version)] and their sentences."""
    texts = [report.text for report, _, _ in batch]
    sections = [detect_sections(text) for text in texts]
    sentences = split_sentences_many(texts, sections)
    reports_table = pa.table(
        {
            "report_key": pa.array([key for _, key, _ in batch], pa.int64()),
            "dataset": [r.dataset for r, _, _ in batch],
            "report_id": [r.report_id for r, _, _ in batch],
            "version": pa.array([version for _, _, version in batch], pa.int32()),
            "patient_id": pa.array([r.patient_id for r, _, _ in batch], pa.string()),
            "study_id": pa.array([r.study_id for r, _, _ in batch], pa.string()),
            "image_paths": pa.array([r.image_paths for r, _, _ in batch], pa.list_(pa.string())),
            "text": texts,
            "sections": [json.dumps([s.model_dump() for s in secs]) for secs in sections],
            "text_sha256": [text_sha256(t) for t in texts],
            "metadata": [json.dumps(r.metadata) for r, _, _ in batch],
            "source": [r.source for r, _, _ in batch],
            "ingest_id": pa.array([ingest_id] * len(batch), pa.int32()),
            "ingested_at": pa.array([now] * len(batch), pa.timestamp("us")),
        }
    )
    rows = [(key, s) for (_, key, _), report_sentences in zip(batch, sentences) for s in report_sentences]
    sentences_table = pa.table(
        {
            "report_key": pa.array([key for key, _ in rows], pa.int64()),
            "sentence_index": pa.array([s.index for _, s in rows], pa.int32()),
            "section": pa.array([s.section for _, s in rows], pa.string()),
            "start_char": pa.array([s.start for _, s in rows], pa.int32()),
            "end_char": pa.array([s.end for _, s in rows], pa.int32()),
            "text": pa.array([s.text for _, s in rows], pa.string()),
            "norm_sha256": pa.array([s.norm_sha256 for _, s in rows], pa.string()),
        }
    )
    return reports_table, sentences_table, len(rows)


def read_input(path: str | Path, options: IngestOptions | None = None) -> IngestInput:
    """Read and validate a file or folder of reports (no database involved), or InputError."""
    path = Path(path)
    options = options or IngestOptions()
    fmt, dataset, reports = read_reports(path, options)
    kept, skipped, duplicates = validate_reports(reports, fmt, options.blank, options.max_chars)
    return IngestInput(path, fmt, dataset, len(reports), kept, skipped, duplicates)


def ingest(
    store: Store,
    source: IngestInput | str | Path,
    options: IngestOptions | None = None,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> IngestResult:
    """Store an input (read and validated by `read_input`, or a path to read with `options`).

    `on_progress(done, total)` is called after each batch is written (all commit together).
    """
    if not isinstance(source, IngestInput):
        source = read_input(source, options)
    path, fmt, dataset, kept = source.path, source.format, source.dataset, source.reports
    result = IngestResult(
        source=str(path),
        format=fmt,
        dataset=dataset,
        read=source.read,
        duplicates=source.duplicates,
        skipped_blank=source.skipped_blank,
    )
    stored = store.latest_versions(dataset, [r.report_id for r in kept])
    todo: list[tuple[SourceReport, int]] = []  # (report, version)
    for report in kept:
        previous = stored.get(report.report_id)
        if previous is None:
            todo.append((report, 1))
        elif previous[1] == text_sha256(report.text):
            result.unchanged += 1
        else:
            todo.append((report, previous[0] + 1))
    with store.transaction():
        ingest_id = store.start_ingest(str(path.resolve()), fmt, dataset, source.read)
        now = datetime.now()
        for start in range(0, len(todo), BATCH_SIZE):
            chunk = todo[start : start + BATCH_SIZE]
            first_key = store.next_report_key()
            batch = [(report, first_key + i, version) for i, (report, version) in enumerate(chunk)]
            reports_table, sentences_table, n_sentences = batch_tables(batch, ingest_id, now)
            store.add_reports(reports_table, sentences_table)
            result.sentences += n_sentences
            for report, version in chunk:
                (result.added if version == 1 else result.changed).append(report.report_id)
            if on_progress:
                on_progress(start + len(chunk), len(todo))
        store.finish_ingest(
            ingest_id, len(result.added), len(result.changed), result.unchanged, len(source.skipped_blank)
        )
    return result
