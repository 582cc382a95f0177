"""Label Studio round trip: export a run as pre-annotated tasks, accept or edit them the way a
reviewer does, import the Label Studio JSON export as a human run."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from labeling.store.run_records import record_run
from labeling.store.store import LABEL_COLUMNS, Store
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import load_vocabulary

REPORTS = {
    "r1": "FINDINGS: Small bilateral pleural effusions, worse. Mild cardiomegaly.\nIMPRESSION: Effusions.",
    "r2": "FINDINGS: Lungs are clear. No pneumothorax.",
    "r3": "FINDINGS: Right lower lobe opacity.",
}


def span(report: str, phrase: str) -> tuple[int, int, str]:
    start = REPORTS[report].index(phrase)
    return start, start + len(phrase), phrase


@pytest.fixture
def run_a(tmp_path: Path, db: Path, cli) -> dict[str, int]:
    source = tmp_path / "reports.csv"
    source.write_text("id,text\n" + "".join(f'{k},"{v}"\n' for k, v in REPORTS.items()), encoding="utf-8")
    assert cli("ingest", source, "--db", db)[0] == 0
    e = span("r1", "Small bilateral pleural effusions, worse")
    c = span("r1", "Mild cardiomegaly")
    p = span("r2", "No pneumothorax")
    with Store(db) as store:
        keys = {rid: hits[0][1] for rid, hits in store.report_keys(list(REPORTS)).items()}
        rows = [  # (report, region, finding, status, severity, temporal, evidence, confidence)
            ("r1", "right lung", "pleural effusion", "present", "mild", "worsened", e, 0.9),
            ("r1", "left lung", "pleural effusion", "present", "mild", "worsened", e, 0.8),
            ("r1", "cardiac silhouette", "enlarged cardiac silhouette", "present", "mild", None, c, None),
            ("r1", None, "pneumonia", "uncertain", None, None, None, 0.25),  # image level, no evidence
            ("r2", "right lung", "pneumothorax", "absent", None, None, p, None),
            ("r2", "left lung", "pneumothorax", "absent", None, None, p, None),
            ("r2", "spine", "scoliosis", "present", None, None, None, None),  # located, no evidence
        ]
        labels = {
            "report_key": [keys[r[0]] for r in rows],
            "region": [r[1] for r in rows],
            "finding": [r[2] for r in rows],
            "status": [r[3] for r in rows],
            "severity": [r[4] for r in rows],
            "temporal": [r[5] for r in rows],
            "evidence_start": [r[6][0] if r[6] else None for r in rows],
            "evidence_end": [r[6][1] if r[6] else None for r in rows],
            "evidence_text": [r[6][2] if r[6] else None for r in rows],
            "confidence": [r[7] for r in rows],
        }
        spec = RunSpec(name="A", kind=RunKind.imported, vocabulary_version=load_vocabulary().version)
        record_run(store, spec, [keys["r1"], keys["r2"], keys["r3"]], labels)  # r3: covered, no labels
    return keys


def export(cli, db: Path, out: Path) -> list[dict]:
    code, stdout, err = cli("export-labelstudio", "A", "--out", out, "--db", db)
    assert code == 0, err
    assert "3 tasks with 7 predicted labels (5 on evidence spans, 2 without evidence)" in stdout
    return json.loads((out / "tasks.json").read_text(encoding="utf-8"))


def accept_predictions(tasks: list[dict]) -> list[dict]:
    """What Label Studio's JSON export holds after a reviewer submits each task's prediction
    unchanged: task ids, and an annotation whose result is the prediction's result."""
    exported = []
    for number, task in enumerate(tasks, start=1):
        task = copy.deepcopy(task)
        task["id"] = number
        task["annotations"] = [
            {
                "id": 1000 + number,
                "completed_by": 1,
                "result": copy.deepcopy(task["predictions"][0]["result"]),
                "was_cancelled": False,
                "ground_truth": False,
                "created_at": "2025-01-02T10:00:00.000000Z",
                "updated_at": "2025-01-02T10:00:00.000000Z",
                "lead_time": 3.5,
                "task": number,
                "parent_prediction": number,
            }
        ]
        exported.append(task)
    return exported


def import_file(cli, db: Path, path: Path, tasks: list[dict], name: str = "reviewed"):
    path.write_text(json.dumps(tasks), encoding="utf-8")
    return cli("import", "labelstudio", path, "--name", name, "--db", db)


