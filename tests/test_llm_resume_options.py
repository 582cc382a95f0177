"""Issue 12, item 6: `--resume` honours the transport options given with it and records them;
options that change what a run's labels mean are refused, naming the option and both values,
and nothing changes. Real servers (tests/fault_server.py, a closed port) and the real CLI."""

import json
import shutil
import socket

import pytest
from conftest import ingest_file
from fault_server import FaultServer

from labeling.core.errors import InputError
from labeling.sources.llm import LabelOptions, LlmRequest, label_with_llm
from labeling.store.store import Store


def make_db(tmp_path, texts: dict[str, str]):
    path = tmp_path / "reports.jsonl"
    path.write_text("".join(json.dumps({"id": rid, "text": text}) + "\n" for rid, text in texts.items()))
    db = tmp_path / "llm.duckdb"
    ingest_file(db, path, dataset="t")
    return db


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def openai_options(base_url: str, **overrides) -> LabelOptions:
    base = dict(backend="openai", base_urls=[base_url], model="fake-model", structured_output="json_schema")
    return LabelOptions(**{**base, **overrides})


def start_run(db, name: str, options: LabelOptions):
    with Store(db) as store:
        return label_with_llm(store, LlmRequest(name=name, options=options))


def snapshot(db) -> dict:
    """Everything a refused resume must leave as it was."""
    with Store(db, read_only=True) as store:
        con = store.con
        return {
            "runs": con.execute("SELECT run_id, name, status, params, decoding, finished_at FROM runs").fetchall(),
            "work": con.execute("SELECT * FROM work ORDER BY report_key").fetchall(),
            "cache": con.execute("SELECT count(*) FROM llm_cache").fetchall(),
            "labels": con.execute("SELECT count(*) FROM labels").fetchall(),
        }


def test_resume_goes_to_the_new_server_with_the_new_transport_and_records_it(tmp_path, cli, monkeypatch):
    db = make_db(tmp_path, {f"r{i}": f"Small left effusion number {i}." for i in range(8)})
    monkeypatch.setenv("CLALA_KEY_A", "sk-old-AAAAAAAAAAAAAAAA")
    monkeypatch.setenv("CLALA_KEY_B", "sk-new-BBBBBBBBBBBBBBBB")
    first = start_run(
        db, "moved", openai_options(closed_url(), api_key_env="CLALA_KEY_A", transport_retries=0, concurrency=4)
    )
    assert first.status.value == "incomplete"  # its server is down
    with FaultServer(delay=0.2) as server:  # the server came back elsewhere
        code, out, err = cli(
            "label",
            "--db",
            db,
            "--resume",
            "moved",
            "--base-url",
            server.base_url,
            "--concurrency",
            "2",
            "--timeout",
            "9",
            "--api-key-env",
            "CLALA_KEY_B",
        )
        asked = server.chat_requests()
        most_at_once = server.max_active
    assert code == 0, out + err
    assert "complete" in out
    assert len(asked) == 8  # before, the resume went to the stored (dead) --base-url and ended incomplete
    assert most_at_once == 2  # --concurrency 2, not the run's 4
    keys = {v for r in asked for k, v in r["headers"].items() if k.lower() == "authorization"}
    assert keys == {"Bearer sk-new-BBBBBBBBBBBBBBBB"}  # from --api-key-env CLALA_KEY_B
    with Store(db, read_only=True) as store:
        run = store.run("moved")
    assert run.status.value == "complete"
    assert run.params["base_urls"] != [server.base_url]  # the run's own options, as created
    [resumed] = run.params["resumes"]
    assert {k: resumed[k] for k in ("base_urls", "concurrency", "timeout", "api_key_env", "structured_output")} == {
        "base_urls": [server.base_url],
        "concurrency": 2,
        "timeout": 9.0,
        "api_key_env": "CLALA_KEY_B",  # the variable's name, never the key
        "structured_output": "json_schema",
    }
    assert resumed["at"]
    for path in (db, db.with_name(db.name + ".wal")):
        if path.exists():
            assert b"sk-new-" not in path.read_bytes() and b"sk-old-" not in path.read_bytes()


