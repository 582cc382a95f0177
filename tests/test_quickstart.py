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


@pytest.mark.slow
def test_quickstart_with_the_embedded_local_llm(tmp_path, cli):
    code, out, err = cli("quickstart", "--workdir", tmp_path / "qs", "--small", "--llm-aggregator")
    assert code == 0, err
    assert "run llm-local: complete" in out  # labeled through the embedded llama.cpp server
    with Store(tmp_path / "qs" / "clala.duckdb", read_only=True) as store:
        assert len(store.covered_reports("llm-local")) == 2
        generated = generated_reports(store, "quickstart")
    # Every report went to the LLM aggregator (the tiny base model's answer may still fail
    # validation, and then that report falls back, with the error kept).
    assert len(generated) == 4
    for row in generated:
        meta = row["metadata"]
        assert meta["prompt_name"] == "report_aggregator" and meta["prompt_sha256"]
        assert meta["aggregator"].startswith("llm:") or (meta["aggregator"] == "fallback" and meta["llm_error"])
