"""Label Studio round trip, the way out: a run's labels as pre-annotated tasks (the way back in,
a reviewed export as a run of kind `human`, is `labeling.sources.imports.labelstudio`).

One task per report the run covers. Each label is one text region (the same region id ties the
parts together, as Label Studio does for per-region controls):
- `finding`: a `<Labels>` span whose label is the finding name;
- `region`, `status`, `severity`, `temporal`: per-region `<Choices>`; status is a required radio
  group, the others single-choice checkboxes that can be unchecked (no region = an image-level
  label, no severity or change = none stated);
- `confidence`: a per-region `<Number>`.
A label with evidence is a span over that evidence in the report. A label without evidence is a
span over its line in an appendix that follows the report in the task text ("labels without
evidence"), so every cell stays visible and editable with the same controls; spans in the
appendix come back with no evidence. Offsets before the appendix are offsets in the stored
report text, so evidence survives the trip unchanged.

"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labeling.core.errors import InputError
from labeling.core.files import write_text_atomically
from labeling.store.store import Store
from schemas.labels import Severity, Status, Temporal
from schemas.vocabulary import load_vocabulary

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
# Region, severity and change are optional: single-choice checkboxes (`choice="single"`), which a
# reviewer can uncheck (radio buttons, `single-radio`, cannot be cleared once set, not even when
# the value came from the prediction).
CHOICE_HINTS = {
    REGION: " (uncheck for an image-level label)",
    SEVERITY: " (uncheck: none stated)",
    TEMPORAL: " (uncheck: none stated)",
}
APPENDIX_HEADER = (
    "\n\n--- Labels without evidence in the report (select a line to edit it; select this line to add one) ---"
)
TASKS_FILE = "tasks.json"
CONFIG_FILE = "labeling_config.xml"


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
        ET.SubElement(per_region, "Header", value=name + CHOICE_HINTS.get(name, ""))
        attributes = {"name": name, "toName": TEXT, "perRegion": "true", "choice": "single", "showInline": "true"}
        if name == STATUS:
            # Every label has a status: radio buttons, required.
            attributes.update(choice="single-radio", required="true")
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
    store: Store,
    run: str,
    out_dir: str | Path,
    *,
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
    info = store.run(run)
    labels = store.labels(info.run_id).to_pylist()
    keys = [int(k) for k in store.covered_reports(info.run_id)]
    if not keys:
        keys = sorted({label["report_key"] for label in labels})
    keys = keys[:limit] if limit else keys
    reports = store.report_rows(keys)
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
