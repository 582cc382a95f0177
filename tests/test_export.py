import json

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import ingest_file

from labeling.core.errors import InputError
from labeling.store.export import export_labels, export_reports
from labeling.store.store import Store
from schemas.runs import RunKind, RunSpec


@pytest.fixture
def labeled_db(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(
        json.dumps({"id": "a", "text": "FINDINGS: Small left pleural effusion."})
        + "\n"
        + json.dumps({"id": "b", "text": "Clear lungs."})
        + "\n"
    )
    db = tmp_path / "e.duckdb"
    ingest_file(db, path, dataset="demo")
    with Store(db) as s:
        run = s.create_run(RunSpec(name="manual", kind=RunKind.human, vocabulary_version="v"))
        key = s.con.execute("SELECT report_key FROM reports WHERE report_id = 'a'").fetchall()[0][0]
        s.write_labels(
            run,
            {
                "report_key": [key, key],
                "region": ["left costophrenic angle", None],
                "finding": ["pleural effusion", "pneumothorax"],
                "status": ["present", "absent"],
                "evidence_start": [10, None],
                "evidence_end": [38, None],
                "evidence_text": ["Small left pleural effusion.", None],
                "confidence": [0.75, None],
            },
        )
    return db


@pytest.mark.parametrize("suffix", ["parquet", "csv", "jsonl"])
def test_export_labels_formats(labeled_db, tmp_path, suffix):
    out = tmp_path / f"labels.{suffix}"
    with Store(labeled_db, read_only=True) as store:
        assert export_labels(store, "manual", out) == 2
    if suffix == "parquet":
        rows = pq.read_table(out).to_pylist()
    elif suffix == "csv":
        rows = pacsv.read_csv(out).to_pylist()  # pyright: ignore[reportPrivateImportUsage]  # public API; the stubs miss it
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    effusion = next(r for r in rows if r["finding"] == "pleural effusion")
    assert (effusion["report_id"], effusion["dataset"], effusion["region"], effusion["status"]) == (
        "a",
        "demo",
        "left costophrenic angle",
        "present",
    )
    assert effusion["evidence_text"] == "Small left pleural effusion."
    assert effusion["confidence"] == pytest.approx(0.75)
    assert not list(tmp_path.glob(".labels*"))  # no temporary file left behind


def test_export_reports_of_a_run_and_all(labeled_db, tmp_path):
    with Store(labeled_db, read_only=True) as store:
        assert export_reports(store, tmp_path / "all.jsonl") == 2
        assert export_reports(store, tmp_path / "run.parquet", run="manual") == 1
        [row] = pq.read_table(tmp_path / "run.parquet").to_pylist()
        assert row["report_id"] == "a" and row["text"].startswith("FINDINGS:")
        export_reports(store, tmp_path / "all.csv")
    assert pacsv.read_csv(tmp_path / "all.csv").num_rows == 2  # pyright: ignore[reportPrivateImportUsage]  # public API; the stubs miss it


def test_export_errors(labeled_db, tmp_path):
    with Store(labeled_db, read_only=True) as store:
        with pytest.raises(InputError, match="cannot tell the format"):
            export_labels(store, "manual", tmp_path / "labels.xlsx")
        with pytest.raises(InputError, match="does not exist"):
            export_labels(store, "manual", tmp_path / "no" / "labels.csv")
