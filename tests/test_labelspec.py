"""Label specs on a real DuckDB store: corruption rates within binomial bounds, per-seed
reproducibility, neighbour-only shifts, keep fraction, uncertainty policies, derived runs
compared with their base through compare.py, quality, and the `clala derive` command."""

import json
import math

import numpy as np
import pytest
from conftest import ingest_file

from labeling.core.errors import InputError
from labeling.review.compare import compare_runs
from labeling.store.run_records import record_run
from labeling.store.store import Store
from model.labels.label_specs import (
    SAME_SIDE_NEIGHBOURS,
    DeriveRequest,
    LabelSpec,
    build_matrix,
    derive_matrix,
    derive_run,
    kept_reports,
    neighbour_table,
    spec_quality,
)
from schemas.labels import ABSENT, PRESENT, UNCERTAIN, UNMENTIONED
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import load_vocabulary

VOCAB = load_vocabulary()
REGIONS = VOCAB.region_names
FINDINGS = ("pleural effusion", "atelectasis", "lung opacity", "pneumothorax", "enlarged cardiac silhouette")
N_REPORTS = 300


def within_binomial(successes: int, trials: int, rate: float, z: float = 4.0) -> bool:
    """`successes` out of `trials` is within z standard deviations of `rate`."""
    sd = math.sqrt(trials * rate * (1 - rate))
    return abs(successes - trials * rate) <= z * sd + 1e-9


@pytest.fixture(scope="module")
def base_db(tmp_path_factory):
    """300 reports; run "base" with region labels drawn at random among allowed cells
    (present, absent, uncertain, with evidence); run "other" (a second source) on 200 of them."""
    folder = tmp_path_factory.mktemp("labelspec")
    reports = folder / "reports.jsonl"
    reports.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "text": f"Report number {i}. Findings as labeled."}) + "\n"
            for i in range(N_REPORTS)
        )
    )
    db = folder / "spec.duckdb"
    ingest_file(db, reports, dataset="t")
    rng = np.random.default_rng(7)
    allowed = [(r, f) for f in FINDINGS for r in VOCAB.finding(f).regions]

    def labels_for(keys, n_per_report):
        rows = {
            k: []
            for k in ("report_key", "region", "finding", "status", "evidence_start", "evidence_end", "evidence_text")
        }
        for key in keys:
            for index in rng.choice(len(allowed), size=n_per_report, replace=False):
                region, finding = allowed[index]
                rows["report_key"].append(int(key))
                rows["region"].append(region)
                rows["finding"].append(finding)
                rows["status"].append(rng.choice(["present"] * 6 + ["absent"] * 3 + ["uncertain"]))
                rows["evidence_start"].append(0)
                rows["evidence_end"].append(6)
                rows["evidence_text"].append("Report")
        return rows

    with Store(db) as store:
        keys = [r[0] for r in store.con.execute("SELECT report_key FROM reports ORDER BY report_key").fetchall()]
        record_run(
            store,
            RunSpec(name="base", kind=RunKind.imported, vocabulary_version=VOCAB.version),
            keys,
            labels_for(keys, 12),
        )
        record_run(
            store,
            RunSpec(name="other", kind=RunKind.imported, vocabulary_version=VOCAB.version),
            keys[:200],
            labels_for(keys[:200], 12),
        )
    return db


def source_codes(db, keys=None):
    with Store(db, read_only=True) as store:
        return store.label_matrix("base", REGIONS, FINDINGS, report_keys=keys)


def built(db, **spec):
    with Store(db, read_only=True) as store:
        return build_matrix(store, LabelSpec(source="base", **spec), REGIONS, FINDINGS)


def test_drop_rate_within_binomial_bounds(base_db):
    base = source_codes(base_db)
    matrix, mask = built(base_db, drop=0.3, uncertain="negative")
    present = base.codes == PRESENT
    lost = present & (matrix.codes != PRESENT)
    assert present.sum() > 2000
    assert within_binomial(int(lost.sum()), int(present.sum()), 0.3)
    assert lost.sum() != 0.3 * present.sum()  # a draw, not a quota
    assert (matrix.codes[lost] == UNMENTIONED).all()  # an omission leaves no row
    assert not ((matrix.codes == PRESENT) & ~present).any()  # dropping adds nothing
    assert mask.all()  # no uncertain cell is left under policy negative


