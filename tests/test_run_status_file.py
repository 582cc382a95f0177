"""Watching a run while it writes (issue 12, item 18): the writer keeps `<db>.status.json` beside
the database, and `clala runs show`, `runs list` and `stats` read it while DuckDB's lock keeps
them out. Real processes throughout: a real LLM run against a slow fault server on 127.0.0.1 in
a subprocess, a real `kill -9`, a real lock holder, readers in other processes."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pyarrow as pa
from conftest import clala_subprocess, holding_database, ingest_file
from fault_server import FaultServer

from labeling.sources.rules import RulesRequest, label_with_rules
from labeling.store.run_records import record_run
from labeling.store.status_file import read_status, status_path
from labeling.store.store import Store
from schemas.runs import RunKind, RunSpec

N_REPORTS = 40  # at 0.4 s an answer, the run outlasts the readers; then the server speeds up
WIDE = {**os.environ, "COLUMNS": "300"}  # rich wraps long titles at the terminal width


def write_reports(tmp_path, n=N_REPORTS):
    path = tmp_path / "r.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "text": f"FINDINGS: Small left pleural effusion number {i}."}) + "\n"
            for i in range(n)
        )
    )
    return path


def start_slow_llm_run(db, server, name="slow"):
    """`clala label` in its own process, one report per committed batch, one request at a time."""
    return subprocess.Popen(
        [sys.executable, "-c", "from cli import app; app()", "label", "--db", str(db), "--backend", "openai"]
        + ["--base-url", server.base_url, "--model", "fake-model", "--structured-output", "json_schema"]
        + ["--name", name, "--batch-size", "1", "--concurrency", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_progress(db, writer, done_at_least=2, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert writer.poll() is None, writer.communicate()
        record = read_status(db)
        if record is not None and record.status == "running" and record.done >= done_at_least:
            return record
        time.sleep(0.2)
    raise AssertionError("the status file never showed progress")


def status_of(db):
    record = read_status(db)
    assert record is not None, f"no status file beside {db}"
    return record


def flat(text):
    return " ".join(text.split())


def field(out, name):
    """The value of a field of `clala runs show`'s table."""
    found = re.search(rf"│ {name}\s*│\s*([\d,]+)", out)
    assert found, out
    return int(found.group(1).replace(",", ""))


