"""`--backend openai-batch` (issue 16, item 5) against a real Batch API server on 127.0.0.1
(tests/batch_server.py): the JSONL file, submit, poll, collect; labels equal to an online run's;
a kill after submission resumed without a second batch; batches that end failed, expired or
cancelled; per-line errors; invalid answers re-asked in a following wave."""

import json
import signal
import subprocess
import sys
import time

import pytest
from batch_server import BatchServer
from conftest import reports_db, stored_run

TEXTS = [
    "FINDINGS: Small left effusion. No pneumothorax.",
    "FINDINGS: Right atelectasis. Small left effusion.",
    "FINDINGS: Cardiomegaly. Left consolidation.",
    "FINDINGS: No effusion. Right pneumothorax.",
]
BATCH = ["--backend", "openai-batch", "--model", "fake-model", "--poll-interval", "0.05"]


def make_db(tmp_path, texts=TEXTS):
    return reports_db(tmp_path, texts, "batch.duckdb")


def uploaded_lines(server: BatchServer, n: int = 0) -> list[dict]:
    """The lines of the n-th batch's input file."""
    content = server.files[server.creations[n]["input_file_id"]]["content"]
    return [json.loads(line) for line in content.splitlines()]


@pytest.mark.parametrize("unit", [["--unit", "sentence"], ["--unit", "sentences", "--per-call", "3"]])
def test_a_batch_run_labels_as_an_online_run_does(tmp_path, cli, monkeypatch, unit):
    db = make_db(tmp_path)
    monkeypatch.setenv("BATCH_TEST_KEY", "sk-test-123")
    with BatchServer() as server:
        code, out, err = cli(
            "label", "--db", db, "--base-url", server.base_url, *BATCH, *unit, "--name", "batch",
            "--api-key-env", "BATCH_TEST_KEY",
        )  # fmt: skip
        assert code == 0, out + err
        code, out, err = cli(
            "label", "--db", db, "--base-url", server.base_url, "--backend", "openai", "--model", "fake-model",
            "--structured-output", "json_schema", *unit, "--name", "online", "--no-cache",
        )  # fmt: skip
        assert code == 0, out + err
        online = [r["body"] for r in server.chat_requests()]
    run, batch_labels, work = stored_run(db, "batch")
    _, online_labels, _ = stored_run(db, "online")
    assert batch_labels == online_labels and len(batch_labels) >= 8
    assert work == {"done": len(TEXTS)} and run.status.value == "complete"
    # one upload, one batch, polled, then its output file read
    assert len(server.creations) == 1
    assert server.creations[0]["endpoint"] == "/v1/chat/completions"
    assert server.creations[0]["completion_window"] == "24h"
    lines = uploaded_lines(server)
    assert {(line["method"], line["url"]) for line in lines} == {("POST", "/v1/chat/completions")}
    assert len({line["custom_id"] for line in lines}) == len(lines)
    # each line's body is the exact body the online path sends (less logprobs, which batches do not score)
    assert sorted(json.dumps(line["body"], sort_keys=True) for line in lines) == sorted(
        json.dumps({k: v for k, v in body.items() if k != "logprobs"}, sort_keys=True) for body in online
    )
    # the key came from the environment, went in the header, and was stored nowhere
    batch_calls = [c for c in server.calls if not c["path"].endswith("/chat/completions")]
    assert {c["headers"].get("Authorization") for c in batch_calls} == {"Bearer sk-test-123"}
    assert "sk-test-123" not in json.dumps(run.params)
    [job] = run.params["batch_jobs"]
    assert job["batch_id"] == server.creations[0]["id"] and job["state"] == "collected"
    assert sorted(job["requests"]) == sorted(line["custom_id"] for line in lines)
    assert run.prompt_tokens > 0 and run.completion_tokens > 0


def test_an_invalid_answer_is_reasked_in_a_following_wave(tmp_path, cli):
    db = make_db(tmp_path, ["FINDINGS: FIXONRETRY small left effusion.", "FINDINGS: Right pneumothorax."])
    with BatchServer() as server:
        code, out, err = cli("label", "--db", db, "--base-url", server.base_url, *BATCH, "--name", "batch")
        assert code == 0, out + err
        assert len(server.creations) == 2
        [reasked] = uploaded_lines(server, 1)
    assert reasked["body"]["messages"][-2] == {"role": "assistant", "content": "{not json"}
    assert "Correct your JSON answer" in reasked["body"]["messages"][-1]["content"]
    run, labels, work = stored_run(db, "batch")
    assert work == {"done": 2} and {row[2] for row in labels} == {"pleural effusion", "pneumothorax"}


def clala(*args) -> list[str]:
    return [sys.executable, "-c", "from cli import app; app()", *map(str, args)]


