"""`clala import synth-gold PATH --name NAME`: a synthetic cohort's gold as two runs.

`NAME-report` holds the report truth (what each report's text says: present, absent, uncertain,
with severity, comparison and the sentence as evidence; a statement that names no place is an
image-level label, the no-location rule); `NAME-image` holds the image truth (every
rendered lesion, present in each allowed region whose box holds it; cells it does not list are
absent). Reports are matched by study id, as `clala ingest DIR --format mimic` stores them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labeling.core.errors import InputError
from labeling.store.run_records import RunResult, SkipLog, check_new_run_name, record_run, status_counts
from labeling.store.store import Store
from schemas.labels import STATUS_RANK
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import Vocabulary

GOLD_FILE = "synth_gold.jsonl"
REQUIRED_FIELDS = ("study_id", "image_truth", "report_truth")


def read_gold(path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The gold file (PATH itself, or PATH/synth_gold.jsonl) and its records."""
    file = path / GOLD_FILE if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{file}: no synthetic gold file here (write a cohort with `clala synth`)")
    records = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{file}: line {number}: not valid JSON: {exc.msg}") from None
        missing = [f for f in REQUIRED_FIELDS if f not in record] if isinstance(record, dict) else list(REQUIRED_FIELDS)
        if missing:
            raise InputError(f"{file}: line {number}: missing field {missing[0]!r}")
        record["_line"] = number
        records.append(record)
    if not records:
        raise InputError(f"{file}: no gold records")
    return file, records


def _check_cell(file: Path, record: dict, what: str, finding: str, region: str | None, vocabulary: Vocabulary) -> None:
    if finding not in vocabulary.finding_names:
        raise InputError(
            f"{file}: line {record['_line']}: {what} finding {finding!r} is not in vocabulary {vocabulary.version}"
        )
    if region is not None and (region not in vocabulary.region_names or not vocabulary.allows(finding, region)):
        raise InputError(f"{file}: line {record['_line']}: {what} region {region!r} is not allowed for {finding!r}")


def import_synth_gold(
    store: Store, path: Path, name: str, vocabulary: Vocabulary, dataset: str | None = None
) -> RunResult:
    file, records = read_gold(Path(path))
    report_name, image_name = f"{name}-report", f"{name}-image"
    check_new_run_name(store, report_name)
    check_new_run_name(store, image_name)
    found = store.report_keys([str(r["study_id"]) for r in records], by="study_id", dataset=dataset)
    skipped = SkipLog()
    texts_needed: dict[int, dict] = {}
    matched: list[tuple[int, dict]] = []
    for record in records:
        hits = found.get(str(record["study_id"]), [])
        if not hits:
            skipped.add("study not ingested", str(record["study_id"]))
            continue
        if len(hits) > 1:
            skipped.add("study id in several datasets (pass --dataset)", str(record["study_id"]))
            continue
        key = hits[0][1]
        matched.append((key, record))
        texts_needed[key] = record
    if not matched:
        raise InputError(
            f"{file}: none of its {len(records):,} studies is in {store.path}; "
            f"ingest the cohort's files folder first (clala ingest DIR/files --format mimic)"
        )
    texts = store.report_texts(list(texts_needed))

    report_cells: dict[tuple[int, str | None, str], dict[str, Any]] = {}
    image_cells: dict[tuple[int, str | None, str], dict[str, Any]] = {}
    for key, record in matched:
        text = texts[key]
        for statement in record["report_truth"]:
            start, end = statement.get("evidence_start"), statement.get("evidence_end")
            evidence = statement.get("evidence_text")
            if evidence is not None and text[start:end] != evidence:
                skipped.add(
                    "evidence not at its offsets in the stored text (report changed?)", f"study {record['study_id']}"
                )
                start = end = evidence = None
            for region in statement["regions"] or [None]:  # no place said: an image-level label
                _check_cell(file, record, "report truth", statement["finding"], region, vocabulary)
                cell = (key, region, statement["finding"])
                row = {
                    "status": statement["status"],
                    "severity": statement.get("severity"),
                    "temporal": statement.get("temporal"),
                    "evidence_start": start,
                    "evidence_end": end,
                    "evidence_text": evidence,
                }
                kept = report_cells.get(cell)
                # present > uncertain > absent; among equals the first sentence keeps the evidence.
                if kept is None or STATUS_RANK[row["status"]] < STATUS_RANK[kept["status"]]:
                    report_cells[cell] = row
        for lesion in record["image_truth"]:
            for region in lesion["regions"]:
                _check_cell(file, record, "image truth", lesion["finding"], region, vocabulary)
                image_cells.setdefault(
                    (key, region, lesion["finding"]), {"status": "present", "severity": lesion.get("severity")}
                )

    keys = [key for key, _ in matched]
    report_labels = _columns(
        report_cells, ("status", "severity", "temporal", "evidence_start", "evidence_end", "evidence_text")
    )
    image_labels = _columns(image_cells, ("status", "severity"))
    params = {"gold_file": str(file), "studies": len(records)}
    with store.transaction():
        record_run(
            store,
            RunSpec(
                name=report_name,
                kind=RunKind.imported,
                vocabulary_version=vocabulary.version,
                source=str(file),
                params={**params, "truth": "report"},
            ),
            keys,
            report_labels,
        )
        record_run(
            store,
            RunSpec(
                name=image_name,
                kind=RunKind.imported,
                vocabulary_version=vocabulary.version,
                source=str(file),
                params={**params, "truth": "image"},
            ),
            keys,
            image_labels,
        )
    return RunResult(
        name=report_name,
        kind="synth-gold",
        source=str(file),
        reports=len(keys),
        labels=len(report_cells),
        statuses=status_counts(report_labels),
        skipped=skipped,
        details={"image truth run": f"{image_name}: {len(image_cells):,} present labels (cells not listed are absent)"},
    )


def _columns(cells: dict[tuple[int, str | None, str], dict[str, Any]], fields: tuple[str, ...]) -> dict[str, list]:
    columns: dict[str, list] = {"report_key": [], "region": [], "finding": []}
    columns.update({f: [] for f in fields})
    for (key, region, finding), row in sorted(
        cells.items(), key=lambda item: (item[0][0], item[0][1] or "", item[0][2])
    ):
        columns["report_key"].append(key)
        columns["region"].append(region)
        columns["finding"].append(finding)
        for f in fields:
            columns[f].append(row.get(f))
    return columns
