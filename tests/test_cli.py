import json


def test_reports_list_show_stats(tmp_path, cli):
    db = tmp_path / "c.duckdb"
    path = tmp_path / "r.jsonl"
    path.write_text(
        json.dumps({"id": "x1", "text": "FINDINGS: Right base opacity. No effusion."})
        + "\n"
        + json.dumps({"id": "x2", "text": "Lungs are clear."})
        + "\n"
    )
    assert cli("ingest", path, "--db", db, "--dataset", "demo")[0] == 0
    code, out, _ = cli("reports", "list", "--db", db)
    assert code == 0 and "x1" in out and "x2" in out
    code, out, _ = cli("reports", "show", "x1", "--db", db)
    assert code == 0 and "Right base opacity." in out and "findings" in out and "10-29" in out
    code, out, err = cli("reports", "show", "nope", "--db", db)
    assert code == 1 and "no report with id 'nope'" in err
    code, out, _ = cli("stats", "--db", db)
    assert code == 0
    assert "Datasets" in out and "demo" in out and "distinct sentences" in out
    code, _, err = cli("stats", "--db", tmp_path / "absent.duckdb")
    assert code == 1 and "no database here yet" in err


def test_schema_export_and_vocabulary(tmp_path, cli):
    out = tmp_path / "schema.json"
    code, _, _ = cli("schema", "export", "--out", out)
    assert code == 0
    schema = json.loads(out.read_text())
    assert "pleural effusion" in schema["$defs"]["StatementLabel"]["properties"]["finding"]["enum"]
    code, _, _ = cli("schema", "export", "--out", out, "--enable", "tubesandlines")
    assert (
        "endotracheal tube" in json.loads(out.read_text())["$defs"]["StatementLabel"]["properties"]["finding"]["enum"]
    )
    code, _, err = cli("schema", "export", "--enable", "gadgets")
    assert code == 1 and "unknown finding categories" in err
    code, out, _ = cli("schema", "vocabulary")
    assert code == 0 and "right costophrenic angle" in out


def test_export_command(tmp_path, cli):
    db = tmp_path / "c.duckdb"
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "x1", "text": "Lungs are clear."}) + "\n")
    cli("ingest", path, "--db", db)
    code, out, _ = cli("export", "reports", "--out", tmp_path / "r.csv", "--db", db)
    assert code == 0 and "wrote 1 reports" in out
    code, _, err = cli("export", "labels", "--run", "nope", "--out", tmp_path / "l.csv", "--db", db)
    assert code == 1 and "no run named 'nope'" in err


def test_prompts_commands(cli):
    code, out, _ = cli("prompts", "list")
    assert code == 0 and "region_labels" in out
    code, out, _ = cli("prompts", "show", "region_labels")
    assert code == 0 and "$findings" in out and "region_labels.examples.json" in out
    code, out, _ = cli("prompts", "render", "--text", "Tiny right apical pneumothorax.")
    assert code == 0 and "TEXT TO LABEL:\nTiny right apical pneumothorax." in out and "sha256" in out
    code, _, err = cli("prompts", "render", "nope")
    assert code == 1 and "prompt 'nope' not found" in err


