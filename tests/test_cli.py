import json

from conftest import clala_subprocess


def test_quickstart_ingests_samples_and_prints_stats(tmp_path):
    result = clala_subprocess("quickstart", "--dir", tmp_path / "qs")
    assert result.returncode == 0, result.stderr
    assert "read 8; added 8" in result.stdout
    assert "samples" in result.stdout
    assert (tmp_path / "qs" / "clala.duckdb").exists()
    again = clala_subprocess("quickstart", "--dir", tmp_path / "qs")
    assert "added 0" in again.stdout and "unchanged 8" in again.stdout


def test_reports_list_show_stats(tmp_path, cli):
    db = tmp_path / "c.duckdb"
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "x1", "text": "FINDINGS: Right base opacity. No effusion."}) + "\n"
                    + json.dumps({"id": "x2", "text": "Lungs are clear."}) + "\n")
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
    assert "endotracheal tube" in json.loads(out.read_text())["$defs"]["StatementLabel"]["properties"]["finding"]["enum"]
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
