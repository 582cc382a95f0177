"""`clala estimate`: a run's precision, recall and F1 from a reviewed sample of its cells
(Horvitz-Thompson weights, Wilson and design-bootstrap intervals), stored with the run and shown
by `clala runs show`, on real DuckDB files holding a synthetic cohort's gold and rules run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import labeled_cohort_db
from scipy.stats import binomtest

from labeling.review.estimate import EstimateRequest, estimate_run, wilson_interval
from labeling.review.sample import SampleRequest, read_population, sample_run
from labeling.store.run_records import record_run
from labeling.store.store import Store
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import load_vocabulary

VOCAB = load_vocabulary()


@pytest.fixture(scope="module")
def gold_db(tmp_path_factory) -> Path:
    """A 150-study synthetic cohort ingested, its gold imported (gold-report, gold-image) and labeled by the rules."""
    return labeled_cohort_db(tmp_path_factory.mktemp("estimate"), 150, seed=3)


@pytest.fixture
def db(gold_db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "test.duckdb"
    shutil.copy(gold_db, copy)
    return copy


def exact_quality(store: Store, uncertain: str = "negative") -> dict[str, float]:
    """The rules run's exact P, R, F1 over all its region cells against the gold, counted from the
    two runs' labels (a label's absence is not present)."""
    positive = {"present", "uncertain"} if uncertain == "positive" else {"present"}

    def cells(run: str) -> set[tuple]:
        return {
            (r["report_key"], r["region"], r["finding"])
            for r in store.labels(run).to_pylist()
            if r["region"] is not None and r["status"] in positive
        }

    findings = set(store.run_findings("rules", region_level=True))
    ours = cells("rules")
    truth = {c for c in cells("gold-report") if c[2] in findings and VOCAB.allows(c[2], c[1])}
    tp, fp, fn = len(ours & truth), len(ours - truth), len(truth - ours)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
        "f1": 2 * tp / (2 * tp + fp + fn),
    }


@pytest.mark.parametrize("strategy", ["uniform", "stratified"])
@pytest.mark.parametrize("uncertain", ["negative", "positive"])
def test_the_whole_population_reviewed_gives_the_exact_quality(db: Path, strategy: str, uncertain: str):
    with Store(db) as store:
        exact = exact_quality(store, uncertain)
        everything = read_population(store, "rules", VOCAB).size
        sample_run(store, SampleRequest(run="rules", n=everything, strategy=strategy), VOCAB)
        request = EstimateRequest(run="rules", reviewed="gold-report", uncertain=uncertain, replicates=50)
        result = estimate_run(store, request).result
    overall = result["overall"]
    assert overall["sampled"] == {"cells": everything, **{k: exact[k] for k in ("tp", "fp", "fn")}}
    assert exact["fp"] + exact["fn"] > 0  # the rules are not perfect here, so the figures can differ
    for metric in ("precision", "recall", "f1"):
        assert overall[metric]["estimate"] == pytest.approx(exact[metric])
        # every cell is certain (pi = 1): the bootstrap has nothing to vary
        assert overall[metric]["bootstrap"] == pytest.approx([exact[metric]] * 2)
    assert result["uncertain"] == uncertain and result["population"] == everything


def test_the_interval_covers_the_truth_in_most_seeds_and_the_estimate_is_unbiased(db: Path):
    """30 stratified samples of 150 cells, reviewed by the gold: the 95 % Wilson interval holds the
    exact F1 in most of them, and the mean of the HT estimate of TP is close to the true TP."""
    with Store(db) as store:
        exact = exact_quality(store)
        covered_wilson = covered_bootstrap = 0
        tp_estimates = []
        for seed in range(30):
            sample = sample_run(store, SampleRequest(run="rules", n=150, strategy="stratified", seed=seed), VOCAB)
            request = EstimateRequest(run="rules", reviewed="gold-report", replicates=200, seed=seed)
            result = estimate_run(store, request).result
            assert result["sample_id"] == sample.sample_id
            f1 = result["overall"]["f1"]
            covered_wilson += f1["wilson"][0] <= exact["f1"] <= f1["wilson"][1]
            covered_bootstrap += f1["bootstrap"][0] <= exact["f1"] <= f1["bootstrap"][1]
            tp_estimates.append(result["overall"]["estimated"]["tp"])
        assert len(store.run_estimates(store.run("rules").run_id)) == 30
    assert covered_wilson >= 25
    assert covered_bootstrap >= 18
    assert np.mean(tp_estimates) == pytest.approx(exact["tp"], rel=0.1)


def test_wilson_with_equal_weights_is_scipys_wilson():
    for k, n in [(0, 12), (3, 12), (12, 12), (47, 200)]:
        ours = wilson_interval(k / n, n, 0.95)
        theirs = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert ours == pytest.approx((theirs.low, theirs.high), abs=1e-9)
    assert wilson_interval(float("nan"), 0, 0.95) == (0.0, 1.0)


def partial_review(store: Store, name: str, keep: float) -> None:
    """A reviewed run that covers only the first `keep` share of the reports (the gold's labels there)."""
    keys = store.covered_reports("gold-report").tolist()
    kept = set(keys[: int(len(keys) * keep)])
    rows = [r for r in store.labels("gold-report").to_pylist() if r["report_key"] in kept]
    columns = {c: [r[c] for r in rows] for c in ("report_key", "region", "finding", "status")}
    spec = RunSpec(name=name, kind=RunKind.human, vocabulary_version=VOCAB.version, backend="test")
    record_run(store, spec, sorted(kept), pa.table(columns))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rules", "--reviewed", "gold-report"], "run 'rules' has no sample; draw one first"),
        (["nope", "--reviewed", "gold-report"], "no run named 'nope'"),
        (["rules", "--reviewed", "nope"], "no run named 'nope'"),
        (["rules", "--reviewed", "half", "--sample", "SAMPLE"], "reviewed run 'half' does not cover"),
        (["rules", "--reviewed", "gold-report", "--sample", "99"], "no sample with id 99"),
        (["rules", "--reviewed", "gold-report", "--sample", "OTHER"], "is a sample of another run"),
        (["rules", "--reviewed", "rules", "--sample", "SAMPLE"], "is the run being estimated"),
        (["rules", "--reviewed", "gold-report", "--interval", "exact"], "--interval: 'exact' is not one of"),
        (["rules", "--reviewed", "gold-report", "--uncertain", "maybe"], "--uncertain: 'maybe' is not one of"),
    ],
)
def test_bad_input_is_one_line_and_stores_nothing(db: Path, cli, args, message):
    with Store(db) as store:
        partial_review(store, "half", 0.5)
        sample_id = other_id = None
        if "SAMPLE" in args or "OTHER" in args:
            sample_id = sample_run(store, SampleRequest(run="rules", n=120, seed=0), VOCAB).sample_id
            other = SampleRequest(run="gold-report", n=120, strategy="uniform", seed=0)
            other_id = sample_run(store, other, VOCAB).sample_id
    args = [str(sample_id) if a == "SAMPLE" else str(other_id) if a == "OTHER" else a for a in args]
    code, stdout, stderr = cli("estimate", *args, "--db", db)
    assert code == 1 and stdout == ""
    assert message in stderr and len(stderr.strip().splitlines()) == 1
    with Store(db, read_only=True) as store:
        assert store.run_estimates(store.run("rules").run_id) == []