def kill_when(proc: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + 60
    while not ready() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "clala ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("when", ["polling", "creating"])
def test_a_killed_run_collects_its_batch_on_resume_without_submitting_again(tmp_path, when):
    """Killed while polling (the batch id written), or while the batch was being created (only
    its input file written: the batch is found among the server's by that file)."""
    db = make_db(tmp_path)
    with BatchServer(create_delay=30.0 if when == "creating" else 0.0) as server:
        server.hold.clear()  # the batch stays in progress until the run is killed
        proc = subprocess.Popen(
            clala("label", "--db", db, "--base-url", server.base_url, *BATCH, "--name", "killed"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if when == "polling":
            kill_when(proc, lambda: any(c["path"].startswith("/v1/batches/batch-") for c in server.calls))
        else:
            kill_when(proc, lambda: len(server.creations) == 1)
        server.create_delay = 0.0
        server.hold.set()
        resumed = subprocess.run(
            clala("label", "--db", db, "--resume", "killed", "--poll-interval", "0.05"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        creations, uploads = len(server.creations), [c for c in server.calls if c["path"] == "/v1/files"]
        listed = [c for c in server.calls if c["path"].startswith("/v1/batches?")]
    assert creations == 1 and len(uploads) == 1  # paid once
    assert bool(listed) is (when == "creating")  # the batch id unknown: looked up by its input file
    run, labels, work = stored_run(db, "killed")
    assert run.status.value == "complete" and work == {"done": len(TEXTS)}
    with BatchServer() as fresh:
        whole = subprocess.run(
            clala("label", "--db", db, "--base-url", fresh.base_url, *BATCH, "--name", "whole", "--no-cache"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert labels == stored_run(db, "whole")[1]


@pytest.mark.parametrize("end_as", ["failed", "expired", "cancelled"])
def test_a_batch_that_ends_unanswered_leaves_the_run_incomplete(tmp_path, cli, end_as):
    db = make_db(tmp_path, [f"FINDINGS: Small left effusion {i}." for i in range(4)])
    with BatchServer(end_as=end_as) as server:
        code, out, err = cli("label", "--db", db, "--base-url", server.base_url, *BATCH, "--name", "ended")
        assert code == 3, out + err
        run, _, work = stored_run(db, "ended")
        assert run.status.value == "incomplete"
        answered = 0 if end_as == "failed" else 2
        assert work == ({"done": answered, "pending": 4 - answered} if answered else {"pending": 4})
        detail = " (the model is not available for batches)" if end_as == "failed" else ""
        reason = (
            f"batch batch-0002 {end_as}{detail}: {4 - answered} of 4 requests unanswered; --resume submits them again"
        )
        assert reason in " ".join(out.split())
        assert run.params["batch_jobs"][0]["state"] == "ended"
        code, out, err = cli("label", "--db", db, "--resume", "ended", "--poll-interval", "0.05")
        assert code == 0, out + err
        assert len(server.creations) == 2 and len(uploaded_lines(server, 1)) == 4 - answered
    assert stored_run(db, "ended")[2] == {"done": 4}


def test_a_line_error_leaves_its_report_pending_for_resume(tmp_path, cli):
    """A line answered 429 (here: the first time that text is asked) is the online path's
    transport failure: its report stays pending, the others are done; resume asks it again."""
    db = make_db(tmp_path, ["FINDINGS: RATELIMIT left effusion.", "FINDINGS: Right pneumothorax."])
    with BatchServer() as server:
        code, out, err = cli("label", "--db", db, "--base-url", server.base_url, *BATCH, "--name", "lines")
        assert code == 3, out + err
        assert "finish it with: clala label --resume lines" in " ".join(out.split())
        _, _, work = stored_run(db, "lines")
        assert work == {"done": 1, "pending": 1}
        code, out, err = cli("label", "--db", db, "--resume", "lines", "--poll-interval", "0.05")
        assert code == 0, out + err
        assert len(server.creations) == 2 and len(uploaded_lines(server, 1)) == 1
    run, labels, work = stored_run(db, "lines")
    assert work == {"done": 2} and {row[2] for row in labels} == {"pleural effusion", "pneumothorax"}


def test_patient_data_stays_here_and_no_redirect_is_followed(tmp_path, cli):
    db = make_db(tmp_path, ["FINDINGS: Small left effusion."])
    code, out, err = cli(
        "label", "--db", db, "--base-url", "https://api.example.com/v1", *BATCH, "--name", "remote"
    )  # fmt: skip
    assert code == 1 and "needs --allow-remote" in " ".join((out + err).split())
    with BatchServer(redirect="http://127.0.0.1:9/elsewhere") as server:
        code, out, err = cli("label", "--db", db, "--base-url", server.base_url, *BATCH, "--name", "moved")
        assert code == 3, out + err
        assert "redirected to http://127.0.0.1:9/elsewhere (HTTP 307)" in " ".join(out.split())
        assert [c["path"] for c in server.calls] == ["/v1/files"]  # asked once, not followed
    assert stored_run(db, "moved")[0].status.value == "incomplete"


@pytest.mark.parametrize("backend", ["openai-batch", "ray"])
def test_a_dry_run_calls_nothing(tmp_path, cli, backend):
    db = make_db(tmp_path)
    code, out, err = cli(
        "label", "--db", db, "--backend", backend, "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
        "--unit", "sentences", "--dry-run", "--price-in", "0.075", "--price-out", "0.3",
    )  # fmt: skip
    assert code == 0, out + err
    assert "model calls needed" in out and "est. cost" in out
