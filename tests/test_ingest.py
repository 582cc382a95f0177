import hashlib
import json
import subprocess
import sys
import time

import pytest
from conftest import clala_subprocess, holding_database, ingest_file

from labeling.store.store import Store


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def counts(db):
    with Store(db, read_only=True) as s:
        return s.table_counts()


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


REPORTS = [
    {"id": "a", "text": "FINDINGS: Small left pleural effusion. No pneumothorax.\nIMPRESSION: Effusion."},
    {"id": "b", "text": "The lungs are clear. Heart size is normal."},
    {"id": "c", "text": "IMPRESSION: 1. Mild edema. 2. Cardiomegaly."},
]


def test_ingest_stores_reports_and_sentences(tmp_path, db):
    result = ingest_file(db, write_jsonl(tmp_path / "r.jsonl", REPORTS))
    assert (result.read, len(result.added), result.sentences) == (3, 3, 7)
    with Store(db, read_only=True) as s:
        rows = s.con.execute("""SELECT r.report_id, s.section, s.text, r.text, s.start_char, s.end_char
                                FROM sentences s JOIN reports r USING (report_key)
                                ORDER BY r.report_id, s.sentence_index""").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("a", "findings", "Small left pleural effusion."),
        ("a", "findings", "No pneumothorax."),
        ("a", "impression", "Effusion."),
        ("b", None, "The lungs are clear."),
        ("b", None, "Heart size is normal."),
        ("c", "impression", "Mild edema."),
        ("c", "impression", "Cardiomegaly."),
    ]
    assert all(text[start:end] == sentence for _, _, sentence, text, start, end in rows)


def test_reingest_adds_nothing_and_changes_become_versions(tmp_path, db, cli):
    path = write_jsonl(tmp_path / "r.jsonl", REPORTS)
    ingest_file(db, path)
    again = ingest_file(db, path)
    assert (len(again.added), len(again.changed), again.unchanged) == (0, 0, 3)
    assert counts(db)["reports"] == 3

    edited = [dict(REPORTS[0], text=REPORTS[0]["text"].replace("Small", "Moderate")), *REPORTS[1:]]
    code, out, _ = cli("ingest", write_jsonl(tmp_path / "r2.jsonl", edited), "--db", db, "--dataset", "r")
    assert code == 0
    assert "changed 1" in out and "changed reports: a" in out
    with Store(db, read_only=True) as s:
        versions = s.con.execute(
            "SELECT version, text LIKE '%Moderate%' FROM reports WHERE report_id = 'a' ORDER BY version"
        ).fetchall()
        current = s.con.execute("SELECT version FROM current_reports WHERE report_id = 'a'").fetchall()
    assert versions == [(1, False), (2, True)]  # the old text is kept, never overwritten
    assert current == [(2,)]


def test_duplicate_rows_with_same_text_are_counted_once(tmp_path, db):
    result = ingest_file(db, write_jsonl(tmp_path / "r.jsonl", [*REPORTS, REPORTS[0]]))
    assert (len(result.added), result.duplicates) == (3, 1)


def test_iu_blank_reports_are_skipped_and_listed(tmp_path, db, cli):
    path = tmp_path / "indiana_reports.csv"
    path.write_text(
        "uid,MeSH,Problems,image,indication,comparison,findings,impression\n"
        "1,normal,normal,PA,,,The lungs are clear.,Normal.\n2,normal,normal,PA,,,,\n"
    )
    code, out, _ = cli("ingest", path, "--db", db)
    assert code == 0
    assert "skipped 1 reports with no text: 2" in out
    assert counts(db)["reports"] == 1


# --- bad input: one-line error naming the file and row or field, exit 1, database unchanged ------