def test_the_missing_reports_are_counted(db: Path, cli):
    with Store(db) as store:
        partial_review(store, "half", 0.5)
        sample = sample_run(store, SampleRequest(run="rules", n=120, seed=0), VOCAB)
        cells = store.sample_cells(sample.sample_id).to_pylist()  # type: ignore[arg-type]
        covered = set(store.covered_reports("half").tolist())
    missing = {c["report_key"] for c in cells} - covered
    missing_cells = sum(c["report_key"] not in covered for c in cells)
    reports = len({c["report_key"] for c in cells})
    code, _, stderr = cli("estimate", "rules", "--reviewed", "half", "--db", db)
    assert code == 1
    assert f"does not cover {len(missing)} of the {reports} sampled reports ({missing_cells} of 120 sampled cells)" in (
        " ".join(stderr.split())
    )


def annotate_as_predicted(tasks: list[dict]) -> list[dict]:
    """Label Studio's JSON export of tasks a reviewer accepted unchanged: each prediction as the annotation."""
    exported = []
    for number, task in enumerate(tasks, start=1):
        prediction = task["predictions"][0]
        result = [{**item, "origin": "manual"} for item in prediction["result"]]
        annotation = {
            "id": number,
            "result": result,
            "was_cancelled": False,
            "prediction": prediction,
            "created_at": "2026-12-02T10:00:00Z",
        }
        exported.append({"id": number, "data": task["data"], "annotations": [annotation], "predictions": [number]})
    return exported


