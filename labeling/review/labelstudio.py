"""Label Studio round trip: a run's labels out as pre-annotated tasks, a reviewed export back in
as a run of kind `human`.

One task per report the run covers. Each label is one text region (the same region id ties the
parts together, as Label Studio does for per-region controls):
- `finding`: a `<Labels>` span whose label is the finding name;
- `region`, `status`, `severity`, `temporal`: per-region `<Choices>` (no region choice = an
  image-level label);
- `confidence`: a per-region `<Number>`.
A label with evidence is a span over that evidence in the report. A label without evidence is a
span over its line in an appendix that follows the report in the task text ("labels without
evidence"), so every cell stays visible and editable with the same controls; spans in the
appendix come back with no evidence. Offsets before the appendix are offsets in the stored
report text, so evidence survives the trip unchanged.

Import reads Label Studio's JSON export: per task the latest annotation that was not cancelled
(tasks with none are not covered, and are counted). Report identity comes from `data.report_key`
and must agree with the database; a task for a report this database does not hold, malformed
JSON, or a label that does not fit the vocabulary is an InputError naming the file and task:
a review is imported whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labeling.core.errors import InputError
from labeling.core.files import write_text_atomically
from labeling.store.run_records import ImportResult, record_run, status_counts
from labeling.store.store import Store
from schemas.labels import STATUS_RANK, Severity, Status, Temporal
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import Vocabulary, load_vocabulary

TEXT = "text"
FINDING, REGION, STATUS, SEVERITY, TEMPORAL, CONFIDENCE = (
    "finding",
    "region",
    "status",
    "severity",
    "temporal",
    "confidence",
)
CHOICE_FIELDS = (REGION, STATUS, SEVERITY, TEMPORAL)
APPENDIX_HEADER = (
    "\n\n--- Labels without evidence in the report (select a line to edit it; select this line to add one) ---"
)
TASKS_FILE = "tasks.json"
CONFIG_FILE = "labeling_config.xml"
LABEL_COLUMNS = (
    "region",
    "finding",
    "status",
    "severity",
    "temporal",
    "evidence_start",
    "evidence_end",
    "evidence_text",
    "confidence",
)


@dataclass
class LabelStudioExport:
    tasks_path: Path
    config_path: Path
    tasks: int
    labels: int
    spans: int  # labels with evidence in the report
    appendix: int  # labels without evidence, listed in the appendix


# --- export ----------------------------------------------------------------------------------
def labeling_config(findings: list[str], regions: list[str]) -> str:
    """The Label Studio labeling config that matches `export_labelstudio`'s tasks."""
    view = ET.Element("View")
    # Label Studio trims spaces unless told not to, which would shift every offset.
    ET.SubElement(view, "Style").text = ".htx-text { white-space: pre-wrap; }"
    ET.SubElement(view, "Header", value="Report $report_id ($dataset, version $version)")
    labels = ET.SubElement(view, "Labels", name=FINDING, toName=TEXT, choice="single")
    for finding in findings:
        ET.SubElement(labels, "Label", value=finding)
    ET.SubElement(view, "Text", name=TEXT, value="$text", granularity="symbol")
    per_region = ET.SubElement(view, "View", visibleWhen="region-selected")
    options = {
        REGION: regions,
        STATUS: [s.value for s in Status],
        SEVERITY: [s.value for s in Severity],
        TEMPORAL: [t.value for t in Temporal],
    }
    for name in CHOICE_FIELDS:
        ET.SubElement(per_region, "Header", value=name + (" (none: image level)" if name == REGION else ""))
        attributes = {"name": name, "toName": TEXT, "perRegion": "true", "choice": "single-radio", "showInline": "true"}
        if name == STATUS:
            attributes["required"] = "true"
        choices = ET.SubElement(per_region, "Choices", attributes)
        for value in options[name]:
            ET.SubElement(choices, "Choice", value=value)
    ET.SubElement(per_region, "Header", value=CONFIDENCE)
    ET.SubElement(per_region, "Number", name=CONFIDENCE, toName=TEXT, perRegion="true", min="0", max="1", step="0.01")
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def _region_results(region_id: str, span: dict[str, Any], label: dict[str, Any]) -> list[dict[str, Any]]:
    def item(from_name: str, kind: str, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": region_id,
            "from_name": from_name,
            "to_name": TEXT,
            "type": kind,
            "origin": "prediction",
            "value": {**span, **value},
        }

    results = [item(FINDING, "labels", {"labels": [label["finding"]]})]
    for name in CHOICE_FIELDS:
        if label[name] is not None:
            results.append(item(name, "choices", {"choices": [label[name]]}))
    if label["confidence"] is not None:
        results.append(item(CONFIDENCE, "number", {"number": float(label["confidence"])}))
    return results