def test_add_rate_over_allowed_cells_only(base_db):
    base = source_codes(base_db)
    matrix, _ = built(base_db, add=0.02, uncertain="ignore")
    allowed = np.asarray([[VOCAB.allows(f, r) for f in FINDINGS] for r in REGIONS])
    candidates = ((base.codes == ABSENT) | (base.codes == UNMENTIONED)) & allowed[None]
    flipped = candidates & (matrix.codes == PRESENT)
    assert within_binomial(int(flipped.sum()), int(candidates.sum()), 0.02)
    assert not ((matrix.codes == PRESENT) & ~allowed[None]).any()
    assert ((base.codes == PRESENT) <= (matrix.codes == PRESENT)).all()  # adding removes nothing
    assert ((base.codes == UNCERTAIN) == (matrix.codes == UNCERTAIN)).all()


def test_shift_moves_labels_to_allowed_neighbours_only(base_db):
    base = source_codes(base_db)
    with Store(base_db, read_only=True) as store:
        derived = derive_matrix(store, LabelSpec(source="base", shift=0.25, uncertain="negative"), REGIONS, FINDINGS)
    codes, origin = derived.matrix.codes, derived.origin_region
    neighbours = neighbour_table(VOCAB, "same")
    moved = np.argwhere((codes == PRESENT) & (origin >= 0) & (origin != np.arange(len(REGIONS))[None, :, None]))
    assert len(moved) > 100
    for row, region, finding in moved:
        came_from = REGIONS[origin[row, region, finding]]
        assert REGIONS[region] in neighbours[came_from]
        assert VOCAB.allows(FINDINGS[finding], REGIONS[region])
        assert base.codes[row, origin[row, region, finding], finding] == PRESENT
    vacated = (base.codes == PRESENT) & (codes != PRESENT)
    # A cell left by its label may be refilled by a neighbour's label moving in.
    refilled = (
        (base.codes == PRESENT)
        & (codes == PRESENT)
        & (origin >= 0)
        & (origin != np.arange(len(REGIONS))[None, :, None])
    )
    assert vacated.sum() <= derived.counts.shifted <= vacated.sum() + refilled.sum()
    assert within_binomial(derived.counts.shifted, derived.counts.shift_eligible, 0.25)
    # Every present source label either stays, or is present at one of its neighbours.
    for row, region, finding in np.argwhere(vacated):
        targets = [REGIONS.index(n) for n in neighbours[REGIONS[region]]]
        assert (codes[row, targets, finding] == PRESENT).any()


def test_other_side_shift_goes_to_the_mirror_region(base_db):
    base = source_codes(base_db)
    with Store(base_db, read_only=True) as store:
        derived = derive_matrix(
            store, LabelSpec(source="base", shift=1.0, shift_side="other", uncertain="negative"), REGIONS, FINDINGS
        )
    codes, origin = derived.matrix.codes, derived.origin_region
    for row, region, finding in np.argwhere((codes == PRESENT) & (origin >= 0)):
        came_from = REGIONS[origin[row, region, finding]]
        if came_from != REGIONS[region]:
            assert REGIONS[region] == came_from.replace("right", "@").replace("left", "right").replace("@", "left")
    # Midline labels (the cardiac silhouette) have no other side and stay.
    heart = REGIONS.index("cardiac silhouette")
    assert ((base.codes[:, heart] == PRESENT) == (codes[:, heart] == PRESENT)).all()
    assert derived.counts.shifted == derived.counts.shift_eligible > 0


