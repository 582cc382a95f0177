"""`clala sample`: review samples of a run's cells with their inclusion probabilities (uniform,
stratified by finding x predicted class, Poisson by audit suspicion), stored in the database and
written as Label Studio tasks, on real DuckDB files holding a synthetic cohort's gold and rules run."""

from __future__ import annotations

import csv
import json
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import labeled_cohort_db

from labeling.review.sample import (
    SampleRequest,
    allocate,
    draw_sample,
    poisson_probabilities,
    read_population,
    sample_run,
)
from labeling.store.store import Store
from schemas.vocabulary import load_vocabulary

VOCAB = load_vocabulary()


@pytest.fixture(scope="module")
def gold_db(tmp_path_factory) -> Path:
    """A 150-study synthetic cohort ingested, its gold imported (gold-report, gold-image) and labeled by the rules."""
    return labeled_cohort_db(tmp_path_factory.mktemp("sample"), 150, seed=3)


@pytest.fixture
def db(gold_db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "test.duckdb"
    shutil.copy(gold_db, copy)
    return copy


def expected_cells(store: Store, run: str) -> dict[tuple[int, str, str], str]:
    """Every (report, region, finding) cell of `run` counted independently: covered reports x
    allowed regions of the findings it labels at region level, with its label's status or unmentioned."""
    labels = [r for r in store.labels(run).to_pylist() if r["region"] is not None]
    findings = {r["finding"] for r in labels}
    status = {(r["report_key"], r["region"], r["finding"]): r["status"] for r in labels}
    return {
        (int(k), region, finding): status.get((int(k), region, finding), "unmentioned")
        for k in store.covered_reports(run)
        for finding in findings
        for region in VOCAB.region_names
        if VOCAB.allows(finding, region)
    }


def stored_sample(store: Store, sample_id: int) -> list[dict]:
    return store.sample_cells(sample_id).to_pylist()


def test_population_is_every_allowed_region_cell_with_the_runs_class(db: Path):
    with Store(db, read_only=True) as store:
        expected = expected_cells(store, "rules")
        population = read_population(store, "rules", VOCAB)
    got = {
        (int(k), r, f): c
        for k, r, f, c in zip(population.report_keys, population.regions, population.findings, population.predicted)
    }
    assert population.size == len(got) == len(expected) > 10_000
    assert got == expected
    assert {"present", "absent", "unmentioned"} <= set(got.values())


def test_uniform_sample_pi_is_n_over_N_and_the_seed_fixes_it(db: Path):
    with Store(db) as store:
        population = read_population(store, "rules", VOCAB)
        first = sample_run(store, SampleRequest(run="rules", n=300, strategy="uniform", seed=7), VOCAB)
        again = sample_run(store, SampleRequest(run="rules", n=300, strategy="uniform", seed=7), VOCAB)
        other = sample_run(store, SampleRequest(run="rules", n=300, strategy="uniform", seed=8), VOCAB)
        cells = [stored_sample(store, s.sample_id) for s in (first, again, other)]  # type: ignore[arg-type]
        row = store.sample(first.sample_id)  # type: ignore[arg-type]
    pi = np.array([c["inclusion_probability"] for c in cells[0]])
    assert len(cells[0]) == 300 and row["n"] == 300 and row["strategy"] == "uniform" and row["seed"] == 7
    # pi summed over the population is n; the weights 1/pi of the sample add up to the population
    assert np.allclose(pi, 300 / population.size) and pi[0] * population.size == pytest.approx(300)
    assert (1 / pi).sum() == pytest.approx(population.size)
    key = [(c["report_key"], c["region"], c["finding"]) for c in cells[0]]
    assert len(set(key)) == 300  # without replacement
    assert cells[0] == cells[1]
    assert key != [(c["report_key"], c["region"], c["finding"]) for c in cells[2]]


def test_stratified_sample_takes_every_stratum_and_pi_matches_it(db: Path):
    with Store(db) as store:
        expected = expected_cells(store, "rules")
        sample = sample_run(store, SampleRequest(run="rules", n=200, strategy="stratified", seed=1), VOCAB)
        cells = stored_sample(store, sample.sample_id)  # type: ignore[arg-type]
    sizes = Counter(f"{finding} | {status}" for (_, _, finding), status in expected.items())
    taken = Counter(c["stratum"] for c in cells)
    assert set(taken) == set(sizes)  # one cell of every stratum at least
    for c in cells:
        assert expected[(c["report_key"], c["region"], c["finding"])] == c["predicted"]
        assert c["stratum"] == f"{c['finding']} | {c['predicted']}"
        assert c["inclusion_probability"] == pytest.approx(taken[c["stratum"]] / sizes[c["stratum"]])
    pi = np.array([c["inclusion_probability"] for c in cells])
    assert len(cells) == 200 and (1 / pi).sum() == pytest.approx(len(expected))  # the weights add up to N
    # over the population, the inclusion probabilities add up to n: sum_h N_h * pi_h = n
    pi_of = {c["stratum"]: c["inclusion_probability"] for c in cells}
    assert sum(sizes[h] * pi_of[h] for h in sizes) == pytest.approx(200)
    present = sum(n for h, n in taken.items() if h.endswith("| present"))
    assert present == 100  # the default present share, 0.5
    assert max(c["inclusion_probability"] for c in cells if c["predicted"] == "present") > 10 * min(pi)


def test_allocation_is_proportional_with_one_each_and_caps():
    counts = allocate(10, np.array([1, 1, 100, 300]))
    assert counts.tolist() == [1, 1, 2, 6]  # one each, then 6 more as 100 : 300 (1.5 : 4.5, remainders to the larger)
    assert allocate(7, np.array([2, 2, 3])).tolist() == [2, 2, 3]  # every cell
    capped = allocate(50, np.array([3, 1000, 1000]))
    assert capped.sum() == 50 and capped[0] <= 3 and abs(int(capped[1]) - int(capped[2])) <= 1


def test_suspicion_probabilities_follow_the_queue_with_a_floor(db: Path, tmp_path: Path):
    with Store(db) as store:
        population = read_population(store, "rules", VOCAB)
        queue = tmp_path / "queue.csv"
        suspicious = np.random.default_rng(0).choice(population.size, 40, replace=False)
        with queue.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["rank", "report_key", "region", "finding", "suspicion", "reason"])
            for rank, i in enumerate(suspicious):
                writer.writerow(
                    [
                        rank,
                        population.report_keys[i],
                        population.regions[i],
                        population.findings[i],
                        1.0 - rank / 100,
                        "test",
                    ]
                )
            writer.writerow([99, population.report_keys[0], "", population.findings[0], 0.9, "image level: ignored"])
        request = SampleRequest(run="rules", n=60, strategy="suspicion", seed=2, suspicion=queue, floor=0.2)
        sample = sample_run(store, request, VOCAB)
        cells = stored_sample(store, sample.sample_id)  # type: ignore[arg-type]
    scores = np.zeros(population.size)
    scores[suspicious] = 1.0 - np.arange(40) / 100
    pi = poisson_probabilities(scores, 60, 0.2)
    assert pi.sum() == pytest.approx(60) and pi.max() <= 1 and pi.min() > 0
    # the 40 queued cells would get more than 1 each: they are certain, the rest spread over the others
    assert np.all(pi[suspicious] == 1) and pi.min() == pytest.approx(20 / (population.size - 40))
    small = poisson_probabilities(scores, 10, 0.2)  # nothing capped
    assert small.min() == pytest.approx(10 * 0.2 / population.size)  # the floor of an unscored cell
    assert small[suspicious] == pytest.approx(10 * (0.8 * scores[suspicious] / scores.sum() + 0.2 / population.size))
    position = {
        (int(k), r, f): i
        for i, (k, r, f) in enumerate(zip(population.report_keys, population.regions, population.findings))
    }
    for c in cells:
        assert c["inclusion_probability"] == pytest.approx(pi[position[(c["report_key"], c["region"], c["finding"])]])
    drawn = {position[(c["report_key"], c["region"], c["finding"])] for c in cells}
    assert len(drawn & set(suspicious.tolist())) >= 20  # about 48 of the 60 expected come from the queue
    sizes = [len(draw_sample(population, SampleRequest(**{**request.__dict__, "seed": s})).index) for s in range(20)]
    assert 50 < np.mean(sizes) < 70  # n on average


