import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import holding_database, ingest_file

from labeling.core.errors import StoreError
from labeling.store.migrations import LATEST_VERSION
from labeling.store.store import Store, collapse_regions
from schemas.labels import ABSENT, PRESENT, UNCERTAIN, UNMENTIONED
from schemas.runs import RunKind, RunSpec, RunStatus

REGIONS = ["right lower lung zone", "left lower lung zone", "cardiac silhouette"]
FINDINGS = ["atelectasis", "pleural effusion", "enlarged cardiac silhouette"]


@pytest.fixture
def store(tmp_path):
    reports = tmp_path / "r.jsonl"
    reports.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": f"FINDINGS: Report number {i}."}) + "\n" for i in range(1, 5))
    )
    db = tmp_path / "s.duckdb"
    ingest_file(db, reports)
    with Store(db) as s:
        yield s


def keys(store):
    return [r[0] for r in store.con.execute("SELECT report_key FROM reports ORDER BY report_key").fetchall()]


def new_run(store, name="run-a"):
    return store.create_run(RunSpec(name=name, kind=RunKind.rules, vocabulary_version="test"))


def test_migrations_applied_once(tmp_path):
    db = tmp_path / "m.duckdb"
    with Store(db) as s:
        assert s.schema_version() == LATEST_VERSION
        tables = {r[0] for r in s.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {
        "reports",
        "sentences",
        "runs",
        "labels",
        "work",
        "failures",
        "llm_cache",
        "experiments",
        "schema_version",
        "ingests",
    } <= tables
    with Store(db) as s:  # reopening applies nothing twice
        assert s.con.execute("SELECT count(*) FROM schema_version").fetchall()[0][0] == LATEST_VERSION


def test_write_labels_merges_by_precedence(store):
    run = new_run(store)
    k1, k2 = keys(store)[:2]
    stored = store.write_labels(
        run,
        {
            "report_key": [k1, k1, k1, k2],
            "region": ["left lower lung zone", "left lower lung zone", None, "cardiac silhouette"],
            "finding": ["atelectasis", "atelectasis", "pleural effusion", "enlarged cardiac silhouette"],
            "status": ["absent", "uncertain", "absent", "present"],
            "evidence_text": ["no atelectasis", "possible atelectasis", "no effusion", "cardiomegaly"],
        },
    )
    assert stored == 3
    rows = store.con.execute(
        "SELECT region, finding, status, evidence_text FROM labels ORDER BY finding, region"
    ).fetchall()
    assert rows == [
        ("left lower lung zone", "atelectasis", "uncertain", "possible atelectasis"),
        ("cardiac silhouette", "enlarged cardiac silhouette", "present", "cardiomegaly"),
        (None, "pleural effusion", "absent", "no effusion"),
    ]


def test_bad_batches_are_rejected_whole(store):
    run = new_run(store)
    k1 = keys(store)[0]
    store.write_labels(
        run,
        {
            "report_key": [k1],
            "region": ["cardiac silhouette"],
            "finding": ["enlarged cardiac silhouette"],
            "status": ["present"],
        },
    )
    good = {"report_key": [k1], "region": ["right lower lung zone"], "finding": ["atelectasis"], "status": ["present"]}
    with pytest.raises(StoreError, match="already has a label"):
        store.write_labels(
            run,
            {
                k: v + [v[0] if k == "report_key" else x]
                for (k, v), x in zip(good.items(), ["", "cardiac silhouette", "enlarged cardiac silhouette", "absent"])
            },
        )
    with pytest.raises(StoreError, match="not in the database"):
        store.write_labels(run, {**good, "report_key": [999_999]})
    with pytest.raises(StoreError, match="status 'maybe'"):
        store.write_labels(run, {**good, "status": ["maybe"]})
    with pytest.raises(StoreError, match="lacks column"):
        store.write_labels(run, {"report_key": [k1], "status": ["present"]})
    # only the first, valid batch is stored
    assert store.con.execute("SELECT count(*) FROM labels").fetchall()[0][0] == 1


def test_transaction_rolls_back_on_error(store):
    run = new_run(store)
    k1 = keys(store)[0]
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.write_labels(
                run, {"report_key": [k1], "region": [None], "finding": ["pneumothorax"], "status": ["absent"]}
            )
            raise RuntimeError("crash between two writes")
    assert store.con.execute("SELECT count(*) FROM labels").fetchall()[0][0] == 0


def test_region_matrix_and_image_collapse(store):
    run = new_run(store)
    k1, k2, k3, k4 = keys(store)
    store.write_labels(
        run,
        pa.table(
            {
                "report_key": [k1, k1, k2, k2, k3],
                "region": ["right lower lung zone", "left lower lung zone", "left lower lung zone", None, None],
                "finding": ["atelectasis", "atelectasis", "pleural effusion", "pleural effusion", "atelectasis"],
                "status": ["absent", "present", "absent", "uncertain", "absent"],
            }
        ),
    )
    m = store.label_matrix(run, REGIONS, FINDINGS)
    assert list(m.report_keys) == [k1, k2, k3]
    assert m.codes.shape == (3, 3, 3)
    assert m.codes[0, 0, 0] == ABSENT and m.codes[0, 1, 0] == PRESENT
    assert m.codes[1, 1, 1] == ABSENT
    assert (m.codes[2] == UNMENTIONED).all()  # report 3 has only an image-level label
    assert (m.codes == UNMENTIONED).sum() == 27 - 3

    image = store.image_matrix(run, REGIONS, FINDINGS, report_keys=[k4, k3, k2, k1])
    assert list(image.report_keys) == [k4, k3, k2, k1]
    assert image.codes.tolist() == [
        [UNMENTIONED, UNMENTIONED, UNMENTIONED],  # k4: not labeled
        [ABSENT, UNMENTIONED, UNMENTIONED],  # k3: image-level absent
        [UNMENTIONED, UNCERTAIN, UNMENTIONED],  # k2: region absent + image uncertain -> uncertain
        [PRESENT, UNMENTIONED, UNMENTIONED],  # k1: absent + present -> present
    ]


def test_collapse_regions_precedence():
    codes = np.array(
        [[[ABSENT], [UNCERTAIN]], [[UNMENTIONED], [ABSENT]], [[UNCERTAIN], [PRESENT]], [[UNMENTIONED], [UNMENTIONED]]],
        dtype=np.int8,
    )
    assert collapse_regions(codes).ravel().tolist() == [UNCERTAIN, ABSENT, PRESENT, UNMENTIONED]


def test_runs_by_name_and_duplicates(store):
    run = new_run(store, "rules-v1")
    assert store.run("rules-v1").run_id == run
    assert store.run(run).status is RunStatus.running
    with store.transaction():
        store.set_run_status(run, RunStatus.complete)
        store.add_run_tokens(run, 10, 5)
    info = store.run("rules-v1")
    assert (info.status, info.prompt_tokens, info.completion_tokens) == (RunStatus.complete, 10, 5)
    with pytest.raises(StoreError, match="already exists"):
        new_run(store, "rules-v1")
    with pytest.raises(StoreError, match="no run named"):
        store.run("nope")


def test_locked_database_is_a_clear_error(tmp_path):
    db = tmp_path / "locked.duckdb"
    Store(db).close()
    with holding_database(db):
        with pytest.raises(StoreError, match=r"in use by another process \(PID \d+\)") as exc:
            Store(db)
        assert str(db) in str(exc.value)
        with pytest.raises(StoreError, match="in use"):
            Store(db, read_only=True)


def test_not_a_duckdb_file_is_left_untouched(tmp_path):
    path = tmp_path / "notes.duckdb"
    path.write_text("these are my notes\n" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a DuckDB database file"):
        Store(path)
    assert path.read_bytes() == before


def test_read_only_needs_an_existing_database(tmp_path):
    with pytest.raises(StoreError, match="no database here yet"):
        Store(tmp_path / "missing.duckdb", read_only=True)
    assert not (tmp_path / "missing.duckdb").exists()