def label_rows(db: Path, run: str) -> list[tuple]:
    with Store(db, read_only=True) as store:
        table = store.labels(run).to_pylist()
    rows = [tuple(row[c] for c in LABEL_COLUMNS) for row in table]
    return sorted(rows, key=lambda r: tuple((x is None, 0 if x is None else x) for x in r))


def test_round_trip_without_edits_reproduces_the_run(tmp_path, db, cli, run_a):
    tasks = export(cli, db, tmp_path / "ls")
    code, out, err = import_file(cli, db, tmp_path / "export.json", accept_predictions(tasks))
    assert code == 0, err
    assert "3 reports, 7 labels" in out
    original, reviewed = label_rows(db, "A"), label_rows(db, "reviewed")
    assert len(original) == 7 and reviewed == original
    with Store(db, read_only=True) as store:
        assert store.covered_reports("reviewed").tolist() == store.covered_reports("A").tolist()
        run = store.run("reviewed")
    assert run.kind is RunKind.human and run.params["predictions_from"] == ["A"]


def test_task_format_is_label_studio_pre_annotation(tmp_path, db, cli, run_a):
    tasks = export(cli, db, tmp_path / "ls")
    first = next(t for t in tasks if t["data"]["report_key"] == run_a["r1"])
    assert first["data"]["text"].startswith(REPORTS["r1"])
    assert {k: first["data"][k] for k in ("dataset", "report_id", "version")} == {
        "dataset": "reports",
        "report_id": "r1",
        "version": 1,
    }
    prediction = first["predictions"][0]
    assert prediction["model_version"] == "A"
    assert prediction["score"] == pytest.approx((0.9 + 0.8 + 0.25) / 3, abs=1e-6)
    spans = [r for r in prediction["result"] if r["type"] == "labels"]
    effusion = [r for r in spans if r["value"]["labels"] == ["pleural effusion"]]
    start, end, text = span("r1", "Small bilateral pleural effusions, worse")
    assert [r["value"]["start"] for r in effusion] == [start, start] and effusion[0]["value"]["text"] == text
    pneumonia = next(r for r in spans if r["value"]["labels"] == ["pneumonia"])
    assert pneumonia["value"]["start"] > len(REPORTS["r1"])  # in the appendix: no evidence
    empty = next(t for t in tasks if t["data"]["report_key"] == run_a["r3"])
    assert empty["predictions"][0]["result"] == [] and empty["predictions"][0]["score"] is None


def test_labeling_config_is_well_formed_and_names_everything(tmp_path, db, cli, run_a):
    export(cli, db, tmp_path / "ls")
    root = ET.parse(tmp_path / "ls" / "labeling_config.xml").getroot()
    vocab = load_vocabulary()
    labels = {e.get("value") for e in root.iter("Label")}
    assert labels == set(vocab.finding_names)
    choices = {c.get("name"): [e.get("value") for e in c.iter("Choice")] for c in root.iter("Choices")}
    assert choices["region"] == list(vocab.region_names)
    assert choices["status"] == ["present", "absent", "uncertain"]
    assert all(c.get("perRegion") == "true" and c.get("toName") == "text" for c in root.iter("Choices"))
    assert [n.get("name") for n in root.iter("Number")] == ["confidence"]
    assert [t.get("name") for t in root.iter("Text")] == ["text"]