def bad_input_cases(tmp_path):
    big = "FINDINGS: " + "There is no pneumothorax. " * 42_000  # about 1 MB
    non_utf8 = tmp_path / "latin1.csv"
    non_utf8.write_bytes(b"id,text\nx1,Lungs clear.\nx2,Caf\xe9 opacity.\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    no_text = tmp_path / "no_text.csv"
    no_text.write_text("id,report\n1,Lungs clear.\n")
    blank = tmp_path / "blank.csv"
    blank.write_text("id,text\n1,Lungs clear.\n2,   \n")
    dupes = tmp_path / "dupes.csv"
    dupes.write_text("id,text\n1,Lungs clear.\n2,Effusion.\n1,Lungs not clear.\n")
    huge = write_jsonl(tmp_path / "huge.jsonl", [{"id": "big", "text": big}])
    return [
        ([tmp_path / "missing.csv"], "missing.csv: file not found"),
        ([empty], "empty.csv: file is empty"),
        ([no_text], "no_text.csv: no column 'text' (columns: id, report); choose it with --text-col"),
        ([no_text, "--text-col", "body"], "no column 'body'"),
        ([non_utf8], "latin1.csv: line 3: byte 0xe9"),
        ([blank], "blank.csv: line 3 (id 2): report text is blank"),
        ([dupes], "dupes.csv: line 4: id '1' was already used with different text at line 2"),
        ([huge], "huge.jsonl: line 1 (id big): report is 1,092,010 characters, over the limit of 100,000"),
    ]


def test_bad_inputs_fail_cleanly_and_leave_the_database_as_it_was(tmp_path, db, cli):
    ingest_file(db, write_jsonl(tmp_path / "r.jsonl", REPORTS))
    before_counts, before_bytes = counts(db), digest(db)
    for args, message in bad_input_cases(tmp_path):
        code, out, err = cli("ingest", *args, "--db", db)
        assert code == 1, (args, out, err)
        assert message in err, (message, err)
        assert len(err.strip().splitlines()) == 1, err
        assert digest(db) == before_bytes
    assert counts(db) == before_counts


def test_bad_input_creates_no_database(tmp_path, cli):
    db = tmp_path / "fresh.duckdb"
    code, _, err = cli("ingest", tmp_path / "missing.jsonl", "--db", db)
    assert code == 1 and "file not found" in err
    assert not db.exists()


def test_locked_database(tmp_path, db, cli):
    path = write_jsonl(tmp_path / "r.jsonl", REPORTS)
    ingest_file(db, path)
    with holding_database(db) as holder:
        code, _, err = cli("ingest", write_jsonl(tmp_path / "more.jsonl", [{"id": "z", "text": "Clear."}]), "--db", db)
        assert code == 1
        assert f"{db}: database is in use by another process (PID {holder.pid})" in err
        assert len(err.strip().splitlines()) == 1
    assert counts(db)["reports"] == 3


def test_not_a_duckdb_file(tmp_path, cli):
    notes = tmp_path / "notes.duckdb"
    notes.write_text("not a database\n" * 50)
    before = digest(notes)
    code, _, err = cli("ingest", write_jsonl(tmp_path / "r.jsonl", REPORTS), "--db", notes)
    assert code == 1 and f"{notes}: not a DuckDB database file" in err
    assert digest(notes) == before


@pytest.mark.slow
def test_killed_ingest_keeps_nothing_and_reruns(tmp_path):
    # One ingest is one transaction: a kill leaves the database as it was, never a partial batch.
    rows = [
        {
            "id": f"r{i}",
            "text": f"FINDINGS: Finding number {i} in the right base. No effusion {i}. IMPRESSION: Item {i}.",
        }
        for i in range(30_000)
    ]
    path = write_jsonl(tmp_path / "many.jsonl", rows)
    db = tmp_path / "k.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cli import app; app()", "ingest", str(path), "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while not db.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)
    proc.kill()
    proc.wait()
    with Store(db) as s:
        stored = s.table_counts()["reports"]
        # every stored report has all of its sentences: 3 each
        partial = s.con.execute("""SELECT count(*) FROM reports r LEFT JOIN
                                   (SELECT report_key, count(*) n FROM sentences GROUP BY ALL) c USING (report_key)
                                   WHERE coalesce(c.n, 0) != 3""").fetchall()[0][0]
        ingests = s.table_counts()["ingests"]
    assert stored in (0, 30_000)  # all or nothing
    assert ingests == (1 if stored else 0) and partial == 0
    finished = clala_subprocess("ingest", path, "--db", db)
    assert finished.returncode == 0, finished.stderr
    assert f"added {30_000 - stored:,}" in finished.stdout
    assert counts(db)["reports"] == 30_000 and counts(db)["sentences"] == 90_000


def test_iu_xray_csv_without_its_text_columns_is_an_error(tmp_path, db, cli):
    # Every column of indiana_reports.csv that ingest reads is required, not only uid.
    path = tmp_path / "indiana_reports.csv"
    path.write_text("uid,MeSH,Problems,image,indication,comparison\n1,normal,normal,PA,,\n")
    code, _, err = cli("ingest", path, "--format", "iu-xray", "--db", db)
    assert code == 1
    assert f"{path}: missing IU X-ray column(s) findings, impression" in err
    assert len(err.strip().splitlines()) == 1
    assert not db.exists()