def test_cli_round_trip_sample_review_import_estimate_show(db: Path, tmp_path: Path, cli):
    out = tmp_path / "review"
    code, _, stderr = cli("sample", "rules", "--n", "100", "--seed", "5", "--out", out, "--db", db)
    assert code == 0, stderr
    tasks = json.loads((out / "tasks.json").read_text())
    assert isinstance(tasks, list) and all({"data", "predictions"} <= set(t) for t in tasks)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(annotate_as_predicted(tasks)))
    code, _, stderr = cli("import", "labelstudio", export, "--name", "reviewed", "--db", db)
    assert code == 0, stderr

    # reviewers who accept every prediction make the run perfect on its sample
    code, stdout, stderr = cli("estimate", "rules", "--reviewed", "reviewed", "--db", db)
    assert code == 0, stderr
    with Store(db, read_only=True) as store:
        first = store.run_estimates(store.run("rules").run_id)[0]["result"]
    assert first["overall"]["sampled"]["fp"] == first["overall"]["sampled"]["fn"] == 0
    assert first["overall"]["f1"]["estimate"] == 1.0 and first["overall"]["f1"]["wilson"][0] < 1.0
    assert "overall (micro)" in stdout and "1.000 [" in stdout

    # the gold as the reviewer
    code, stdout, stderr = cli("estimate", "rules", "--reviewed", "gold-report", "--interval", "bootstrap", "--db", db)
    assert code == 0, stderr
    with Store(db, read_only=True) as store:
        exact = exact_quality(store)
        second = store.run_estimates(store.run("rules").run_id)[1]
    f1 = second["result"]["overall"]["f1"]
    assert second["reviewed_run"] == "gold-report" and second["strategy"] == "stratified"
    assert f1["estimate"] < 1.0 or exact["f1"] == 1.0
    code, stdout, _ = cli("runs", "show", "rules", "--db", db)
    assert code == 0
    assert "Estimates from reviewed samples" in stdout
    assert "reviewed" in stdout and "gold-report" in stdout
    assert f"{f1['estimate']:.3f} [{f1['wilson'][0]:.3f}, {f1['wilson'][1]:.3f}]" in stdout


def test_a_suspicion_sample_from_a_good_audit_finds_the_errors_and_stays_unbiased(db: Path, tmp_path: Path):
    """An audit queue (JSONL) that puts the cells where the rules and the gold disagree first: the
    Poisson sample holds mostly errors, yet the weighted estimate still recovers the exact F1."""
    with Store(db) as store:
        exact = exact_quality(store)
        population = read_population(store, "rules", VOCAB)
        truth = {
            (r["report_key"], r["region"], r["finding"])
            for r in store.labels("gold-report").to_pylist()
            if r["status"] == "present"
        }
        queue = tmp_path / "queue.jsonl"
        with queue.open("w") as handle:
            for key, region, finding, predicted in zip(
                population.report_keys, population.regions, population.findings, population.predicted
            ):
                wrong = ((int(key), region, finding) in truth) != (predicted == "present")
                if wrong or predicted == "present":
                    row = {
                        "report_key": int(key),
                        "region": region,
                        "finding": finding,
                        "suspicion": 0.9 if wrong else 0.1,
                    }
                    handle.write(json.dumps(row) + "\n")
        estimates, covered, errors = [], 0, 0
        for seed in range(10):
            request = SampleRequest(run="rules", n=120, strategy="suspicion", suspicion=queue, seed=seed)
            sample_run(store, request, VOCAB)
            result = estimate_run(store, EstimateRequest(run="rules", reviewed="gold-report", replicates=200)).result
            f1 = result["overall"]["f1"]
            estimates.append(f1["estimate"])
            covered += f1["wilson"][0] <= exact["f1"] <= f1["wilson"][1]
            errors += result["overall"]["sampled"]["fp"] + result["overall"]["sampled"]["fn"]
            assert result["strategy"] == "suspicion"
    assert errors / 10 > 10  # a uniform sample of 120 of these cells holds about 0.2 errors
    assert abs(np.mean(estimates) - exact["f1"]) < 0.05
    assert covered >= 7