def test_label_runs_and_failures_commands(tmp_path, cli):
    from fault_server import FaultServer

    db = tmp_path / "c.duckdb"
    path = tmp_path / "r.jsonl"
    path.write_text(
        json.dumps({"id": "x1", "text": "FINDINGS: Small left pleural effusion."})
        + "\n"
        + json.dumps({"id": "x2", "text": "FINDINGS: INVALIDJSON effusion."})
        + "\n"
    )
    cli("ingest", path, "--db", db)
    code, out, _ = cli(
        "label",
        "--db",
        db,
        "--backend",
        "openai",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "fake-model",
        "--dry-run",
    )
    assert code == 0 and "unique units" in out and "model calls needed" in out
    code, _, err = cli(
        "label", "--db", db, "--backend", "openai", "--base-url", "https://llm.example.com/v1", "--model", "m"
    )
    assert code == 1 and "needs --allow-remote" in err
    with FaultServer() as server:
        code, out, err = cli(
            "label",
            "--db",
            db,
            "--backend",
            "openai",
            "--base-url",
            server.base_url,
            "--model",
            "fake-model",
            "--name",
            "cli-run",
            "--max-retries",
            "0",
        )
    assert code == 4, err  # a report failed validation: the run is partial, not complete
    assert "run cli-run: partial" in out and "failed 1" in out and "clala failures cli-run" in out
    assert "1 of 2 reports failed validation" in out and "clala label --resume cli-run" in out
    code, out, _ = cli("runs", "list", "--db", db)
    assert code == 0 and "cli-run" in out and "fake-model" in out
    code, out, _ = cli("runs", "show", "cli-run", "--db", db)
    assert code == 0 and "prompt_sha256" in out and "done 1, failed 1" in out
    code, out, _ = cli("failures", "cli-run", "--db", db)
    assert code == 0 and "x2" in out and "{not json" in out


def test_unreachable_server_exits_3_with_resume_hint(tmp_path, cli):
    db = tmp_path / "c.duckdb"
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "x1", "text": "Left effusion."}) + "\n")
    cli("ingest", path, "--db", db)
    code, out, _ = cli(
        "label",
        "--db",
        db,
        "--backend",
        "openai",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--structured-output",
        "json_schema",
        "--name",
        "down",
        "--timeout",
        "1",
    )
    assert code == 3
    assert "incomplete" in out and "clala label --resume down" in out


def test_label_option_errors(tmp_path, cli):
    db = tmp_path / "c.duckdb"
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "x1", "text": "Left effusion."}) + "\n")
    cli("ingest", path, "--db", db)
    code, _, err = cli("label", "--db", db, "--name", "bad name!")
    assert code == 1 and "--name: run name 'bad name!'" in err
    code, _, err = cli("label", "--db", db, "--samples", "0")
    assert code == 1 and "invalid option" in err and "samples" in err
    code, _, err = cli("label", "--db", db, "--dataset", "nothing-here")
    assert code == 1 and "no reports to label" in err
    code, _, err = cli("label", "--db", db, "--backend", "openai")
    assert code == 1 and "needs --base-url and --model" in err


def test_failed_reports_exit_4_and_resume_retries_them(tmp_path, cli):
    from fault_server import FaultServer

    db = tmp_path / "c.duckdb"
    path = tmp_path / "r.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": rid, "text": text}) + "\n"
            for rid, text in [
                ("x1", "HTMLPAGE left effusion."),
                ("x2", "FIXONRETRY right effusion."),
                ("x3", "EXTRAFIELDS left effusion."),
            ]
        )
    )
    cli("ingest", path, "--db", db)
    with FaultServer() as server:
        args = ["--base-url", server.base_url, "--model", "fake-model", "--structured-output", "json_schema"]
        code, out, err = cli(
            "label", "--db", db, "--backend", "openai", *args, "--name", "p", "--max-retries", "0", "--timeout", "5"
        )
        assert code == 4, out + err
        assert "run p: partial" in out and "2 of 3 reports failed validation" in out
        assert "clala failures p" in out and "clala label --resume p" in out
        assert "keys outside the schema dropped from answers: 3" in out
        code, out, err = cli("label", "--db", db, "--resume", "p")
        assert code == 4, out + err  # the HTML page fails again; FIXONRETRY is done now
        assert "1 of 3 reports failed validation" in out
        code, out, _ = cli("label", "--db", db, "--resume", "p")
        assert code == 4 and "1 of 3 reports failed validation" in out
        code, out, _ = cli("label", "--db", db, "--resume", "p")  # tried three times: not again
        assert code == 4 and "clala label --resume" not in out
    code, out, _ = cli("runs", "show", "p", "--db", db)
    assert code == 0 and "partial" in out and "unknown_keys" in out and "done 2, failed 1" in out
    code, out, _ = cli("failures", "p", "--db", db)
    assert code == 0 and "tries" in out and "x1" in out and "x2" not in out  # x2 succeeded on retry
    assert "Failures of p (1)" in out