def test_edits_come_back_as_the_reviewer_left_them(tmp_path, db, cli, run_a):
    tasks = accept_predictions(export(cli, db, tmp_path / "ls"))
    r1 = next(t for t in tasks if t["data"]["report_key"] == run_a["r1"])
    result = r1["annotations"][0]["result"]
    cardio = next(
        r["id"] for r in result if r["type"] == "labels" and r["value"]["labels"] == ["enlarged cardiac silhouette"]
    )
    pneumonia = next(r["id"] for r in result if r["type"] == "labels" and r["value"]["labels"] == ["pneumonia"])
    for item in result:  # the reviewer rejects pneumonia: uncertain -> absent
        if item["id"] == pneumonia and item["from_name"] == "status":
            item["value"]["choices"] = ["absent"]
    result[:] = [r for r in result if r["id"] != cardio]  # deletes the cardiomegaly label
    start, end, text = span("r1", "Effusions")
    new = {"start": start, "end": end, "text": text}
    result += [  # and adds a span
        {
            "id": "new1",
            "from_name": "finding",
            "to_name": "text",
            "type": "labels",
            "value": {**new, "labels": ["pleural effusion"]},
            "origin": "manual",
        },
        {
            "id": "new1",
            "from_name": "status",
            "to_name": "text",
            "type": "choices",
            "value": {**new, "choices": ["present"]},
            "origin": "manual",
        },
    ]
    # An older cancelled (skipped) annotation is ignored; a task with no annotation is not covered.
    r1["annotations"].append(
        {
            "id": 5000,
            "result": [],
            "was_cancelled": True,
            "created_at": "2025-02-01T00:00:00Z",
            "updated_at": "2025-02-01T00:00:00Z",
        }
    )
    r3 = next(t for t in tasks if t["data"]["report_key"] == run_a["r3"])
    r3["annotations"] = []

    code, out, err = import_file(cli, db, tmp_path / "export.json", tasks)
    assert code == 0, err
    k1, k2 = run_a["r1"], run_a["r2"]
    e = span("r1", "Small bilateral pleural effusions, worse")
    p = span("r2", "No pneumothorax")

    def f32(x):
        return pytest.approx(x, abs=1e-7)

    expected = sorted(
        [
            (k1, None, "pleural effusion", "present", None, None, start, end, text, None),
            (k1, None, "pneumonia", "absent", None, None, None, None, None, 0.25),
            (k1, "left lung", "pleural effusion", "present", "mild", "worsened", *e, 0.8),
            (k1, "right lung", "pleural effusion", "present", "mild", "worsened", *e, 0.9),
            (k2, "left lung", "pneumothorax", "absent", None, None, *p, None),
            (k2, "right lung", "pneumothorax", "absent", None, None, *p, None),
            (k2, "spine", "scoliosis", "present", None, None, None, None, None, None),
        ],
        key=lambda r: (r[0], r[1] or "", r[2]),
    )
    got = sorted(label_rows(db, "reviewed"), key=lambda r: (r[0], r[1] or "", r[2]))
    assert [r[:9] for r in got] == [r[:9] for r in expected]
    assert [r[9] for r in got] == [None if x is None else f32(x) for x in (r[9] for r in expected)]
    with Store(db, read_only=True) as store:
        assert store.covered_reports("reviewed").tolist() == sorted([k1, k2])
    assert "task with no submitted annotation" in out


def test_unknown_report_names_the_task(tmp_path, db, cli, run_a):
    tasks = accept_predictions(export(cli, db, tmp_path / "ls"))
    tasks[1]["data"]["report_key"] = 999
    code, _, err = import_file(cli, db, tmp_path / "export.json", tasks)
    assert code == 1 and "task 2" in err and "report_key 999" in err
    with Store(db, read_only=True) as store:
        assert [r.name for r in store.runs()] == ["A"]


def test_span_that_does_not_quote_the_report_is_refused(tmp_path, db, cli, run_a):
    tasks = accept_predictions(export(cli, db, tmp_path / "ls"))
    r2 = next(t for t in tasks if t["data"]["report_key"] == run_a["r2"])
    for item in r2["annotations"][0]["result"]:
        if item["value"].get("text") == "No pneumothorax":
            item["value"]["text"] = "No pneumonia!!!"
    code, _, err = import_file(cli, db, tmp_path / "export.json", tasks)
    assert code == 1 and f"task {r2['id']}" in err and "quotes" in err


def test_missing_status_is_refused(tmp_path, db, cli, run_a):
    tasks = accept_predictions(export(cli, db, tmp_path / "ls"))
    result = tasks[0]["annotations"][0]["result"]
    result[:] = [r for r in result if r["from_name"] != "status"]
    code, _, err = import_file(cli, db, tmp_path / "export.json", tasks)
    assert code == 1 and "needs a status" in err


def test_not_json_names_the_file(tmp_path, db, cli, run_a):
    bad = tmp_path / "export.json"
    bad.write_text('[{"id": 1,', encoding="utf-8")
    code, _, err = cli("import", "labelstudio", bad, "--name", "reviewed", "--db", db)
    assert code == 1 and str(bad) in err and "not valid JSON" in err