def test_a_longer_timeout_on_resume_is_used(tmp_path):
    db = make_db(tmp_path, {"slow": "HANG left effusion."})
    with FaultServer(hang_seconds=2) as server:
        first = start_run(db, "slow", openai_options(server.base_url, timeout=1, transport_retries=0))
        assert first.status.value == "incomplete"  # answers in 2 s, the run waits 1 s
        with Store(db) as store:
            resumed = label_with_llm(store, LlmRequest(resume="slow", options=LabelOptions(timeout=10)))
        assert resumed.status.value == "complete"  # before, the stored 1 s timed out again
        with Store(db, read_only=True) as store:
            run = store.run("slow")
        assert run.params["timeout"] == 1 and run.params["resumes"][-1]["timeout"] == 10
        # a later resume keeps the latest transport unless told otherwise
        with Store(db) as store:
            label_with_llm(store, LlmRequest(resume="slow"))
        with Store(db, read_only=True) as store:
            assert [r["timeout"] for r in store.run("slow").params["resumes"]] == [10, 10]


# (flags given with --resume, the option named in the message, the run's value, the value given)
REFUSED = [
    (["--model", "other-model"], "--model", "'fake-model'", "'other-model'"),
    (["--prompt", "report_judge"], "--prompt", "'region_labels'", "'report_judge'"),
    (["--temperature", "0.5"], "--temperature", "None", "0.5"),
    (["--samples", "3"], "--samples", "1", "3"),
    (["--unit", "report"], "--unit", "'sentence'", "'report'"),
    (["--context", "1"], "--context", "0", "1"),
    (["--max-tokens", "100"], "--max-tokens", "None", "100"),
    (["--enable", "device"], "--enable", "[]", "['device']"),
    (["--no-cache"], "--no-cache", "True", "False"),
    (["--backend", "local"], "--backend", "'openai'", "'local'"),
    (["--dataset", "other"], "--dataset", "None", "'other'"),
    (["--structured-output", "none"], "--structured-output", "'json_schema'", "'none'"),
]


@pytest.mark.parametrize(("flags", "option", "before", "after"), REFUSED, ids=[r[1] for r in REFUSED])
def test_options_that_change_what_labels_mean_are_refused_and_nothing_changes(
    tmp_path, cli, flags, option, before, after
):
    db = make_db(tmp_path, {"a": "Small left effusion.", "b": "No pneumothorax."})
    start_run(db, "made", openai_options(closed_url(), transport_retries=0))
    was = snapshot(db)
    with FaultServer() as server:
        code, out, err = cli("label", "--db", db, "--resume", "made", "--base-url", server.base_url, *flags)
        assert server.chat_requests() == []
    assert code == 1, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {option}: run 'made' was made with {before}; resuming it with {after} ")
    assert snapshot(db) == was


def test_the_same_values_given_again_are_accepted(tmp_path, cli):
    db = make_db(tmp_path, {"a": "Small left effusion."})
    start_run(db, "same", openai_options(closed_url(), transport_retries=0))
    with FaultServer() as server:
        code, out, err = cli(
            "label",
            "--db",
            db,
            "--resume",
            "same",
            "--base-url",
            server.base_url,
            "--model",
            "fake-model",
            "--unit",
            "sentence",
            "--structured-output",
            "auto",  # this server resolves to json_schema, the run's dialect
        )
    assert code == 0, out + err


def test_a_vocabulary_file_changed_since_the_run_is_refused(tmp_path):
    vocabulary = tmp_path / "vocabulary.json"
    shutil.copy("schemas/vocabulary_data/chest_imagenome.json", vocabulary)
    db = make_db(tmp_path, {"a": "Small left effusion."})
    start_run(db, "vocab", openai_options(closed_url(), transport_retries=0, vocabulary=str(vocabulary)))
    edited = json.loads(vocabulary.read_text())
    edited["description"] += " Edited."
    vocabulary.write_text(json.dumps(edited))
    was = snapshot(db)
    with Store(db) as store, pytest.raises(InputError, match=r"was made with vocabulary .* \(its file changed\)"):
        label_with_llm(store, LlmRequest(resume="vocab"))
    assert snapshot(db) == was
