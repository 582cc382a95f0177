"""`clala quickstart` end to end in its tiny setting (`--small --no-llm`): every step's result is
where the summary says, with values that could be wrong checked; a second run redoes nothing. The
full path with the embedded local LLM is the slow test."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from labeling.store.store import Store
from model.reports.writer import generated_reports


def _mean_row(path):
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle)][-1]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    from typer.testing import CliRunner

    from cli import app

    workdir = tmp_path_factory.mktemp("qs") / "scratch"
    first = CliRunner().invoke(
        app, ["quickstart", "--workdir", str(workdir), "--small", "--no-llm"], catch_exceptions=False
    )
    assert first.exit_code == 0, first.stdout + first.stderr
    return workdir, first.stdout


def test_every_step_leaves_its_result_where_the_summary_says(quickstart):
    workdir, out = quickstart
    db = workdir / "clala.duckdb"
    assert "skipped (--no-llm)" in out and "clala quickstart in" in out
    with Store(db, read_only=True) as store:
        runs = {run.name: run for run in store.runs()}
        experiments = store.experiments()
        cohort_reports = store.con.execute("SELECT count(*) FROM reports WHERE dataset = 'mimic-cxr'").fetchall()[0][0]
        generated = generated_reports(store, "quickstart")
    assert cohort_reports == 60
    assert {"rules", "gold-report", "gold-image"} <= set(runs) and "llm-local" not in runs
    assert all(runs[name].status.value == "complete" for name in ("rules", "gold-report", "gold-image"))
    trained = {e["name"]: e for e in experiments if e["name"].startswith("quickstart-")}
    assert set(trained) == {"quickstart-gold-report", "quickstart-rules"}
    assert all(
        e["status"] == "complete" and e["label_spec"]["run"] == e["name"][len("quickstart-") :]
        for e in trained.values()
    )

    heatmap = workdir / "results" / "compare" / "compare_rules_vs_gold-report_region_f1.png"
    with Image.open(heatmap) as image:
        assert image.format == "PNG"
    assert heatmap.name in out
    for run in ("gold-report", "rules"):
        assert (workdir / "models" / run / "best.pt").is_file()
        mean = _mean_row(workdir / "results" / f"eval_{run}_vs_gold-report.csv")
        assert 0 <= float(mean["f1"]) <= 1 and 0 < float(mean["baseline_f1"]) < 1
        assert f"mean lesion F1 {float(mean['f1']):.3f}" in out

    assert len(generated) == 4
    for row in generated:
        assert row["text"].startswith("FINDINGS: ") and "\n\nIMPRESSION: " in row["text"]
        assert row["metadata"]["aggregator"] == "fallback" and row["source_report_key"] is not None
    scores = json.loads((workdir / "results" / "quickstart.scores.json").read_text())
    assert scores["reports"] == scores["aligned"] == 4 and 0 <= scores["rouge_l"] <= 1


def test_second_run_redoes_nothing(quickstart, cli):
    workdir, _ = quickstart
    db = workdir / "clala.duckdb"
    with Store(db, read_only=True) as store:
        before = {k: v for k, v in store.table_counts().items() if k != "ingests"}  # each ingest is logged
    checkpoints = {p: p.stat().st_mtime_ns for p in (workdir / "models").glob("*/*.pt")}
    code, out, err = cli("quickstart", "--workdir", workdir, "--small", "--no-llm")
    assert code == 0, err
    for line in (
        "cohort already written",
        "added 0",
        "already labeled: run rules",
        "already imported",
        "already trained",
        "already generated: 4 reports",
        "already scored",
    ):
        assert line in out, line
    with Store(db, read_only=True) as store:
        assert {k: v for k, v in store.table_counts().items() if k != "ingests"} == before
    assert {p: p.stat().st_mtime_ns for p in (workdir / "models").glob("*/*.pt")} == checkpoints


def _summary_row(out: str, step: str) -> str:
    """The summary table's row for `step`, its wrapped cells joined."""
    lines = out.splitlines()
    title = max(i for i, line in enumerate(lines) if "clala quickstart in" in line)
    start = next(i for i, line in enumerate(lines) if i > title and line.startswith("│ " + step))
    row = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("│") or line.split("│")[1].strip():
            break
        row.append(line)
    cells = [" ".join(part.split("│")[k].strip() for part in row).strip() for k in range(1, 5)]
    return " | ".join(cells)