def build_task(report: dict[str, Any], labels: list[dict[str, Any]], model_version: str) -> tuple[dict, int]:
    """One Label Studio task (data + one prediction) for a report; returns it and its span count."""
    text = report["text"] + APPENDIX_HEADER
    results: list[dict[str, Any]] = []
    spans = 0
    for index, label in enumerate(labels):
        region_id = f"r{report['report_key']}-{index}"
        if label["evidence_start"] is not None:
            start, end = label["evidence_start"], label["evidence_end"]
            span_text = report["text"][start:end]
            spans += 1
        else:
            line = f"{label['finding']} | {label['region'] or 'image level'}"
            start = len(text) + 1
            text += "\n" + line
            end, span_text = start + len(line), line
        results.extend(_region_results(region_id, {"start": start, "end": end, "text": span_text}, label))
    confidences = [label["confidence"] for label in labels if label["confidence"] is not None]
    task = {
        "data": {
            "text": text,
            "report_key": report["report_key"],
            "dataset": report["dataset"],
            "report_id": report["report_id"],
            "version": report["version"],
        },
        "predictions": [
            {
                "model_version": model_version,
                "score": float(np.mean(confidences)) if confidences else None,
                "result": results,
            }
        ],
    }
    return task, spans


def export_labelstudio(
    db: str | Path,
    run: str,
    out_dir: str | Path,
    vocabulary: str | None = None,
    enable: list[str] | None = None,
    limit: int | None = None,
) -> LabelStudioExport:
    """Write `tasks.json` (pre-annotated tasks) and `labeling_config.xml` for a run into `out_dir`."""
    if limit is not None and limit < 1:
        raise InputError(f"--limit: must be at least 1, not {limit}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: is a file; give a folder")
    try:
        vocab = load_vocabulary(vocabulary, enable=enable or [])
    except (ValueError, FileNotFoundError) as exc:
        raise InputError(str(exc)) from None
    with Store(db, read_only=True) as store:
        info = store.run(run)
        labels = store.labels(info.run_id).to_pylist()
        keys = [int(k) for k in store.covered_reports(info.run_id)]
        if not keys:
            keys = sorted({label["report_key"] for label in labels})
        keys = keys[:limit] if limit else keys
        reports = store.arrow(
            """SELECT report_key, dataset, report_id, version, text FROM reports
               WHERE report_key IN (SELECT unnest(?)) ORDER BY report_key""",
            [keys],
        ).to_pylist()
    by_report: dict[int, list[dict[str, Any]]] = {}
    for label in labels:
        by_report.setdefault(label["report_key"], []).append(label)

    tasks, spans, exported = [], 0, 0
    for report in reports:
        report_labels = by_report.get(report["report_key"], [])
        task, task_spans = build_task(report, report_labels, info.name)
        tasks.append(task)
        spans += task_spans
        exported += len(report_labels)
    used = {label["finding"] for label in labels}
    findings = list(vocab.finding_names) + sorted(used - set(vocab.finding_names))

    out_dir.mkdir(parents=True, exist_ok=True)
    tasks_path, config_path = out_dir / TASKS_FILE, out_dir / CONFIG_FILE
    write_text_atomically(tasks_path, json.dumps(tasks, ensure_ascii=False, indent=1) + "\n")
    write_text_atomically(config_path, labeling_config(findings, list(vocab.region_names)))
    return LabelStudioExport(tasks_path, config_path, len(tasks), exported, spans, exported - spans)


# --- import ----------------------------------------------------------------------------------
def _latest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    kept = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    return max(kept, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), str(a.get("id", ""))))


def _single(value: dict[str, Any], key: str, where: str) -> Any:
    values = value.get(key)
    if not isinstance(values, list) or len(values) != 1:
        raise InputError(f"{where}: expected one {key[:-1] if key.endswith('s') else key}, got {values!r}")
    return values[0]