def test_neighbour_table_is_symmetric_and_in_the_vocabulary():
    for region, neighbours in SAME_SIDE_NEIGHBOURS.items():
        assert region in REGIONS
        for other in neighbours:
            assert region in SAME_SIDE_NEIGHBOURS[other]
            assert VOCAB.region(other).laterality == VOCAB.region(region).laterality
    assert set(SAME_SIDE_NEIGHBOURS["right lower lung zone"]) == {"right mid lung zone", "right costophrenic angle"}
    assert set(SAME_SIDE_NEIGHBOURS["left upper lung zone"]) == {"left apical zone", "left mid lung zone"}
    assert "right lung" not in SAME_SIDE_NEIGHBOURS
    assert neighbour_table(VOCAB, "other")["right lower lung zone"] == ("left lower lung zone",)


def test_same_seed_same_matrix_other_seed_other_matrix_and_grids_nest(base_db):
    a, _ = built(base_db, drop=0.2, add=0.01, shift=0.1, keep=0.8, seed=3)
    b, _ = built(base_db, drop=0.2, add=0.01, shift=0.1, keep=0.8, seed=3)
    c, _ = built(base_db, drop=0.2, add=0.01, shift=0.1, keep=0.8, seed=4)
    assert np.array_equal(a.report_keys, b.report_keys) and np.array_equal(a.codes, b.codes)
    assert not np.array_equal(a.report_keys, c.report_keys)
    low, _ = built(base_db, drop=0.1, seed=3)
    high, _ = built(base_db, drop=0.2, seed=3)
    assert ((low.codes == PRESENT) >= (high.codes == PRESENT)).all()  # dropped at 0.1 => dropped at 0.2


def test_a_cells_fate_does_not_depend_on_the_matrix_layout(base_db):
    full, _ = built(base_db, drop=0.3, shift=0.0, add=0.02, seed=1)
    with Store(base_db, read_only=True) as store:
        part, _ = build_matrix(
            store,
            LabelSpec(source="base", drop=0.3, add=0.02, seed=1),
            REGIONS,
            ("atelectasis", "pneumothorax"),
            report_keys=full.report_keys[::-1][:50].tolist(),
        )
    rows = [list(full.report_keys).index(k) for k in part.report_keys]
    assert np.array_equal(part.codes, full.codes[rows][..., [1, 3]])


def test_keep_fraction(base_db):
    matrix, _ = built(base_db, keep=0.25, seed=9)
    base = source_codes(base_db)
    assert len(matrix.report_keys) == round(0.25 * N_REPORTS)
    assert set(matrix.report_keys) < set(base.report_keys)
    assert list(matrix.report_keys) == sorted(matrix.report_keys)
    assert len(kept_reports(np.arange(1, 11), 0.01, 0)) == 1  # never an empty matrix


def test_uncertainty_policies(base_db):
    base = source_codes(base_db)
    uncertain = base.codes == UNCERTAIN
    assert uncertain.sum() > 100
    positive, positive_mask = built(base_db, uncertain="positive")
    negative, _ = built(base_db, uncertain="negative")
    ignored, ignore_mask = built(base_db, uncertain="ignore")
    assert (positive.codes[uncertain] == PRESENT).all() and positive_mask.all()
    assert (negative.codes[uncertain] == ABSENT).all()
    assert (ignored.codes[uncertain] == UNCERTAIN).all() and np.array_equal(~ignore_mask, uncertain)
    assert np.array_equal(ignored.codes, base.codes)  # a clean spec is the source itself


def test_derived_run_compares_with_its_base_as_expected(base_db):
    with Store(base_db) as store:
        result = derive_run(store, DeriveRequest("base-drop30", LabelSpec(source="base", drop=0.3, seed=5)))
    with Store(base_db) as store:
        comparison = compare_runs(store, "base-drop30", "base")
        run = store.run("base-drop30")
        kept = store.con.execute(
            """SELECT count(*) FROM labels d JOIN labels b USING (report_key, region, finding)
               WHERE d.run_id = ? AND b.run_id = ? AND d.evidence_text = b.evidence_text""",
            [run.run_id, store.run("base").run_id],
        ).fetchall()[0][0]
    micro = comparison.micro
    assert micro.precision == 1.0
    assert micro.recall == pytest.approx(1 - result.counts["dropped"] / result.counts["present"])
    assert within_binomial(micro.fn, micro.tp + micro.fn, 0.3)
    assert run.kind.value == "derived" and run.source == "base" and run.status.value == "complete"
    assert run.params["spec"] == {
        "source": "base",
        "uncertain": "ignore",
        "drop": 0.3,
        "add": 0.0,
        "shift": 0.0,
        "shift_side": "same",
        "keep": 1.0,
        "seed": 5,
    }
    assert run.params["counts"]["dropped"] == result.counts["dropped"]
    assert kept == result.labels  # every kept label carries its source evidence


