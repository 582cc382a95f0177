"""Label Studio's own export files (items 20 and 21 of issue 12): its JSON export in the shape
Label Studio 1.23 writes (task `predictions` as ids, the prediction an annotation started from
under the annotation's `prediction`), and its JSON-MIN and CSV exports, which cannot carry a
review back and are refused with a line that says which export to choose."""

from __future__ import annotations

import copy
import json
from collections import defaultdict

import test_labelstudio
from test_labelstudio import export, import_file, label_rows

from labeling.store.store import Store

run_a = test_labelstudio.run_a  # the fixture: a run "A" with seven labels over three reports

PROJECT = 7


def label_studio_json_export(tasks: list[dict], *, from_scratch: frozenset[int] = frozenset()) -> list[dict]:
    """`tasks.json` after import into a Label Studio 1.23 project, each task submitted from its
    prediction unchanged (or, for the task numbers in `from_scratch`, labeled by hand with the
    same result), then exported as JSON: every field Label Studio writes, with realistic values."""
    exported = []
    for number, task in enumerate(tasks, start=1):
        prediction_id = 300 + number
        prediction = task["predictions"][0]
        stored_prediction = {
            "id": prediction_id,
            "result": copy.deepcopy(prediction["result"]),
            "model_version": prediction["model_version"],
            "created_ago": "2\xa0hours, 5\xa0minutes",
            "score": prediction["score"],
            "cluster": None,
            "neighbors": None,
            "mislabeling": 0.0,
            "created_at": "2025-03-04T08:15:02.118402Z",
            "updated_at": "2025-03-04T08:15:02.118419Z",
            "model": None,
            "model_run": None,
            "task": 40 + number,
            "project": PROJECT,
        }
        manual = number in from_scratch
        result = copy.deepcopy(prediction["result"])
        for item in result:
            item["origin"] = "manual" if manual else "prediction"
        annotation = {
            "id": 900 + number,
            "completed_by": 1,
            "result": result,
            "was_cancelled": False,
            "ground_truth": False,
            "created_at": "2025-03-04T10:02:41.512017Z",
            "updated_at": "2025-03-04T10:02:41.512043Z",
            "draft_created_at": "2025-03-04T10:02:30.004121Z",
            "lead_time": 41.377,
            "prediction": {} if manual else stored_prediction,
            "result_count": 0,
            "unique_id": f"4d3f0a52-9c1e-4e07-b1d5-0000000009{number:02d}",
            "import_id": None,
            "last_action": None,
            "bulk_created": False,
            "task": 40 + number,
            "project": PROJECT,
            "updated_by": 1,
            "parent_prediction": None if manual else prediction_id,
            "parent_annotation": None,
            "last_created_by": None,
        }
        exported.append(
            {
                "id": 40 + number,
                "annotations": [annotation],
                "file_upload": "c2a5e1f0-tasks.json",
                "drafts": [],
                "predictions": [prediction_id],  # ids only: this is what breaks the old reader
                "data": copy.deepcopy(task["data"]),
                "meta": {},
                "created_at": "2025-03-04T08:15:02.101134Z",
                "updated_at": "2025-03-04T10:02:41.580245Z",
                "inner_id": number,
                "total_annotations": 1,
                "cancelled_annotations": 0,
                "total_predictions": 1,
                "comment_count": 0,
                "unresolved_comment_count": 0,
                "last_comment_updated_at": None,
                "project": PROJECT,
                "updated_by": 1,
                "comment_authors": [],
            }
        )
    return exported


def test_real_json_export_names_the_reviewed_run(tmp_path, db, cli, run_a):
    tasks = export(cli, db, tmp_path / "ls")
    code, out, err = import_file(cli, db, tmp_path / "project-7-at-2025-03-04.json", label_studio_json_export(tasks))
    assert code == 0, err
    assert label_rows(db, "reviewed") == label_rows(db, "A")
    with Store(db, read_only=True) as store:
        params = store.run("reviewed").params
    assert params["predictions_from"] == ["A"]
    assert params["tasks_with_unnamed_predictions"] == 0
    assert "reviewed predictions of: A" in out