def _task_labels(
    task: dict[str, Any], annotation: dict[str, Any], report_text: str, vocab: Vocabulary, where: str
) -> list[dict[str, Any]]:
    """The labels one annotation gives, one per Label Studio region, validated."""
    regions: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for item in annotation.get("result") or []:
        if not isinstance(item, dict) or "value" not in item:
            raise InputError(f"{where}: result item {item!r} has no value")
        if item.get("type") == "relation":
            continue  # relations between spans carry no label field
        region_id, name, value = str(item.get("id")), item.get("from_name"), item["value"]
        if name not in (FINDING, CONFIDENCE, *CHOICE_FIELDS):
            raise InputError(f"{where}: result from unknown control {name!r} (not made with this labeling config)")
        if region_id not in regions:
            regions[region_id] = {"span": None}
            order.append(region_id)
        entry = regions[region_id]
        if "start" in value and "end" in value:
            entry["span"] = (value["start"], value["end"], value.get("text"))
        if name == FINDING:
            entry[FINDING] = _single(value, "labels", f"{where}, region {region_id}")
        elif name == CONFIDENCE:
            entry[CONFIDENCE] = value.get("number")
        else:
            entry[name] = _single(value, "choices", f"{where}, region {region_id}")

    labels = []
    for region_id in order:
        entry, here = regions[region_id], f"{where}, region {region_id}"
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
            evidence = (start, end, report_text[start:end])
        elif start >= len(report_text):
            evidence = (None, None, None)  # a span in the appendix: a label without evidence
        else:
            raise InputError(f"{here}: span {start}-{end} runs from the report into the appendix")
        finding, region, status = entry[FINDING], entry.get(REGION), entry.get(STATUS)
        if finding not in vocab.finding_names:
            raise InputError(
                f"{here}: finding {finding!r} is not in vocabulary {vocab.version} "
                "(--enable its category, or --vocabulary)"
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
        labels.append(
            {
                "region": region,
                "finding": finding,
                "status": status,
                "severity": severity,
                "temporal": temporal,
                "evidence_start": evidence[0],
                "evidence_end": evidence[1],
                "evidence_text": evidence[2],
                "confidence": confidence,
            }
        )
    return labels


def import_labelstudio(
    store: Store, path: Path, name: str, vocabulary: Vocabulary, dataset: str | None = None
) -> ImportResult:
    """A Label Studio JSON export of reviewed tasks as a run of kind human."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; pass the JSON file Label Studio exported")
    raw = path.read_bytes()
    try:
        tasks = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise InputError(f"{path}: not valid JSON ({where}); export the project as JSON from Label Studio") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise InputError(f"{path}: expected a JSON list of tasks (Label Studio's JSON export)")

    keys = [t.get("data", {}).get("report_key") for t in tasks if isinstance(t.get("data"), dict)]
    reports = {
        r["report_key"]: r
        for r in store.arrow(
            """SELECT report_key, dataset, report_id, version, text FROM reports
           WHERE report_key IN (SELECT unnest(?))""",
            [[k for k in keys if isinstance(k, int)]],
        ).to_pylist()
    }

    result = ImportResult(run=name, kind=RunKind.human.value, source=str(path.resolve()))
    rows: dict[tuple[int, str | None, str], dict[str, Any]] = {}
    covered: list[int] = []
    merged = 0
    model_versions: set[str] = set()
    for number, task in enumerate(tasks, start=1):
        task_id = task.get("id", f"#{number}")
        where = f"{path}: task {task_id}"
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
        if dataset and report["dataset"] != dataset:
            result.skipped.add(f"task of another dataset than {dataset!r}", f"task {task_id}")
            continue
        annotation = _latest_annotation(task)
        if annotation is None:
            result.skipped.add("task with no submitted annotation: report not covered", f"task {task_id}")
            continue
        model_versions.update(
            str(p.get("model_version"))
            for p in task.get("predictions") or []
            if isinstance(p, dict) and p.get("model_version") is not None
        )
        covered.append(report["report_key"])
        for label in _task_labels(
            task, annotation, report["text"], vocabulary, f"{where}, annotation {annotation.get('id')}"
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
    table = {column: [r[column] for r in rows.values()] for column in ("report_key", *LABEL_COLUMNS)}
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
        },
    )
    record_run(store, spec, covered, table)
    result.reports = len(covered)
    result.labels = len(rows)
    result.statuses = status_counts(table) if rows else {}
    result.details = {
        "tasks": f"{len(tasks):,} read, {len(covered):,} annotated",
        "labels with evidence": sum(r["evidence_start"] is not None for r in rows.values()),
    }
    if merged:
        result.details["labels merged into an existing cell (present > uncertain > absent)"] = merged
    return result
