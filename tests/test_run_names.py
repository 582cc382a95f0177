"""Issue 12, item 13: a run name can never be taken for a run id, nor an id for a name.

The rule: a run name may not be all digits (refused when the run is created), and a reference
of digits only is a run id, never a name. A database written before the rule that already holds
a run named "1" still lists and shows, and each of its runs stays reachable by its id."""

from __future__ import annotations

import json

import duckdb
import pytest

from labeling.core.errors import InputError


def test_digit_names_are_refused_by_the_one_name_check():
    from schemas.runs import run_name_problem

    for name in ("1", "007", "42"):
        problem = run_name_problem(name)
        assert problem and "digits only" in problem and "run id" in problem
    for name in ("run-1", "1a", "v2", "1.0", "rules"):
        assert run_name_problem(name) is None


def test_creating_a_run_named_with_digits_is_refused(tmp_path, cli):
    db = tmp_path / "c.duckdb"
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "x1", "text": "FINDINGS: Small left pleural effusion."}) + "\n")
    assert cli("ingest", path, "--db", db)[0] == 0
    code, _, err = cli(
        "label", "--db", db, "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
        "--structured-output", "json_schema", "--name", "1",
    )  # fmt: skip
    assert code == 1
    assert "run name '1'" in err and "digits only" in err and len(err.strip().splitlines()) == 1


def test_store_refuses_digit_names_for_every_source(tmp_path):
    from labeling.store.run_records import record_run
    from labeling.store.store import Store
    from schemas.runs import RunKind, RunSpec

    with Store(tmp_path / "s.duckdb") as store:
        with pytest.raises(InputError, match="digits only"):
            record_run(store, RunSpec(name="12", kind=RunKind.human, vocabulary_version="v"), [], {"status": []})
        assert store.runs() == []


def test_an_old_database_with_a_digit_name_lists_and_resolves_ids(tmp_path, cli):
    from fault_server import FaultServer

    db = tmp_path / "old.duckdb"
    path = tmp_path / "r.jsonl"
    path.write_text(
        json.dumps({"id": "x1", "text": "FINDINGS: Small left pleural effusion."})
        + "\n"
        + json.dumps({"id": "x2", "text": "FINDINGS: Right pneumothorax."})
        + "\n"
    )
    assert cli("ingest", path, "--db", db)[0] == 0
    with FaultServer() as server:
        for name, report in (("alpha", "x1"), ("beta", "x2")):
            code, _, err = cli(
                "label", "--db", db, "--backend", "openai", "--base-url", server.base_url, "--model", "fake-model",
                "--name", name, "--report", report,
            )  # fmt: skip
            assert code == 0, err
        # What a database made before the rule can hold: run 2 is named "1".
        with duckdb.connect(str(db)) as con:
            assert con.execute("SELECT run_id, name FROM runs ORDER BY run_id").fetchall() == [
                (1, "alpha"),
                (2, "beta"),
            ]
            con.execute("UPDATE runs SET name = '1' WHERE run_id = 2")

        code, out, err = cli("runs", "list", "--db", db)
        assert code == 0, err
        assert "alpha" in out and "fake-model" in out

        code, out, err = cli("runs", "show", "1", "--db", db)
        assert code == 0, err
        assert "Run alpha" in out
        code, out, err = cli("runs", "show", "2", "--db", db)
        assert code == 0, err
        assert "Run 1" in out and "Run alpha" not in out

        labels = tmp_path / "labels.jsonl"
        code, _, err = cli("export", "labels", "--run", "1", "--out", labels, "--db", db)
        assert code == 0, err
        exported = [json.loads(line) for line in labels.read_text().splitlines()]
        assert exported and {row["report_id"] for row in exported} == {"x1"}  # alpha's, not the run named "1"

        code, out, err = cli("label", "--resume", "1", "--db", db)
        assert "run alpha" in out and "run 1:" not in out, (out, err)

        code, _, err = cli("runs", "show", "9", "--db", db)
        assert code == 1 and "no run with id 9" in err


def test_store_run_reads_digits_as_an_id_only(tmp_path):
    from labeling.store.store import Store
    from schemas.runs import RunKind, RunSpec

    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        for name in ("first", "second", "third"):
            store.create_run(RunSpec(name=name, kind=RunKind.human, vocabulary_version="v"))
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE runs SET name = '1' WHERE run_id = 3")  # written before the rule
    with Store(db, read_only=True) as store:
        assert store.run("1").run_id == 1 and store.run(1).name == "first"
        assert store.run("3").name == "1"
        assert store.run("second").run_id == 2
        assert [(r.run_id, r.name) for r in store.runs()] == [(1, "first"), (2, "second"), (3, "1")]
        with pytest.raises(Exception, match="no run with id 7"):
            store.run("7")
        with pytest.raises(Exception, match="no run named 'fourth'"):
            store.run("fourth")