def test_added_labels_lower_precision_only(base_db):
    with Store(base_db) as store:
        result = derive_run(store, DeriveRequest("base-add1", LabelSpec(source="base", add=0.01, seed=2), "base"))
    with Store(base_db) as store:
        micro = compare_runs(store, "base-add1", "base").micro
        stored = store.run("base-add1").params["quality"]
    assert micro.recall == 1.0
    assert micro.fp == result.counts["added"] and micro.precision == pytest.approx(micro.tp / (micro.tp + micro.fp))
    assert stored["region"]["precision"] == pytest.approx(micro.precision)
    assert stored["region"]["recall"] == 1.0 and stored["reference"] == "base"


def test_spec_quality_against_a_reference(base_db):
    with Store(base_db, read_only=True) as store:
        clean = spec_quality(store, LabelSpec(source="base"), "base")
        dropped = spec_quality(store, LabelSpec(source="base", drop=0.5, uncertain="negative"), "base")
        against_other = spec_quality(store, LabelSpec(source="base"), "other")
        derived = derive_matrix(
            store, LabelSpec(source="base", drop=0.5, uncertain="negative"), REGIONS, dropped.findings
        )
    assert clean.region["precision"] == clean.region["recall"] == clean.region["kappa"] == 1.0
    assert clean.image["f1"] == 1.0
    assert dropped.policy == "negative" and dropped.region["precision"] == 1.0
    assert dropped.region["recall"] == pytest.approx(1 - derived.counts.dropped / derived.counts.present)
    assert dropped.image["recall"] >= dropped.region["recall"]  # a finding survives if any of its regions does
    assert against_other.reports == 200 and against_other.region["f1"] < 0.5


def test_bad_specs_are_one_line_errors():
    with pytest.raises(InputError, match=r"^--drop: 1\.5 is invalid"):
        LabelSpec.checked(source="base", drop=1.5)
    with pytest.raises(InputError, match=r"^--keep: 0"):
        LabelSpec.checked(source="base", keep=0)
    with pytest.raises(InputError, match=r"^--shift-side: 'up'"):
        LabelSpec.checked(source="base", shift_side="up")
    with pytest.raises(InputError, match=r"^--uncertain"):
        LabelSpec.checked(source="base", uncertain="maybe")


def test_derive_command(base_db, cli):
    code, out, _ = cli(
        "derive",
        "base",
        "--name",
        "cli-derived",
        "--db",
        base_db,
        "--drop",
        "0.2",
        "--shift",
        "0.1",
        "--keep",
        "0.5",
        "--seed",
        "1",
        "--reference",
        "base",
    )
    assert code == 0, out
    assert "run cli-derived (derived from base uncertain=ignore drop=0.2 shift=0.1 keep=0.5" in out
    assert "150 of 300 reports" in out and "Quality against base" in out
    with Store(base_db, read_only=True) as store:
        runs_before = len(store.runs())
        assert len(store.covered_reports("cli-derived")) == 150
    for args, message in (
        (["--drop", "1.5"], "--drop: 1.5 is invalid"),
        (["--shift-side", "up"], "--shift-side"),
        (["--name", "cli-derived"], "already exists"),
        (["--reference", "nope"], "no run named 'nope'"),
    ):
        code, out, err = cli("derive", "base", "--name", "bad", "--db", base_db, *args)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli("derive", "nope", "--name", "bad2", "--db", base_db)
    assert code == 1 and "no run named 'nope'" in err
    with Store(base_db, read_only=True) as store:
        assert len(store.runs()) == runs_before  # nothing half-written
