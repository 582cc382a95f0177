"""Issue 12, files: a DuckDB file of another program is refused and left byte-identical; no output
replaces the database; CSV quotes and NUL bytes are errors naming the line; --max-chars above
spaCy's own limit works and an ingest is stored whole or not at all; only `clala ingest` creates
a database. Real DuckDB files, real files on disk, the real CLI (in-process and as a subprocess)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pytest
from conftest import clala_subprocess

from labeling.core.files import file_sha256

REPORTS = [
    {"id": "r1", "text": "FINDINGS: Small right pleural effusion. IMPRESSION: Effusion."},
    {"id": "r2", "text": "Lungs are clear."},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def ingested(tmp_path, cli) -> Path:
    db = tmp_path / "c.duckdb"
    code, _, err = cli("ingest", write_jsonl(tmp_path / "r.jsonl", REPORTS), "--db", db, "--dataset", "demo")
    assert code == 0, err
    return db


@pytest.fixture
def labeled(ingested) -> Path:
    """The ingested database with two rules runs, a and b."""
    from labeling.sources.rules.run import RulesRequest, label_with_rules
    from labeling.store.store import Store

    with Store(ingested) as store:
        label_with_rules(store, RulesRequest(name="a"))
        label_with_rules(store, RulesRequest(name="b"))
    return ingested


# --- 11: another program's DuckDB file -----------------------------------------------------------------
@pytest.fixture
def foreign(tmp_path) -> Path:
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE reports (id INTEGER, note VARCHAR)")
    con.execute("INSERT INTO reports VALUES (1, 'theirs')")
    con.execute("CREATE TABLE patients (id INTEGER)")
    con.close()
    return path


def test_foreign_duckdb_file_is_refused_and_unchanged(tmp_path, foreign):
    before = file_sha256(foreign)
    jsonl = write_jsonl(tmp_path / "r.jsonl", REPORTS)
    for args in (["stats"], ["ingest", jsonl], ["reports", "list"], ["runs", "list"], ["label", "--backend", "rules"]):
        done = clala_subprocess(*args, "--db", foreign)
        assert done.returncode == 1, (args, done.stderr)
        line = one_line(done.stderr)
        assert f"{foreign}: a DuckDB database that is not clala's (tables patients, reports" in line
        assert "Traceback" not in done.stderr
        assert file_sha256(foreign) == before, args
    assert not Path(f"{foreign}.wal").exists()
    con = duckdb.connect(str(foreign), read_only=True)
    assert sorted(r[0] for r in con.execute("SHOW TABLES").fetchall()) == ["patients", "reports"]
    con.close()


def test_foreign_schema_version_table_is_not_enough(tmp_path, cli):
    path = tmp_path / "migrations.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER, description VARCHAR)")
    con.execute("INSERT INTO schema_version VALUES (1, 'their first migration')")
    con.close()
    before = file_sha256(path)
    code, _, err = cli("ingest", write_jsonl(tmp_path / "r.jsonl", REPORTS), "--db", path)
    assert code == 1 and "a DuckDB database that is not clala's" in one_line(err)
    assert file_sha256(path) == before


def test_read_only_commands_never_initialize_an_empty_duckdb_file(tmp_path, cli):
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    before = file_sha256(empty)
    for args in (["stats"], ["reports", "list"], ["runs", "list"]):
        code, _, err = cli(*args, "--db", empty)
        assert code == 1 and "an empty DuckDB file, no clala database yet" in one_line(err), args
        assert file_sha256(empty) == before
    # ingest (the one command that creates a database) may fill an empty DuckDB file
    code, _, err = cli("ingest", write_jsonl(tmp_path / "r.jsonl", REPORTS), "--db", empty)
    assert code == 0, err


def test_an_older_clala_database_is_still_migrated_by_a_read(tmp_path, cli):
    # A clala database at schema 1: a read migrates it (clala's own file, one transaction).
    from labeling.store.migrations import LATEST_VERSION, MIGRATIONS

    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP)")
    for statement in MIGRATIONS[0][2]:
        con.execute(statement)
    con.execute("INSERT INTO schema_version VALUES (1, ?, now())", [MIGRATIONS[0][1]])
    con.close()
    code, out, err = cli("stats", "--db", old)
    assert code == 0, err
    con = duckdb.connect(str(old), read_only=True)
    assert con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] == LATEST_VERSION
    con.close()


# --- 12: an output path that is the database -------------------------------------------------------------
def test_output_that_is_the_database_is_refused(tmp_path, labeled, cli):
    ingested = labeled
    before = file_sha256(ingested)
    link = tmp_path / "link.parquet"
    link.symlink_to(ingested.name)
    hard = tmp_path / "hard.csv"
    os.link(ingested, hard)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        spellings = [Path("c.duckdb"), Path("./c.duckdb"), ingested.resolve(), link, hard, Path("c.duckdb.wal")]
        for out in spellings:
            for args in (
                ["export", "reports", "--format", "parquet"],
                ["export", "reports", "--format", "csv"],
                ["export", "labels", "--run", "a", "--format", "csv"],
                ["schema", "export"],
            ):
                db = [] if args[0] == "schema" else ["--db", "c.duckdb"]
                code, _, err = cli(*args, "--out", out, *db)
                assert code == 1, (args, out)
                line = one_line(err)
                assert f"{out}: is " in line and "an output never replaces a database" in line, line
                assert file_sha256(ingested) == before, (args, out)
    finally:
        os.chdir(cwd)
    assert link.is_symlink() and hard.exists()
    assert not Path(f"{ingested}.wal").exists()


def test_folder_outputs_that_are_the_database_are_refused(tmp_path, labeled, cli):
    ingested = labeled
    before = file_sha256(ingested)
    for args in (
        ["compare", "a", "b", "--out", ingested],
        ["export-labelstudio", "a", "--out", ingested],
        ["disagreements", "a", "b", "--out", ingested.with_suffix(".duckdb")],
    ):
        code, _, err = cli(*args, "--db", ingested)
        assert code == 1, args
        one_line(err)
        assert file_sha256(ingested) == before, args
    # the same commands still write where they should
    code, _, err = cli("disagreements", "a", "b", "--out", tmp_path / "q.csv", "--db", ingested)
    assert code == 0, err


# --- 14: CSV quotes and NUL bytes --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, line, message",
    [
        ('id,text\n1,"Heart is normal.\n2,Lungs are clear.\n', 2, "a quoted field is never closed"),
        ('id,text\n1,"Heart is\nnormal."\n\n2,"Lungs "are" clear."\n', 5, "malformed CSV"),
        ('id,text\n1,"Heart is\nnormal."\n2,"Lungs\nare\x00 clear."\n', 4, "a NUL byte"),
        ("id,text\n1,Heart\x00 is normal.\n", 2, "a NUL byte"),
    ],
)
def test_csv_errors_name_the_line_where_the_record_starts(tmp_path, cli, content, line, message):
    path = tmp_path / "r.csv"
    path.write_text(content, encoding="utf-8", newline="")
    db = tmp_path / "c.duckdb"
    code, _, err = cli("ingest", path, "--db", db)
    assert code == 1
    text = one_line(err)
    assert f"{path}: line {line}: " in text and message in text, text
    assert not db.exists()


def test_csv_multiline_record_source_is_its_first_line(tmp_path, cli):
    path = tmp_path / "r.csv"
    path.write_text('id,text\n1,"Heart is\nnormal."\n\n2,Lungs are clear.\n', encoding="utf-8", newline="")
    db = tmp_path / "c.duckdb"
    assert cli("ingest", path, "--db", db)[0] == 0
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT report_id, text, source FROM reports ORDER BY report_id").fetchall()
    con.close()
    assert rows == [("1", "Heart is\nnormal.", f"{path}: line 2"), ("2", "Lungs are clear.", f"{path}: line 5")]


@pytest.mark.parametrize("raw", ['{"id": "r1", "text": "Heart\\u0000 normal."}', '{"id": "r1\u0000", "text": "x"}'])
def test_jsonl_nul_is_an_error_naming_the_line(tmp_path, cli, raw):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(REPORTS[1]) + "\n" + raw + "\n", encoding="utf-8")
    db = tmp_path / "c.duckdb"
    code, _, err = cli("ingest", path, "--db", db)
    assert code == 1 and f"{path}: line 2: a NUL byte" in one_line(err)
    assert not db.exists()


# --- 15: --max-chars above spaCy's limit -------------------------------------------------------------------
def test_max_chars_above_spacys_limit_is_applied(tmp_path):
    text = "Small right pleural effusion. " * 35_000  # 1,050,000 characters in one paragraph
    path = write_jsonl(tmp_path / "long.jsonl", [{"id": "long", "text": text}, REPORTS[1]])
    db = tmp_path / "c.duckdb"
    done = clala_subprocess("ingest", str(path), "--db", str(db), "--max-chars", "2000000")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM sentences").fetchall()[0][0] == 35_001
    assert con.execute("SELECT count(*) FROM ingests WHERE finished_at IS NULL").fetchall()[0][0] == 0
    con.close()
    # and below it, the limit refuses the report before the database is opened
    again = clala_subprocess("ingest", str(path), "--db", str(tmp_path / "d.duckdb"), "--max-chars", "1000000")
    assert again.returncode == 1 and "over the limit of 1,000,000 (--max-chars)" in one_line(again.stderr)
    assert not (tmp_path / "d.duckdb").exists()


def test_an_ingest_that_fails_while_writing_leaves_the_database_unchanged(tmp_path, ingested):
    # An error after batches were written (here raised by the caller's progress hook, the last
    # thing before the commit) rolls back every batch and the ingests row.
    from labeling.ingest import pipeline
    from labeling.store.store import Store

    rows = [{"id": f"n{i}", "text": f"Opacity number {i} at the right base."} for i in range(pipeline.BATCH_SIZE + 5)]
    path = write_jsonl(tmp_path / "more.jsonl", rows)
    with Store(ingested) as store:
        before = (store.table_counts(), store.con.execute("SELECT * FROM ingests").fetchall())

    def fail_at_the_end(done: int, total: int) -> None:
        if done == total:
            raise OSError("disk full")

    with Store(ingested) as store:
        with pytest.raises(OSError, match="disk full"):
            pipeline.ingest(store, path, pipeline.IngestOptions(dataset="demo"), on_progress=fail_at_the_end)
        after = (store.table_counts(), store.con.execute("SELECT * FROM ingests").fetchall())
    assert after == before


# --- 16: only ingest creates a database --------------------------------------------------------------------
def test_commands_that_need_reports_never_create_a_database(tmp_path, cli):
    missing = tmp_path / "typo.duckdb"
    existing = write_jsonl(tmp_path / "labels.jsonl", REPORTS)
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"not used")
    data = tmp_path / "images"
    data.mkdir()
    commands = [
        ["label", "--backend", "rules", "--name", "x"],
        ["label", "--name", "x", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"],
        ["compare", "a", "b"],
        ["disagreements", "a", "b", "--out", tmp_path / "q.csv"],
        ["export", "labels", "--run", "a", "--out", tmp_path / "l.csv"],
        ["export", "reports", "--out", tmp_path / "r.csv"],
        ["export-labelstudio", "a", "--out", tmp_path / "ls"],
        ["derive", "a", "--name", "d"],
        ["import", "chexpert", existing, "--name", "c"],
        ["import", "labelstudio", existing, "--name", "h"],
        ["import", "synth-gold", tmp_path, "--name", "g"],
        ["train", "--run", "a", "--data", data],
        ["evaluate", checkpoint, "--reference", "a", "--data", data],
        ["predict", checkpoint, "--data", data, "--name", "p"],
        ["generate", checkpoint, "--data", data, "--name", "g"],
        ["score-reports", "g", "--reference", "a"],
        ["stats"],
        ["runs", "list"],
    ]
    for args in commands:
        code, _, err = cli(*args, "--db", missing)
        assert code != 0, args
        one_line(err)
        assert not missing.exists(), args
        assert not Path(f"{missing}.wal").exists(), args
        assert not (tmp_path / "ls").exists()


def test_open_existing_is_the_one_rule_for_writing_commands():
    # Every writing open outside `clala ingest` (and the quickstart, which ingests first) goes
    # through Store.open_existing, which never creates a database.
    import re

    root = Path(__file__).resolve().parent.parent
    allowed = {"labeling/ingest/commands.py", "model/experiments/quickstart.py"}
    offenders = []
    for path in [*root.glob("labeling/**/*.py"), *root.glob("model/**/*.py")]:
        relative = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            opened = re.search(r"(?:with|=)\s*Store\((?![^)]*read_only=True)", line)
            if opened and relative not in allowed:
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []
