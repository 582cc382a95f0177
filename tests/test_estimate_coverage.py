"""`clala estimate`'s beta interval on a run that is actually imperfect (made by `clala derive` from
a synthetic cohort's gold, in a real DuckDB file): it holds the exact precision, recall and F1 in
most seeds where the older Wilson interval does not, a sample that cannot bound recall says so in
one line with how many more cells to review, a one-stratum interval is Clopper-Pearson's, and a
suspicion (Poisson) sample's interval holds too."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import labeled_cohort_db
from scipy.stats import binomtest
from typer.testing import CliRunner

from labeling.review.estimate import EstimateRequest, Strata, beta_intervals, estimate_run
from labeling.review.sample import SampleRequest, population_codes, read_population, sample_run
from labeling.store.store import Store
from schemas.labels import PRESENT
from schemas.vocabulary import load_vocabulary

VOCAB = load_vocabulary()


@pytest.fixture(scope="module")
def noisy_db(tmp_path_factory) -> Path:
    """A 300-study cohort's gold and rules run, and run noisy: the gold with 20 % of present cells
    dropped and 0.2 % of allowed cells added (`clala derive`)."""
    from cli import app

    db = labeled_cohort_db(tmp_path_factory.mktemp("coverage"), 300, seed=4)
    args = ["derive", "gold-report", "--name", "noisy", "--drop", "0.2", "--add", "0.002", "--seed", "5", "--db", db]
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return db


@pytest.fixture
def db(noisy_db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "test.duckdb"
    shutil.copy(noisy_db, copy)
    return copy


def exact(store: Store, run: str) -> dict[str, float]:
    """The run's exact precision, recall, F1 over its whole population against the gold."""
    population = read_population(store, run, VOCAB)
    truth = population_codes(store, population, "gold-report") == PRESENT
    predicted = population.predicted == "present"
    tp, fp, fn = (predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()
    return {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn), "fn": fn}


def test_the_beta_interval_holds_an_imperfect_runs_recall_and_f1_where_wilson_does_not(db: Path):
    with Store(db) as store:
        truth = exact(store, "noisy")
        assert 0.7 < truth["f1"] < 0.9 and truth["fn"] > 20  # imperfect: misses hide among the absent cells
        held = {(m, k): 0 for m in ("precision", "recall", "f1") for k in ("beta", "wilson")}
        for seed in range(20):
            sample_run(store, SampleRequest(run="noisy", n=200, strategy="stratified", seed=seed), VOCAB)
            overall = estimate_run(store, EstimateRequest(run="noisy", reviewed="gold-report", seed=seed)).result
            for metric, method in held:
                low, high = overall["overall"][metric][method]
                held[metric, method] += low <= truth[metric] <= high
    assert held["recall", "beta"] >= 17 and held["f1", "beta"] >= 17 and held["precision", "beta"] >= 17
    # the Wilson interval at Kish's n claims recall near 1 from a sample that saw almost no miss
    assert held["recall", "wilson"] <= 10


def test_a_sample_that_cannot_bound_recall_says_so_and_how_many_more_cells(db: Path, cli):
    code, _, stderr = cli("sample", "noisy", "--n", "200", "--seed", "1", "--db", db)
    assert code == 0, stderr
    code, stdout, stderr = cli("estimate", "noisy", "--reviewed", "gold-report", "--db", db)
    assert code == 0, stderr
    lines = [" ".join(line.split()) for line in stdout.splitlines() if "cannot be bounded" in line]
    with Store(db, read_only=True) as store:
        result = store.run_estimates(store.run("noisy").run_id)[0]["result"]
    recall = next(c for c in result["cannot_tell"] if c["metric"] == "recall")
    low = result["overall"]["recall"]["beta"][0]
    assert recall["message"].startswith(f"recall cannot be bounded below {low:.2f} with this sample")
    assert "predicted-negative cells" in recall["message"] and recall["more_cells"] > 100
    assert any(line.startswith("recall cannot be bounded below") for line in lines)

    # reviewing the suggested number more (a bigger sample, same proportions) narrows the interval
    n = 200 + recall["more_cells"]
    code, _, stderr = cli("sample", "noisy", "--n", str(n), "--seed", "2", "--present-share", "0.05", "--db", db)
    assert code == 0, stderr
    code, stdout, stderr = cli("estimate", "noisy", "--reviewed", "gold-report", "--db", db)
    assert code == 0, stderr
    with Store(db, read_only=True) as store:
        bigger = store.run_estimates(store.run("noisy").run_id)[1]["result"]
    width = np.diff(bigger["overall"]["recall"]["beta"])[0]
    assert width < np.diff(result["overall"]["recall"]["beta"])[0] / 2


def test_one_stratum_gives_clopper_pearson():
    """A single predicted-positive stratum far larger than its sample: precision's interval is the
    exact binomial interval of the sample's true positives (up to the simulation's noise)."""
    for x, n in [(15, 20), (0, 30), (30, 30), (47, 200)]:
        strata = Strata(
            names=np.array(["present"], dtype=object),
            cells=np.array([1e9]),
            sampled=np.array([float(n)]),
            events=np.array([float(x)]),
            positive=np.array([True]),
            equal=np.array([True]),
        )
        low, high = beta_intervals(strata, 0.95, 20000, seed=0)["precision"]
        theirs = binomtest(x, n).proportion_ci(confidence_level=0.95, method="exact")
        assert low == pytest.approx(theirs.low, abs=0.01) and high == pytest.approx(theirs.high, abs=0.01)


def test_suspect_strata_find_the_misses_and_the_estimate_stays_unbiased(db: Path, cli):
    """Stratified by whether the rules run marks a predicted-negative cell present: the sample
    holds many misses, and the weighted recall is close to the exact one."""
    recalls, misses = [], 0
    with Store(db) as store:
        truth = exact(store, "noisy")
    for seed in range(8):
        code, _, stderr = cli("sample", "noisy", "--n", "200", "--seed", seed, "--suspect", "rules", "--db", db)
        assert code == 0, stderr
        code, _, stderr = cli("estimate", "noisy", "--reviewed", "gold-report", "--db", db)
        assert code == 0, stderr
    with Store(db, read_only=True) as store:
        estimates = store.run_estimates(store.run("noisy").run_id)
        for row in estimates:
            overall = row["result"]["overall"]
            recalls.append(overall["recall"]["estimate"])
            misses += overall["sampled"]["fn"]
            low, high = overall["recall"]["beta"]
            assert low <= truth["recall"] <= high
        latest = store.latest_sample(store.run("noisy").run_id)
        assert latest is not None and latest["params"]["suspect_run"] == "rules"
        cells = store.sample_cells(latest["sample_id"]).to_pylist()
    assert any(c["stratum"].endswith(" | suspect") for c in cells)
    assert misses / 8 > 10  # a stratified sample without --suspect sees about one miss in 200
    assert abs(np.mean(recalls) - truth["recall"]) < 0.08


def test_suspect_input_errors_are_one_line(db: Path, cli):
    for args, message in [
        (["--strategy", "uniform", "--suspect", "rules"], "--suspect: only the stratified strategy"),
        (["--suspect", "noisy"], "--suspect: run 'noisy' is the run being sampled"),
        (["--suspect", "nope"], "no run named 'nope'"),
        (["--suspect", "rules", "--suspect-share", "2"], "--suspect-share: must lie in [0, 1]"),
    ]:
        code, stdout, stderr = cli("sample", "noisy", "--n", "200", *args, "--db", db)
        assert code == 1 and stdout == "", stderr
        assert message in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("strategy", ["uniform", "stratified"])
@pytest.mark.parametrize("size", [100, 400])
def test_a_small_grid_holds_or_cannot_tell(noisy_db: Path, strategy: str, size: int):
    """Each cell of a small grid (strategy x size, 20 seeds, the noisy run): for each metric the
    beta interval holds the exact value in 17 seeds of 20 at least, or is wider than 0.2 ("cannot
    tell") in 18 at least; sampled and estimated in memory, as bench/estimate_coverage.py does."""
    from labeling.review.estimate import SampledCells, estimate_cells
    from labeling.review.sample import draw_sample

    with Store(noisy_db, read_only=True) as store:
        truth_of = exact(store, "noisy")
        population = read_population(store, "noisy", VOCAB)
        truth = population_codes(store, population, "gold-report") == PRESENT
    held = {m: 0 for m in ("precision", "recall", "f1")}
    wide = dict(held)
    for seed in range(20):
        sample = draw_sample(population, SampleRequest(run="noisy", n=size, strategy=strategy, seed=seed))
        cells = SampledCells(
            finding=population.findings[sample.index],
            stratum=sample.stratum,
            pi=sample.pi,
            predicted=population.predicted[sample.index] == "present",
            truth=truth[sample.index],
            poisson=False,
            predicted_class=population.predicted[sample.index],
            population_strata=sample.params["population_strata"],
        )
        overall = estimate_cells(cells, confidence=0.95, replicates=500, seed=seed, max_width=1.0)["overall"]
        for metric in held:
            low, high = overall[metric]["beta"]
            held[metric] += low <= truth_of[metric] <= high
            wide[metric] += high - low > 0.2
    for metric in held:
        assert held[metric] >= 17 or wide[metric] >= 18, (metric, held[metric], wide[metric])


def test_a_suspicion_sample_holds_an_imperfect_runs_figures(db: Path, tmp_path: Path):
    """A Poisson (suspicion) sample from an audit queue that ranks the cells where the rules run and
    the noisy run disagree first (0.9; the cells either marks present 0.1), drawn and estimated
    through the database: its cells fall in strata of finding x class x pi level of recorded size,
    and the beta interval holds the exact precision, recall and F1 overall and for the most
    frequent finding. 20 seeds, at least 17 of 20 holding for each of the 6 figures: an interval
    with coverage 0.95 (its nominal level; Clopper-Pearson per stratum is conservative) holds 16
    or fewer with probability binom.cdf(16, 20, 0.95) = 0.016, so a correct interval fails a set
    of seeds with probability under 6 x 0.016 = 0.10 (the seeds are fixed: the test is
    deterministic, and passes). The Kish-weighted interval this replaces covered per finding as
    little as 0.51 (BENCHMARKS.md): 17 of 20 at 0.51 has probability binom.sf(16, 20, 0.51) =
    0.002; at its overall 0.82 it is 0.50, so the test guards the level, not every weakness."""
    with Store(db) as store:
        truth = exact(store, "noisy")
        population = read_population(store, "noisy", VOCAB)
        rules = population_codes(store, population, "rules") == PRESENT
        real = population_codes(store, population, "gold-report") == PRESENT
        predicted = population.predicted == "present"
        names, counts = np.unique(population.findings[real].astype(str), return_counts=True)
        top = str(names[np.argmax(counts)])
        rows = population.findings == top
        tp, fp = (predicted & real & rows).sum(), (predicted & ~real & rows).sum()
        fn = (~predicted & real & rows).sum()
        of_top = {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn)}
        queue = tmp_path / "queue.csv"
        with queue.open("w") as handle:
            handle.write("report_key,region,finding,suspicion\n")
            for i in np.flatnonzero(predicted | rules):
                score = 0.9 if predicted[i] != rules[i] else 0.1
                handle.write(
                    f'{population.report_keys[i]},"{population.regions[i]}","{population.findings[i]}",{score}\n'
                )
        held = {(scope, m): 0 for scope in ("overall", top) for m in ("precision", "recall", "f1")}
        estimates = []
        for seed in range(20):
            request = SampleRequest(run="noisy", n=200, strategy="suspicion", suspicion=queue, seed=seed)
            sample = sample_run(store, request, VOCAB)
            assert sum(s["cells"] for s in sample.strata) == population.size
            assert all(" | pi=" in str(s) for s in sample.stratum)
            result = estimate_run(store, EstimateRequest(run="noisy", reviewed="gold-report", seed=seed)).result
            estimates.append(result["overall"]["f1"]["estimate"])
            for scope, metric in held:
                block = result["overall"] if scope == "overall" else result["by_finding"][top]
                low, high = block[metric]["beta"]
                held[scope, metric] += low <= (truth if scope == "overall" else of_top)[metric] <= high
    assert all(count >= 17 for count in held.values()), held
    assert abs(np.mean(estimates) - truth["f1"]) < 0.08  # the weighted (Horvitz-Thompson) estimate: unbiased
