"""`clala import labelstudio FILE --name NAME`: a Label Studio JSON export of reviewed tasks (made
from `clala export-labelstudio`) as a run of kind `human`.

Per task the latest annotation that was not cancelled is read (tasks with none are not covered,
and are counted). Report identity comes from `data.report_key` and must agree with the database;
a task for a report this database does not hold, malformed JSON, or a label that does not fit the
vocabulary is an InputError naming the file and task: a review is imported whole or not at all.
A region, severity or change the reviewer cleared (its result left out, or with no choice) is
none: an image-level label, no severity, no change. The run names the runs whose predictions
were reviewed (`predictions_from`), read from Label Studio's JSON export as it is (task
`predictions` as ids, each annotation's own `prediction`). Label Studio's JSON-MIN, CSV and TSV
exports lose the region ids that hold a label together, and are refused naming the export to choose.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from labeling.core.errors import InputError
from labeling.review.labelstudio import (
    CHOICE_FIELDS,
    CONFIDENCE,
    FINDING,
    REGION,
    SEVERITY,
    STATUS,
    TEMPORAL,
)
from labeling.store.run_records import RunResult, record_run, status_counts
from labeling.store.store import LABEL_COLUMNS, Store
from schemas.labels import STATUS_RANK, Severity, Temporal
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import Vocabulary


def _latest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    kept = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    return max(kept, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), str(a.get("id", ""))))


def _single(value: dict[str, Any], key: str, where: str, *, optional: bool = False) -> Any:
    """The one value of a result's list (`labels`, `choices`); None for an empty list when the
    control may be cleared (a reviewer unchecked it)."""
    values = value.get(key)
    if optional and values == []:
        return None
    if not isinstance(values, list) or len(values) != 1:
        raise InputError(f"{where}: expected one {key[:-1] if key.endswith('s') else key}, got {values!r}")
    return values[0]


def _annotation_regions(annotation: dict[str, Any], where: str) -> list[tuple[str, dict[str, Any]]]:
    """(region id, {span, finding, choices, confidence}) of each Label Studio region of an
    annotation, in the order they first appear."""
    regions: dict[str, dict[str, Any]] = {}
    for item in annotation.get("result") or []:
        if not isinstance(item, dict) or "value" not in item:
            raise InputError(f"{where}: result item {item!r} has no value")
        if item.get("type") == "relation":
            continue  # relations between spans carry no label field
        region_id, name, value = str(item.get("id")), item.get("from_name"), item["value"]
        if name not in (FINDING, CONFIDENCE, *CHOICE_FIELDS):
            raise InputError(f"{where}: result from unknown control {name!r} (not made with this labeling config)")
        entry = regions.setdefault(region_id, {"span": None})
        if "start" in value and "end" in value:
            entry["span"] = (value["start"], value["end"], value.get("text"))
        if name == FINDING:
            entry[FINDING] = _single(value, "labels", f"{where}, region {region_id}")
        elif name == CONFIDENCE:
            entry[CONFIDENCE] = value.get("number")
        else:
            entry[name] = _single(value, "choices", f"{where}, region {region_id}", optional=True)
    return list(regions.items())


def _evidence(entry: dict[str, Any], report_text: str, here: str) -> tuple[int | None, int | None, str | None]:
    """A region's span as evidence in the report, or no evidence for a span in the appendix."""
    if FINDING not in entry or entry["span"] is None:
        raise InputError(f"{here}: per-region choices without a finding span")
    start, end, text = entry["span"]
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end):
        raise InputError(f"{here}: span {start!r}-{end!r} is not a text range")
    if end <= len(report_text):
        if text is not None and report_text[start:end] != text:
            raise InputError(
                f"{here}: span {start}-{end} quotes {text!r} but the report has {report_text[start:end]!r} there"
            )
        return start, end, report_text[start:end]
    if start >= len(report_text):
        return None, None, None  # a span in the appendix: a label without evidence
    raise InputError(f"{here}: span {start}-{end} runs from the report into the appendix")