@pytest.mark.slow
def test_quickstart_with_the_embedded_local_llm(tmp_path, cli):
    code, out, err = cli("quickstart", "--workdir", tmp_path / "qs", "--small", "--llm-aggregator")
    assert code == 0, out + err
    assert "run llm-local: complete" in out  # labeled through the embedded llama.cpp server
    with Store(tmp_path / "qs" / "clala.duckdb", read_only=True) as store:
        assert len(store.covered_reports("llm-local")) == 2
        run = store.run("llm-local")
        labels = sum(store.label_status_counts(run.run_id).values())
        rejected = store.rejection_counts(run.run_id)
        generated = generated_reports(store, "quickstart")
    row = _summary_row(out, "llm-local")
    assert row.startswith("llm-local (embedded LLM) | ok | complete: 2 of 2 reports done, ")
    assert f"{labels} labels stored, {sum(rejected.values())} rejected" in row
    assert all(f"{reason} {n}" in row for reason, n in rejected.items())
    assert "quickstart not complete" not in out and "done in" in out
    # Every report went to the LLM aggregator (the tiny base model's answer may still fail
    # validation, and then that report falls back, with the error kept).
    assert len(generated) == 4
    for row in generated:
        meta = row["metadata"]
        assert meta["prompt_name"] == "report_aggregator" and meta["prompt_sha256"]
        assert meta["aggregator"].startswith("llm:") or (meta["aggregator"] == "fallback" and meta["llm_error"])


@pytest.mark.slow
def test_quickstart_fails_loudly_when_its_llm_server_dies(tmp_path):
    """Pulling the rug: the llama.cpp server the quickstart started is killed (SIGSEGV, as a CPU
    the build cannot run does) during the LLM step. The other steps still run; the summary marks
    the step FAILED with the crash and the command that finishes it; the exit code is 3, never 0.
    That command then finishes the run, and the next quickstart passes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from test_local_backend import _server_child

    pytest.importorskip("xllamacpp")
    workdir = tmp_path / "qs"
    quickstart = subprocess.Popen(
        [sys.executable, "-c", "from cli import app; app()", "quickstart", "--workdir", str(workdir), "--small"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    server = _server_child(quickstart.pid, timeout=300)
    time.sleep(2.0)  # started, answering its first calls
    os.kill(server, signal.SIGSEGV)
    out, err = quickstart.communicate(timeout=900)
    assert quickstart.returncode == 3, out + err
    row = _summary_row(out, "llm-local")
    assert row.startswith("llm-local (embedded LLM) | FAILED | ")
    assert f"the local llama.cpp server (pid {server}) was killed by signal 11 (SIGSEGV)" in row
    finish_line = f"to finish llm-local (embedded LLM): clala label --resume llm-local --db {workdir / 'clala.duckdb'}"
    assert finish_line in out.splitlines()
    assert "".join(row.split()).endswith("".join(finish_line.split(": ", 1)[1].split()))
    assert "quickstart not complete: 1 step(s) failed (llm-local (embedded LLM))" in " ".join(out.split())
    assert "done in" not in out
    assert "unreachable" not in row
    # the rest of the mission ran all the same
    assert _summary_row(out, "report scores").split(" | ")[1] == "ok"
    assert (workdir / "results" / "quickstart.scores.json").is_file()

    finish = subprocess.run(
        [sys.executable, "-c", "from cli import app; app()", *finish_line.split(": ", 1)[1].split()[1:]],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finish.returncode == 0, finish.stdout + finish.stderr
    again = subprocess.run(
        [sys.executable, "-c", "from cli import app; app()", "quickstart", "--workdir", str(workdir), "--small"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert _summary_row(again.stdout, "llm-local").startswith("llm-local (embedded LLM) | ok | complete: 2 of 2")