def test_task_annotated_from_scratch_is_counted_not_guessed(tmp_path, db, cli, run_a):
    tasks = export(cli, db, tmp_path / "ls")
    code, out, err = import_file(
        cli,
        db,
        tmp_path / "export.json",
        label_studio_json_export(tasks, from_scratch=frozenset({1, 2, 3})),
        name="by-hand",
    )
    assert code == 0, err
    with Store(db, read_only=True) as store:
        params = store.run("by-hand").params
    # The predictions are ids and no annotation started from one: no version can be named.
    assert params["predictions_from"] == [] and params["tasks_with_unnamed_predictions"] == 3
    assert "annotated tasks whose prediction is named by id only (annotated from scratch): 3" in out

    mixed = label_studio_json_export(tasks, from_scratch=frozenset({2}))
    code, out, err = import_file(cli, db, tmp_path / "mixed.json", mixed, name="mixed")
    assert code == 0, err
    with Store(db, read_only=True) as store:
        params = store.run("mixed").params
    assert params["predictions_from"] == ["A"] and params["tasks_with_unnamed_predictions"] == 1


def json_min_export(exported: list[dict]) -> list[dict]:
    """What Label Studio's JSON-MIN export makes of the same project (its converter: the task's
    data, then per control the values of the latest annotation, a single choice reduced to its
    value, then annotator, annotation id, times)."""
    records = []
    for task in exported:
        annotation = task["annotations"][0]
        outputs: dict[str, list] = defaultdict(list)
        for item in annotation["result"]:
            outputs[item["from_name"]].append(dict(item["value"]))
        record = {**task["data"], "id": task["id"]}
        for name, values in outputs.items():
            pretty = [v["choices"][0] if "choices" in v and len(v["choices"]) == 1 else v for v in values]
            record[name] = pretty[0] if name != "finding" and len(pretty) == 1 else pretty
        record.update(
            annotator=1,
            annotation_id=annotation["id"],
            created_at=annotation["created_at"],
            updated_at=annotation["updated_at"],
            lead_time=annotation["lead_time"],
        )
        records.append(record)
    return records


def test_json_min_export_says_choose_json(tmp_path, db, cli, run_a):
    tasks = export(cli, db, tmp_path / "ls")
    records = json_min_export(label_studio_json_export(tasks))
    # Three regions' choices, without the region ids that say which finding span each belongs to.
    assert sorted(records[0]["region"]) == ["cardiac silhouette", "left lung", "right lung"]
    path = tmp_path / "project-7-json-min.json"
    before = db.read_bytes()
    code, _, err = import_file(cli, db, path, records)
    assert code == 1
    assert err.strip().count("\n") == 0
    assert str(path) in err and "this is a Label Studio JSON-MIN export" in err
    assert "choosing JSON (not JSON-MIN, CSV or TSV)" in err
    assert "data.report_key is missing" not in err
    assert db.read_bytes() == before


def test_csv_and_tsv_exports_say_choose_json(tmp_path, db, cli, run_a):
    tasks = export(cli, db, tmp_path / "ls")
    records = json_min_export(label_studio_json_export(tasks))
    keys = list(records[0])
    for separator, kind in ((",", "CSV"), ("\t", "TSV")):
        path = tmp_path / f"project-7.{kind.lower()}"
        lines = [separator.join(keys)] + [
            separator.join(json.dumps(r.get(k)) if not isinstance(r.get(k), str) else r[k] for k in keys)
            for r in records
        ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        code, _, err = cli("import", "labelstudio", path, "--name", "reviewed", "--db", db)
        assert code == 1 and err.strip().count("\n") == 0
        assert f"{path}: this is a Label Studio {kind} export" in err and "choosing JSON" in err
    with Store(db, read_only=True) as store:
        assert [r.name for r in store.runs()] == ["A"]
