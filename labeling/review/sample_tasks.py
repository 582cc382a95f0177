"""A sample's review files (`clala sample --out DIR`): Label Studio tasks for the sampled reports
and the sampled cells with their inclusion probabilities.

- `tasks.json`: one task per sampled report, made as `clala export-labelstudio` makes them
  (`labeling.review.labelstudio.build_task`: the run's labels on the report as the prediction),
  with `data.sample_id` and `data.check`, the sampled cells of that report ("finding | region",
  one per line) that the reviewer must get right; a reviewer corrects the whole report as usual.
- `labeling_config.xml`: the export's config with a header that shows `$check` and `$sample_id`.
- `sample_cells.csv`: sample_id, report_key, dataset, report_id, region, finding, predicted,
  stratum, inclusion_probability, one row per sampled cell.

Importing the reviewers' Label Studio JSON export (`clala import labelstudio`) gives the reviewed
run for `clala estimate`.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labeling.core.errors import InputError
from labeling.core.files import atomic_path, refuse_database, write_text_atomically
from labeling.review.labelstudio import CONFIG_FILE, TASKS_FILE, build_task, labeling_config
from labeling.review.sample import Sample
from labeling.store.store import Store
from schemas.vocabulary import Vocabulary

CELLS_FILE = "sample_cells.csv"
CELL_COLUMNS = (
    "sample_id",
    "report_key",
    "dataset",
    "report_id",
    "region",
    "finding",
    "predicted",
    "stratum",
    "inclusion_probability",
)


@dataclass
class SampleFiles:
    tasks_path: Path
    config_path: Path
    cells_path: Path
    tasks: int


def check_out_dir(out_dir: Path) -> None:
    """Refuse an --out that cannot take the files, before anything is drawn or stored."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: is a file; give a folder")
    if not out_dir.parent.is_dir():
        raise InputError(f"--out {out_dir}: folder {out_dir.parent} does not exist")
    for name in (TASKS_FILE, CONFIG_FILE, CELLS_FILE):
        refuse_database(out_dir / name)


def sample_config(findings: list[str], regions: list[str]) -> str:
    """The export's labeling config with the cells to check shown above the report."""
    view = ET.fromstring(labeling_config(findings, regions))
    header = ET.Element("Header", value="Sample $sample_id: check these cells (finding | region): $check")
    view.insert(2, header)  # after the style and the report header
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def write_sample_files(store: Store, sample: Sample, out_dir: Path, vocabulary: Vocabulary) -> SampleFiles:
    """Write tasks.json, labeling_config.xml and sample_cells.csv for a stored sample."""
    assert sample.sample_id is not None
    run = sample.population.run
    cells = sample.cells().to_pylist()
    keys = sorted({cell["report_key"] for cell in cells})
    reports = {r["report_key"]: r for r in store.report_rows(keys)}
    labels: dict[int, list[dict[str, Any]]] = {}
    for label in store.labels(run.run_id).to_pylist():
        if label["report_key"] in reports:
            labels.setdefault(label["report_key"], []).append(label)
    checks: dict[int, list[str]] = {}
    for cell in cells:
        checks.setdefault(cell["report_key"], []).append(f"{cell['finding']} | {cell['region']}")
    tasks = []
    for key in keys:
        task, _ = build_task(reports[key], labels.get(key, []), run.name)
        task["data"]["sample_id"] = sample.sample_id
        task["data"]["check"] = "\n".join(checks[key])
        tasks.append(task)
    used = {label["finding"] for rows in labels.values() for label in rows}
    findings = list(vocabulary.finding_names) + sorted(used - set(vocabulary.finding_names))

    out_dir.mkdir(exist_ok=True)
    tasks_path, config_path, cells_path = out_dir / TASKS_FILE, out_dir / CONFIG_FILE, out_dir / CELLS_FILE
    write_text_atomically(tasks_path, json.dumps(tasks, ensure_ascii=False, indent=1) + "\n")
    write_text_atomically(config_path, sample_config(findings, list(vocabulary.region_names)))
    with atomic_path(cells_path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, CELL_COLUMNS)
        writer.writeheader()
        for cell in cells:
            report = reports[cell["report_key"]]
            writer.writerow(
                {
                    **cell,
                    "sample_id": sample.sample_id,
                    "dataset": report["dataset"],
                    "report_id": report["report_id"],
                    "inclusion_probability": repr(float(cell["inclusion_probability"])),
                }
            )
    return SampleFiles(tasks_path, config_path, cells_path, len(tasks))
