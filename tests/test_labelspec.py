"""Label specs on a real DuckDB store: corruption rates within binomial bounds, per-seed
reproducibility, neighbour-only shifts, keep fraction, uncertainty policies, derived runs
compared with their base through compare.py, quality, and the `clala derive` command."""

import json
import math

import numpy as np
import pyarrow as pa
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


# --- region-less labels (the no-location rule) through a spec ----------------------------------------
PLACELESS_FINDINGS = ("atelectasis", "pneumothorax", "pleural effusion", "lung opacity")
RLL = "right lower lung zone"


@pytest.fixture(scope="module")
def placeless_db(tmp_path_factory):
    """A 12-study synthetic cohort (real images and scene graphs), ingested; run "src" labels every
    report "no pneumothorax" (region-less absent) and "mild atelectasis" (region-less present),
    and its first report also a region-less uncertain lung opacity and a right lower zone effusion;
    run "src-located" is "src" without its region-less labels."""
    from labeling.ingest import IngestOptions, ingest
    from model.synth.writer import generate_cohort

    folder = tmp_path_factory.mktemp("placeless")
    cohort = generate_cohort(folder / "cohort", 12, seed=3, size=64)
    db = folder / "p.duckdb"
    with Store(db) as store:
        ingest(store, cohort / "files", IngestOptions(format="mimic"))
        keys = [int(r[0]) for r in store.con.execute("SELECT report_key FROM reports ORDER BY report_key").fetchall()]
        rows = []
        for key in keys:
            rows += [
                (key, None, "pneumothorax", "absent", "No pneumothorax."),
                (key, None, "atelectasis", "present", "Mild atelectasis."),
            ]
        rows += [
            (keys[0], None, "lung opacity", "uncertain", "Possible opacity."),
            (keys[0], RLL, "pleural effusion", "present", "Small right effusion."),
        ]
        columns = {
            "report_key": [r[0] for r in rows],
            "region": pa.array([r[1] for r in rows], pa.string()),
            "finding": [r[2] for r in rows],
            "status": [r[3] for r in rows],
            "evidence_text": [r[4] for r in rows],
            "severity": ["mild" if r[2] == "atelectasis" else None for r in rows],
        }
        for name, table in (
            ("src", pa.table(columns)),
            ("src-located", pa.table(columns).filter(pa.array([r[1] is not None for r in rows]))),
        ):
            record_run(store, RunSpec(name=name, kind=RunKind.rules, vocabulary_version=VOCAB.version), keys, table)
    return db, cohort


def region_less_rows(store, run):
    return {
        (r["report_key"], r["finding"]): (r["status"], r["evidence_text"], r["severity"])
        for r in store.labels(run).to_pylist()
        if r["region"] is None
    }


def examples_of(store, cohort, run, **options):
    from model.data.dataset import build_examples, load_cohort
    from model.labels.targets import TargetOptions

    return build_examples(
        store,
        load_cohort(cohort, cohort, split=None),
        run,
        TargetOptions(PLACELESS_FINDINGS, sentences="none", **options),
    )


def test_a_clean_derived_run_keeps_the_region_less_labels_and_trains_as_its_source(placeless_db):
    """drop=0, keep=1: the derived run stores the source's region-less rows (region empty, with
    their evidence), counts them, scores them at image level, and training on it (or on the spec's
    matrix in memory) gives the source's targets and masks, region and image level."""
    db, cohort = placeless_db
    with Store(db) as store:
        result = derive_run(store, DeriveRequest("src-clean", LabelSpec(source="src"), reference="src"))
    with Store(db, read_only=True) as store:
        keys = store.covered_reports("src")
        assert region_less_rows(store, "src-clean") == region_less_rows(store, "src")
        assert len(region_less_rows(store, "src")) == 2 * 12 + 1
        assert store.label_level_counts("src-clean") == store.label_level_counts("src") == (1, 25)
        assert result.labels == 26 and result.statuses == {"absent": 12, "present": 13, "uncertain": 1}
        assert result.counts["region_less_present"] == 12 and result.counts["present"] == 13
        assert result.counts["uncertain_masked"] == 1 and result.counts["shift_eligible"] == 1
        assert store.run("src-clean").params["notes"] == []
        quality = result.details["quality"]
        # Image level: 12 atelectasis (region-less) + 1 effusion, all found; region level: the effusion.
        assert (quality.image["tp"], quality.image["fn"], quality.image["fp"]) == (13, 0, 0)
        assert (quality.region["tp"], quality.region["fn"]) == (1, 0)
        assert spec_quality(store, LabelSpec(source="src"), "src").image["tp"] == 13
        source = examples_of(store, cohort, "src")
        derived = examples_of(store, cohort, "src-clean")
        spec_matrix = derive_matrix(store, LabelSpec(source="src"), REGIONS, PLACELESS_FINDINGS)
    for name in ("targets", "masks", "image_targets", "image_masks", "report_keys"):
        assert np.array_equal(getattr(derived, name), getattr(source, name)), name
    # The values themselves: the first report's image targets, its unplaced atelectasis, its absent pneumothorax.
    i = int(np.flatnonzero(source.report_keys == keys[0])[0])
    assert source.image_targets is not None and source.image_masks is not None
    assert source.image_targets[i].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert source.image_masks[i].tolist() == [True, True, True, False]  # the uncertain opacity is left out
    assert not source.masks[i, :, 0].any() and source.masks[i, :, 1].all() and source.targets[i, :, 1].sum() == 0
    assert source.targets[i, :, 2].nonzero()[0].tolist() == [REGIONS.index(RLL)]
    # Training on the spec's matrix in memory reads the same targets as training on the stored run.
    rows = [list(spec_matrix.matrix.report_keys).index(k) for k in source.report_keys]
    in_memory = spec_matrix.training_targets()
    stored = (source.targets, source.masks, source.image_targets, source.image_masks)
    for ours, theirs in zip(in_memory, stored):
        assert np.array_equal(ours[rows], theirs)


