"""Issue 12, item 8: a run whose server is gone stops `incomplete` within seconds, resumable.

Real servers only: a closed port on 127.0.0.1 (connection refused), tests/fault_server.py
answering nothing (a hang), and a port refused for a second before a server comes up on it.
Before the transport watch, 32 reports against a closed port took about a minute to give up
(each request used up its retries first) and 10 against a hung server with --timeout 3 over a
minute."""

import json
import socket
import threading
import time

from conftest import ingest_file
from fault_server import FaultServer

from labeling.sources.llm import LabelOptions, LlmRequest, label_with_llm
from labeling.store.store import Store


def make_db(tmp_path, texts: dict[str, str]):
    path = tmp_path / "reports.jsonl"
    path.write_text("".join(json.dumps({"id": rid, "text": text}) + "\n" for rid, text in texts.items()))
    db = tmp_path / "llm.duckdb"
    ingest_file(db, path, dataset="t")
    return db


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def work_states(db) -> dict[str, int]:
    with Store(db, read_only=True) as store:
        return dict(store.con.execute("SELECT state, count(*) FROM work GROUP BY state").fetchall())


def label_args(db, base_url: str, *extra: str) -> list[str]:
    return [
        "label",
        "--db",
        str(db),
        "--backend",
        "openai",
        "--base-url",
        base_url,
        "--model",
        "fake-model",
        "--structured-output",
        "json_schema",
        *extra,
    ]


def test_no_server_at_all_stops_within_seconds_with_the_resume_hint(tmp_path, cli):
    db = make_db(tmp_path, {f"r{i:02d}": f"Small left effusion number {i}." for i in range(32)})
    started = time.monotonic()
    # default transport: 4 retries per request, 120 s timeout, 4 in flight
    code, out, _ = cli(*label_args(db, f"http://127.0.0.1:{closed_port()}/v1", "--name", "down", "--batch-size", "32"))
    elapsed = time.monotonic() - started
    assert code == 3  # incomplete
    assert elapsed < 20, elapsed  # every request using up its retries took about a minute
    assert "incomplete" in out
    assert "could not connect to the server" in out and "transport failures in a row" in out
    assert "finish it with: clala label --resume down" in out
    assert work_states(db) == {"pending": 32}  # nothing lost, nothing failed: all resumable
    with Store(db, read_only=True) as store:
        assert store.run("down").status.value == "incomplete"
        assert store.con.execute("SELECT count(*) FROM failures").fetchall() == [(0,)]


def test_a_hung_server_stops_the_run_within_seconds(tmp_path):
    db = make_db(tmp_path, {f"r{i}": f"HANG left effusion number {i}." for i in range(10)})
    with FaultServer(hang_seconds=40) as server:
        started = time.monotonic()
        with Store(db) as store:
            result = label_with_llm(
                store,
                LlmRequest(
                    name="hung",
                    options=LabelOptions(
                        backend="openai",
                        base_urls=[server.base_url],
                        model="fake-model",
                        structured_output="json_schema",
                        timeout=3,
                    ),
                ),
            )
        elapsed = time.monotonic() - started
        asked = len(server.chat_requests())
    assert result.status.value == "incomplete"
    assert elapsed < 30, elapsed  # each request's 5 tries of 3 s, 4 at a time: over a minute
    assert result.stopped_because and "request timed out" in result.stopped_because
    assert "in a row" in result.stopped_because
    assert asked <= 4 * 3  # the calls in flight were cancelled, no new ones started
    assert result.reports_pending == 10 and work_states(db) == {"pending": 10}
    with Store(db, read_only=True) as store:
        errors = {r[0] for r in store.con.execute("SELECT last_error FROM work").fetchall()}
    assert errors and all("timed out" in e for e in errors)


def test_a_server_answering_500_to_everything_stops_after_five_requests_fail(tmp_path):
    """5xx counts per request, after its retries (4, backoff 0.5-8 s): 4 fail together, the next
    round makes 8 in a row. Before, all 32 requests used up their retries (about a minute)."""
    db = make_db(tmp_path, {f"r{i:02d}": f"SERVERERROR left effusion {i}." for i in range(32)})
    with FaultServer() as server:
        started = time.monotonic()
        with Store(db) as store:
            result = label_with_llm(
                store,
                LlmRequest(
                    name="erring",
                    options=LabelOptions(
                        backend="openai",
                        base_urls=[server.base_url],
                        model="fake-model",
                        structured_output="json_schema",
                        batch_size=32,
                    ),
                ),
            )
        elapsed = time.monotonic() - started
        asked = len(server.chat_requests())
    assert result.status.value == "incomplete" and result.reports_pending == 32
    assert result.stopped_because and "HTTP 500" in result.stopped_because and "in a row" in result.stopped_because
    assert elapsed < 35, elapsed
    assert asked <= 3 * 4 * 5  # at most three rounds of 4 requests of 5 tries each; before, 32 x 5


def test_answers_between_failures_keep_the_run_going(tmp_path):
    """Failures in a row stop a run, not failures spread among answers: 4 of 20 units time out
    (one try each) and the other 16 are labeled, in one run."""
    texts = {
        f"r{i:02d}": (f"HANG left effusion {i}." if i % 5 == 0 else f"Small left effusion {i}.") for i in range(20)
    }
    db = make_db(tmp_path, texts)
    with FaultServer(hang_seconds=5) as server:
        with Store(db) as store:
            result = label_with_llm(
                store,
                LlmRequest(
                    name="mixed",
                    options=LabelOptions(
                        backend="openai",
                        base_urls=[server.base_url],
                        model="fake-model",
                        structured_output="json_schema",
                        timeout=1,
                        transport_retries=0,
                        concurrency=2,
                        batch_size=4,
                        give_up_after=2,
                    ),
                ),
            )
    assert result.stopped_because is None or "in a row" not in result.stopped_because
    assert (result.reports_done, result.reports_pending) == (16, 4)
    assert result.status.value == "incomplete"


def test_a_server_back_within_a_second_is_ridden_out(tmp_path):
    """Refused connections for about a second (a restart) do not stop the run: a streak must
    last GIVE_UP_SECONDS before it counts."""
    db = make_db(tmp_path, {f"r{i}": f"Small right effusion number {i}." for i in range(8)})
    port = closed_port()
    servers: list[FaultServer] = []
    timer = threading.Timer(1.0, lambda: servers.append(FaultServer(port=port).__enter__()))
    timer.start()
    try:
        with Store(db) as store:
            result = label_with_llm(
                store,
                LlmRequest(
                    name="blip",
                    options=LabelOptions(
                        backend="openai",
                        base_urls=[f"http://127.0.0.1:{port}/v1"],
                        model="fake-model",
                        structured_output="json_schema",
                        timeout=5,
                    ),
                ),
            )
    finally:
        timer.join()
        for server in servers:
            server.__exit__(None, None, None)
    assert result.status.value == "complete" and result.reports_done == 8
    assert servers and len(servers[0].chat_requests()) == 8