def _check_label(entry: dict[str, Any], vocab: Vocabulary, here: str) -> None:
    finding, region, status = entry[FINDING], entry.get(REGION), entry.get(STATUS)
    if finding not in vocab.finding_names:
        raise InputError(
            f"{here}: finding {finding!r} is not in vocabulary {vocab.version} (--enable its category, or --vocabulary)"
        )
    if region is not None and region not in vocab.region_names:
        raise InputError(f"{here}: unknown region {region!r}")
    if not vocab.allows(finding, region):
        raise InputError(f"{here}: {finding!r} cannot be located in {region!r}")
    if status not in STATUS_RANK:
        raise InputError(f"{here}: label {finding!r} needs a status (present, absent, uncertain), got {status!r}")
    severity, temporal = entry.get(SEVERITY), entry.get(TEMPORAL)
    if severity is not None and severity not in {s.value for s in Severity}:
        raise InputError(f"{here}: unknown severity {severity!r}")
    if temporal is not None and temporal not in {t.value for t in Temporal}:
        raise InputError(f"{here}: unknown temporal change {temporal!r}")
    confidence = entry.get(CONFIDENCE)
    if confidence is not None and not (isinstance(confidence, (int, float)) and 0 <= confidence <= 1):
        raise InputError(f"{here}: confidence {confidence!r} is not a number from 0 to 1")


def _task_labels(annotation: dict[str, Any], report_text: str, vocab: Vocabulary, where: str) -> list[dict[str, Any]]:
    """The labels one annotation gives, one per Label Studio region, validated."""
    labels = []
    for region_id, entry in _annotation_regions(annotation, where):
        here = f"{where}, region {region_id}"
        evidence = _evidence(entry, report_text, here)
        _check_label(entry, vocab, here)
        labels.append(
            {
                "region": entry.get(REGION),
                "finding": entry[FINDING],
                "status": entry.get(STATUS),
                "severity": entry.get(SEVERITY),
                "temporal": entry.get(TEMPORAL),
                "evidence_start": evidence[0],
                "evidence_end": evidence[1],
                "evidence_text": evidence[2],
                "confidence": entry.get(CONFIDENCE),
            }
        )
    return labels


# Label Studio's other exports of the same project, told apart from its JSON export by their
# shape, so that the error says which export to choose instead of naming a missing key.
CHOOSE_JSON = "export the project again choosing JSON (not JSON-MIN, CSV or TSV) in Label Studio's Export dialog"
MIN_RECORD_KEYS = {"annotation_id", "annotator", "report_key", FINDING, STATUS}


def _tabular_export(raw: bytes) -> str | None:
    """`CSV` or `TSV` when the first line is the header of Label Studio's CSV or TSV export
    (the task's data fields, the control names, `annotation_id`, ...), else None."""
    first = raw[:65536].split(b"\n", 1)[0].decode("utf-8", "replace").strip().lstrip("\ufeff")
    for separator, kind in (("\t", "TSV"), (",", "CSV")):
        fields = {f.strip().strip('"') for f in first.split(separator)}
        if "annotation_id" in fields and fields & {"report_key", FINDING, "text"}:
            return kind
    return None


def _is_min_record(task: dict[str, Any]) -> bool:
    """A JSON-MIN record: the task's data fields and the results keyed by control name, flat."""
    return "data" not in task and "annotations" not in task and bool(MIN_RECORD_KEYS & task.keys())


def _read_tasks(path: Path) -> tuple[bytes, list[dict[str, Any]]]:
    """The file's bytes and its tasks, or InputError."""
    if path.is_dir():
        raise InputError(f"{path}: is a folder; pass the JSON file Label Studio exported")
    raw = path.read_bytes()
    try:
        tasks = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        tabular = _tabular_export(raw)
        if tabular:
            raise InputError(
                f"{path}: this is a Label Studio {tabular} export, which keeps no region ids or spans; {CHOOSE_JSON}"
            ) from None
        where = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise InputError(f"{path}: not valid JSON ({where}); export the project as JSON from Label Studio") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise InputError(f"{path}: expected a JSON list of tasks (Label Studio's JSON export)")
    if any(_is_min_record(t) for t in tasks):
        # JSON-MIN drops the result ids that tie a finding span to its region, status, severity
        # and change, and a single choice loses its span: the labels cannot be put back together.
        raise InputError(
            f"{path}: this is a Label Studio JSON-MIN export (flat records without the region ids that "
            f"tie each finding to its region and status); {CHOOSE_JSON}"
        )
    return raw, tasks


