"""Issue 12, item 9: answers are cached as they arrive, so a `kill -9` loses at most the calls in
flight and, since issue 16, the answers of one held commit (HELD: up to one a slot). A real
`clala label` subprocess against a slow tests/fault_server.py, killed three times
mid-batch, then resumed to the end. Before, every answer of the batch being worked on was lost
with each kill (434 requests for 273 units over three kills)."""

import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import ingest_file
from fault_server import FaultServer

from labeling.store.store import Store

UNITS = 48  # one distinct sentence per report
CONCURRENCY = 4
KILLS = 3
# answers held for one shared commit (half a call's time): usually one or two, at worst one
# a slot when the calls answer together
HELD = CONCURRENCY


def clala(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cli import app; app()", *args]


def kill_after(server: FaultServer, requests: int, args: list[str]) -> None:
    """Start `clala label ARGS`, SIGKILL it once the server has received `requests` in all."""
    proc = subprocess.Popen(clala(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(server.chat_requests()) < requests and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_three_kills_mid_batch_lose_only_the_calls_in_flight(tmp_path):
    sides, findings = ["left", "right"], ["effusion", "pneumothorax", "atelectasis", "consolidation"]
    path = tmp_path / "reports.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"r{i:02d}", "text": f"FINDINGS: Small {sides[i % 2]} {findings[i % 4]} number {i}."})
            + "\n"
            for i in range(UNITS)
        )
    )
    db = tmp_path / "llm.duckdb"
    ingest_file(db, path, dataset="t")
    transport = ["--backend", "openai", "--model", "fake-model", "--structured-output", "json_schema"]
    batching = ["--concurrency", str(CONCURRENCY), "--batch-size", "16"]
    with FaultServer(delay=0.25) as server:
        label = ["label", "--db", str(db), "--base-url", server.base_url, *transport, *batching]
        # 10 requests into a batch of 16: before, the 6 or more answers already back were lost
        kill_after(server, 10, [*label, "--name", "killed"])
        with Store(db, read_only=True) as store:
            run_id = store.run("killed").run_id
            assert store.work_counts(run_id).get("done", 0) == 0  # no batch was committed ...
            kept = store.con.execute("SELECT count(*) FROM llm_cache WHERE run_id = ?", [run_id]).fetchall()[0][0]
        assert kept >= 10 - CONCURRENCY - HELD  # ... but the answers that came back are cached
        for _ in range(KILLS - 1):
            kill_after(server, len(server.chat_requests()) + 10, ["label", "--db", str(db), "--resume", "killed"])
        finished = subprocess.run(
            clala("label", "--db", str(db), "--resume", "killed"), capture_output=True, text=True, timeout=300
        )
        assert finished.returncode == 0, finished.stdout + finished.stderr
        asked = len(server.chat_requests())
        whole = subprocess.run(
            clala(*label, "--name", "whole", "--no-cache"), capture_output=True, text=True, timeout=300
        )
        assert whole.returncode == 0, whole.stdout + whole.stderr
    assert asked <= UNITS + (CONCURRENCY + HELD) * KILLS, asked  # the calls in flight and one held commit a kill
    query = """SELECT l.report_key, l.region, l.finding, l.status, l.severity, l.temporal, l.evidence_start,
                      l.evidence_end, l.evidence_text, l.confidence
               FROM labels l JOIN runs USING (run_id) WHERE name = ? ORDER BY ALL"""
    with Store(db, read_only=True) as store:
        killed = store.con.execute(query, ["killed"]).fetchall()
        uninterrupted = store.con.execute(query, ["whole"]).fetchall()
        status = store.run("killed").status.value
        tokens = store.con.execute(
            "SELECT prompt_tokens > 0, completion_tokens > 0 FROM runs WHERE name = 'killed'"
        ).fetchall()
    assert killed == uninterrupted and len(killed) == UNITS
    assert status == "complete"
    assert tokens == [(True, True)]  # tokens are counted as answers arrive, kills or not