def test_readers_show_a_running_run_from_its_status_file(tmp_path, db):
    ingest_file(db, write_reports(tmp_path))
    with FaultServer(delay=0.4) as server:
        writer = start_slow_llm_run(db, server)
        try:
            seen = wait_for_progress(db, writer)
            readers = {
                args: subprocess.Popen(
                    [sys.executable, "-c", "from cli import app; app()", *args, "--db", str(db)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=WIDE,
                )
                for args in [("runs", "show", "slow"), ("runs", "show", "1"), ("runs", "list"), ("stats",)]
                + [("runs", "show", "other")]
            }
            results = {args: (*p.communicate(timeout=120), p.returncode) for args, p in readers.items()}
            assert writer.poll() is None  # all of it was read while the run was writing
            server.delay = 0.0  # let the run finish
            out, err = writer.communicate(timeout=120)
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
    assert writer.returncode == 0, out + err

    out, err, code = results[("runs", "show", "slow")]
    assert code == 0, err
    assert f"Run slow (from the status file {status_path(db)}, database in use by pid {writer.pid}, updated" in flat(
        out
    )
    done, failed, pending = field(out, "done"), field(out, "failed"), field(out, "pending")
    assert seen.done <= done < N_REPORTS and failed == 0 and done + pending == N_REPORTS == field(out, "reports")
    assert re.search(r"│ status\s*│\s*running", out) and re.search(rf"│ pid\s*│\s*{writer.pid}\b", out)
    assert (
        results[("runs", "show", "1")][2] == 0 and "Run slow (from the status file" in results[("runs", "show", "1")][0]
    )
    for args in [("runs", "list"), ("stats",)]:
        out, err, code = results[args]
        assert code == 0, err
        assert f"Runs (from the status file {status_path(db)}, database in use by pid {writer.pid}" in flat(out)
        assert re.search(rf"│\s*1\s*│ slow\s*│ llm\s*│ running\s*│\s*{N_REPORTS}\s*│\s*\d+\s*│\s*0\s*│", out), out
    out, err, code = results[("runs", "show", "other")]
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert f"database is in use by another process (PID {writer.pid})" in err
    assert f"its status file {status_path(db)} is about run 'slow' (id 1), not 'other'" in err

    # The end of the run is written too, and the database is read as usual once it is free.
    final = status_of(db)
    assert (final.status, final.done, final.failed, final.pending, final.pid) == (
        "complete",
        N_REPORTS,
        0,
        0,
        writer.pid,
    )
    shown = clala_subprocess("runs", "show", "slow", "--db", db, env=WIDE)
    assert shown.returncode == 0 and "status file" not in shown.stdout and "complete" in shown.stdout


def test_a_killed_writers_status_file_says_it_is_stale(tmp_path, db):
    ingest_file(db, write_reports(tmp_path))
    with FaultServer(delay=0.4) as server:
        writer = start_slow_llm_run(db, server)
        try:
            wait_for_progress(db, writer)
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.communicate()
    killed = status_of(db)
    assert killed.status == "running" and killed.pid == writer.pid
    # Another process holds the database now and writes no status (a script, say).
    with holding_database(db) as holder:
        shown = clala_subprocess("runs", "show", "slow", "--db", db, env=WIDE)
    assert shown.returncode == 0, shown.stderr
    assert f"from the status file {status_path(db)}, stale: its writer pid {writer.pid} has ended (updated" in flat(
        shown.stdout
    )
    assert "the run shows as interrupted once the database is opened for writing" in flat(shown.stdout)
    assert f"the database is in use by pid {holder.pid}, which wrote no status" in flat(shown.stdout)
    # Opened for writing, the run is marked interrupted; a reader sees it so in the database.
    Store.open_existing(db).close()
    shown = clala_subprocess("runs", "show", "slow", "--db", db, env=WIDE)
    assert shown.returncode == 0 and "interrupted" in shown.stdout and "status file" not in shown.stdout


def test_without_a_status_file_the_in_use_error_says_so(tmp_path, db):
    ingest_file(db, write_reports(tmp_path, 2))
    with holding_database(db) as holder:
        missing = clala_subprocess("runs", "list", "--db", db)
        status_path(db).write_text('{"format": "something else"}\n')
        malformed = clala_subprocess("stats", "--db", db)
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert f"database is in use by another process (PID {holder.pid})" in missing.stderr
    assert f"(no status file {status_path(db)} says what it is doing)" in missing.stderr
    assert malformed.returncode == 1 and len(malformed.stderr.strip().splitlines()) == 1
    assert f"{status_path(db)}: not a clala status file" in malformed.stderr


def test_every_kind_of_run_writes_counts_only(tmp_path, db):
    ingest_file(db, write_reports(tmp_path, 3))
    with Store.open_existing(db) as store:
        result = label_with_rules(store, RulesRequest(name="rules", batch_size=2))
        rules = status_of(db)
        keys = store.current_report_keys()
        spec = RunSpec(name="imported", kind=RunKind.imported, vocabulary_version="v", source="a file")
        one = {"report_key": [keys[0]], "region": ["left lung"], "finding": ["pleural effusion"], "status": ["present"]}
        run_id = record_run(store, spec, keys[:2], pa.table(one))
        imported = status_of(db)
    assert result.complete
    assert (rules.name, rules.kind, rules.status, rules.reports, rules.done, rules.pid) == (
        "rules",
        "rules",
        "complete",
        3,
        3,
        os.getpid(),
    )
    assert (imported.run_id, imported.name, imported.kind, imported.status, imported.reports, imported.done) == (
        run_id,
        "imported",
        "import",
        "complete",
        2,
        2,
    )
    text = status_path(db).read_text()
    assert set(json.loads(text)) == {
        "format",
        "run_id",
        "name",
        "kind",
        "status",
        "pid",
        "host",
        "created",
        "started",
        "updated",
        "reports",
        "done",
        "failed",
        "pending",
    }
    assert "effusion" not in text and "FINDINGS" not in text  # no report text, no labels
    # written whole: no temporary file is left beside it
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