def test_drop_removes_region_less_present_labels_on_their_own_draw(placeless_db):
    db, cohort = placeless_db
    with Store(db) as store:
        result = derive_run(store, DeriveRequest("src-drop1", LabelSpec(source="src", drop=1.0), reference="src"))
    with Store(db, read_only=True) as store:
        rows = region_less_rows(store, "src-drop1")
        assert {s for s, _, _ in rows.values()} == {"absent", "uncertain"}  # no region-less present is left
        assert len(rows) == 13 and result.counts["region_less_dropped"] == 12 and result.counts["dropped"] == 13
        assert result.details["quality"].image["fn"] == 13
        derived = examples_of(store, cohort, "src-drop1")
        source = examples_of(store, cohort, "src")
    assert derived.image_targets is not None and derived.image_masks is not None
    assert derived.image_targets[:, 0].sum() == 0 and derived.image_masks[:, 0].all()  # atelectasis: now negative
    assert source.image_targets is not None and source.image_targets[:, 0].all()
    assert np.array_equal(derived.masks[..., 1], source.masks[..., 1])  # "no pneumothorax" still absent everywhere
    # Rates in between: nested, and the region cells decide exactly as without region-less labels.
    with Store(db, read_only=True) as store:
        low = derive_matrix(store, LabelSpec(source="src", drop=0.3, seed=2), REGIONS, PLACELESS_FINDINGS)
        high = derive_matrix(store, LabelSpec(source="src", drop=0.6, seed=2), REGIONS, PLACELESS_FINDINGS)
        located = derive_matrix(store, LabelSpec(source="src-located", drop=0.6, seed=2), REGIONS, PLACELESS_FINDINGS)
    assert low.placeless is not None and high.placeless is not None
    assert ((low.placeless == PRESENT) >= (high.placeless == PRESENT)).all()
    assert 0 < high.counts.region_less_dropped < 12
    assert np.array_equal(high.matrix.codes, located.matrix.codes)


def test_uncertainty_policy_and_keep_apply_to_region_less_labels(placeless_db):
    db, _ = placeless_db
    with Store(db, read_only=True) as store:
        keys = store.covered_reports("src")
        positive = derive_matrix(store, LabelSpec(source="src", uncertain="positive"), REGIONS, PLACELESS_FINDINGS)
        negative = derive_matrix(store, LabelSpec(source="src", uncertain="negative"), REGIONS, PLACELESS_FINDINGS)
        ignored = derive_matrix(store, LabelSpec(source="src"), REGIONS, PLACELESS_FINDINGS)
        half = derive_matrix(store, LabelSpec(source="src", keep=0.5, seed=1), REGIONS, PLACELESS_FINDINGS)
        shifted = derive_matrix(store, LabelSpec(source="src", shift=1.0, add=1.0), REGIONS, PLACELESS_FINDINGS)
    first = list(keys).index(keys[0])
    opacity = PLACELESS_FINDINGS.index("lung opacity")
    assert positive.placeless is not None and negative.placeless is not None and ignored.placeless is not None
    assert positive.placeless[first, opacity] == PRESENT and negative.placeless[first, opacity] == ABSENT
    assert ignored.placeless[first, opacity] == UNCERTAIN
    assert ignored.placeless_mask is not None and not ignored.placeless_mask[first, opacity]
    assert ignored.placeless_mask.sum() == ignored.placeless_mask.size - 1
    assert half.placeless is not None and half.placeless.shape == (6, 4)
    assert (half.placeless[:, 0] == PRESENT).all() and (half.placeless[:, 1] == ABSENT).all()
    # Shift has nothing to move and add makes no region-less label: those stay the source's.
    assert shifted.placeless is not None and np.array_equal(shifted.placeless, ignored.placeless)
    assert shifted.counts.shift_eligible == 1 and shifted.counts.shifted == 1