def _model_versions(task: dict[str, Any]) -> tuple[set[str], bool]:
    """The model versions of the predictions a task was reviewed from, and whether the task has
    predictions whose version the file does not say. Label Studio's own JSON export lists
    `predictions` as ids and puts the prediction an annotation started from under the
    annotation's `prediction`; tasks as `clala export-labelstudio` wrote them (or older exports)
    hold whole prediction objects."""
    versions: set[str] = set()
    predictions = task.get("predictions") or []
    for prediction in predictions:
        if isinstance(prediction, dict) and prediction.get("model_version") is not None:
            versions.add(str(prediction["model_version"]))
    for annotation in task.get("annotations") or []:
        prediction = annotation.get("prediction") if isinstance(annotation, dict) else None
        if isinstance(prediction, dict) and prediction.get("model_version") is not None:
            versions.add(str(prediction["model_version"]))
    only_ids = any(not isinstance(p, dict) for p in predictions)
    return versions, only_ids and not versions


def _task_report(task: dict[str, Any], reports: dict[int, dict[str, Any]], where: str, store: Store) -> dict[str, Any]:
    """The stored report a task is about, checked against the task's data."""
    data = task.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("report_key"), int):
        raise InputError(f"{where}: data.report_key is missing (not a task `clala export-labelstudio` wrote)")
    report = reports.get(data["report_key"])
    if report is None:
        raise InputError(
            f"{where}: report_key {data['report_key']} is not in {store.path} "
            "(import into the database the tasks were exported from)"
        )
    for column in ("dataset", "report_id", "version"):
        if column in data and data[column] != report[column]:
            raise InputError(
                f"{where}: data.{column} {data[column]!r} does not match report_key "
                f"{report['report_key']} ({report[column]!r}) in {store.path}"
            )
    return report


def import_labelstudio(
    store: Store, path: Path, name: str, vocabulary: Vocabulary, dataset: str | None = None
) -> RunResult:
    """A Label Studio JSON export of reviewed tasks as a run of kind human."""
    path = Path(path)
    raw, tasks = _read_tasks(path)
    keys = [t.get("data", {}).get("report_key") for t in tasks if isinstance(t.get("data"), dict)]
    reports = {r["report_key"]: r for r in store.report_rows([k for k in keys if isinstance(k, int)])}

    result = RunResult(name=name, kind=RunKind.human.value, source=str(path.resolve()))
    rows: dict[tuple[int, str | None, str], dict[str, Any]] = {}
    covered: list[int] = []
    merged = version_unknown = 0
    model_versions: set[str] = set()
    for number, task in enumerate(tasks, start=1):
        task_id = task.get("id", f"#{number}")
        where = f"{path}: task {task_id}"
        report = _task_report(task, reports, where, store)
        if dataset and report["dataset"] != dataset:
            result.skipped.add(f"task of another dataset than {dataset!r}", f"task {task_id}")
            continue
        annotation = _latest_annotation(task)
        if annotation is None:
            result.skipped.add("task with no submitted annotation: report not covered", f"task {task_id}")
            continue
        versions, unknown = _model_versions(task)
        model_versions.update(versions)
        version_unknown += unknown
        covered.append(report["report_key"])
        for label in _task_labels(
            annotation, report["text"], vocabulary, f"{where}, annotation {annotation.get('id')}"
        ):
            cell = (report["report_key"], label["region"], label["finding"])
            kept = rows.get(cell)
            if kept is not None:
                merged += 1
                if STATUS_RANK[label["status"]] >= STATUS_RANK[kept["status"]]:
                    continue
            rows[cell] = {"report_key": report["report_key"], **label}

    if len(set(covered)) != len(covered):
        raise InputError(f"{path}: more than one task for the same report; export one task per report")
    table = {column: [r[column] for r in rows.values()] for column in LABEL_COLUMNS}
    spec = RunSpec(
        name=name,
        kind=RunKind.human,
        vocabulary_version=vocabulary.version,
        source=result.source,
        params={
            "format": "label-studio-json",
            "file_sha256": hashlib.sha256(raw).hexdigest(),
            "tasks": len(tasks),
            "annotated": len(covered),
            "predictions_from": sorted(model_versions),
            "tasks_with_unnamed_predictions": version_unknown,
        },
    )
    record_run(store, spec, covered, table)
    result.reports = len(covered)
    result.labels = len(rows)
    result.statuses = status_counts(table) if rows else Counter()
    result.details = {
        "tasks": f"{len(tasks):,} read, {len(covered):,} annotated",
        "labels with evidence": sum(r["evidence_start"] is not None for r in rows.values()),
    }
    if model_versions:
        result.details["reviewed predictions of"] = ", ".join(sorted(model_versions))
    if version_unknown:
        result.details["annotated tasks whose prediction is named by id only (annotated from scratch)"] = (
            version_unknown
        )
    if merged:
        result.details["labels merged into an existing cell (present > uncertain > absent)"] = merged
    return result