def test_cli_sample_writes_label_studio_tasks_and_the_cells(db: Path, tmp_path: Path, cli):
    out = tmp_path / "review"
    code, stdout, stderr = cli("sample", "rules", "--n", "80", "--seed", "4", "--out", out, "--db", db)
    assert code == 0, stderr
    assert "sample 1 of run rules (stratified, seed 4): 80 of" in stdout
    tasks = json.loads((out / "tasks.json").read_text())
    with Store(db, read_only=True) as store:
        cells = stored_sample(store, 1)
        rules = store.labels("rules").to_pylist()
    sampled_reports = sorted({c["report_key"] for c in cells})
    assert [t["data"]["report_key"] for t in tasks] == sampled_reports
    for task in tasks:
        data = task["data"]
        assert data["sample_id"] == 1 and data["text"] and data["report_id"]
        checks = data["check"].split("\n")
        assert sorted(checks) == sorted(
            f"{c['finding']} | {c['region']}" for c in cells if c["report_key"] == data["report_key"]
        )
        prediction = task["predictions"][0]
        assert prediction["model_version"] == "rules"
        findings = [r["value"]["labels"][0] for r in prediction["result"] if r["from_name"] == "finding"]
        assert sorted(findings) == sorted(r["finding"] for r in rules if r["report_key"] == data["report_key"])
    config = ET.fromstring((out / "labeling_config.xml").read_text())
    assert any("$check" in (h.get("value") or "") for h in config.iter("Header"))
    assert {e.get("name") for e in config.iter("Text")} == {"text"}
    with (out / "sample_cells.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 80
    assert sorted(float(r["inclusion_probability"]) for r in rows) == sorted(c["inclusion_probability"] for c in cells)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--n", "5"], "no run named 'nope'"),
        (["rules", "--n", "100000"], "--n: 100,000 is more than the 25,050 cells of run 'rules'"),
        (["rules", "--n", "10"], "--n: 10 is fewer than the"),
        (["rules", "--n", "10", "--strategy", "random"], "--strategy: 'random' is not one of"),
        (["rules", "--n", "10", "--strategy", "suspicion"], "--suspicion: the suspicion strategy needs"),
        (["rules", "--n", "0"], "--n: must be at least 1"),
        (["rules", "--n", "60", "--strategy", "suspicion", "--suspicion", "QUEUE"], "no column 'suspicion'"),
        (["rules", "--n", "60", "--strategy", "uniform", "--out", "FILE"], "is a file; give a folder"),
    ],
)
def test_bad_input_is_one_line_and_stores_nothing(db: Path, tmp_path: Path, cli, args, message):
    queue = tmp_path / "queue.csv"
    queue.write_text("report_key,region,finding,score\n1,left lung,pneumothorax,0.5\n")
    file = tmp_path / "file.txt"
    file.write_text("x")
    args = [str(queue) if a == "QUEUE" else str(file) if a == "FILE" else a for a in args]
    code, stdout, stderr = cli("sample", *args, "--db", db)
    assert code == 1 and stdout == ""
    assert message in stderr and len(stderr.strip().splitlines()) == 1
    with Store(db, read_only=True) as store:
        assert store.run_samples(store.run("rules").run_id) == []
