"""What the quickstart's figures rest on (issue 23, item 4), each against a counterfeit:
- the evaluation's `min_positives`: lesions with fewer positive cells are listed as not scored and
  left out of every mean (hand-built arrays with known counts);
- the lesions a generated report may state: the set whose validation predictions give the best
  pooled (micro) F1, against every subset;
- the constant report: the most frequent training findings, as many as maximise the constant's
  F1, in their usual regions (a real rules run on known texts), written by the report writer;
- a real training: the model trained on gold labels beats the constant prediction, while one
  trained on shuffled labels, or on blank images, does not (judged per image, where a model that
  does not see the lesions can at best equal the constant; per region, one that learned only
  where labels usually sit can pass the every-cell constant).
"""

from __future__ import annotations

import csv
import itertools
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeling.core.errors import InputError
from labeling.store.store import Store
from model.evaluate.evaluate import EvaluateRequest, evaluate, evaluation_of
from model.evaluate.inference import InferenceOptions
from model.evaluate.metrics import ScoredArrays, lesion_scores

LEARNED = ["pleural effusion", "enlarged cardiac silhouette"]  # large at 64 px
PREVALENCE = 0.3


# --- min_positives ------------------------------------------------------------------------------------
def _arrays_with_positives(positives: list[int], n: int = 40, regions: int = 29, seed: int = 3) -> ScoredArrays:
    """Scored arrays where lesion j has exactly positives[j] positive scored cells."""
    rng = np.random.default_rng(seed)
    lesions = len(positives)
    mask = rng.random((n, regions, lesions)) > 0.2
    labels = np.zeros((n, regions, lesions), np.float32)
    for j, count in enumerate(positives):
        cells = np.flatnonzero(mask[..., j])
        chosen = rng.choice(cells, size=count, replace=False)
        labels[..., j].reshape(-1)[chosen] = 1.0
    # Informative but imperfect scores: positives higher on average.
    probabilities = np.clip(rng.normal(0.3 + 0.4 * labels, 0.2), 0, 1)
    box_mask = np.ones((n, regions), bool)
    allowed = np.ones((regions, lesions), bool)
    image_labels = (labels * mask).max(axis=1)
    return ScoredArrays(probabilities, labels, mask, image_labels, np.ones((n, lesions), bool), box_mask, allowed)


def test_min_positives_leaves_lesions_with_few_positives_out_of_every_mean():
    from sklearn.metrics import f1_score

    arrays = _arrays_with_positives([12, 4, 0, 10])
    rows = lesion_scores(["a", "b", "c", "d"], [0.5, 0.5, 0.5, 0.5], arrays)
    assert [row.support for row in rows] == [12, 4, 0, 10]
    a_truth = arrays.labels[..., 0][arrays.mask[..., 0]] > 0.5
    a_scores = arrays.probabilities[..., 0][arrays.mask[..., 0]]
    assert rows[0].f1 == pytest.approx(f1_score(a_truth, a_scores >= 0.5))

    ten = evaluation_of(rows, arrays.image_mask, 10, checkpoint="x", reference="r", split="test", images=40)
    assert [row.lesion for row in ten.scored] == ["a", "d"]  # 10 positives is enough
    assert ten.not_scored == {"b": 4, "c": 0}
    assert ten.mean_lesion_f1 == pytest.approx((rows[0].f1 + rows[3].f1) / 2)
    assert ten.baseline_mean_lesion_f1 == pytest.approx(
        np.mean([2 * 12 / (12 + rows[0].cells), 2 * 10 / (10 + rows[3].cells)])
    )
    assert ten.mean_auroc == pytest.approx((rows[0].auroc + rows[3].auroc) / 2)
    assert ten.image_mean_f1 == pytest.approx((rows[0].image_f1 + rows[3].image_f1) / 2)
    summary = ten.summary()
    assert summary["lesions_scored"] == ["a", "d"] and summary["lesions_not_scored"] == {"b": 4, "c": 0}

    one = evaluation_of(rows, arrays.image_mask, 1, checkpoint="x", reference="r", split="test", images=40)
    assert [row.lesion for row in one.scored] == ["a", "b", "d"] and one.not_scored == {"c": 0}
    assert one.mean_lesion_f1 == pytest.approx(np.mean([rows[0].f1, rows[1].f1, rows[3].f1]))
    assert one.mean_lesion_f1 != pytest.approx(ten.mean_lesion_f1)  # b really moves the mean


def test_min_positives_is_keyword_only_and_at_least_one(tmp_path):
    options = InferenceOptions(tmp_path / "best.pt", tmp_path)
    assert EvaluateRequest(options, "gold-report").min_positives == 1  # today's behaviour by default
    with pytest.raises(TypeError):
        EvaluateRequest(options, "gold-report", None, True, 10)  # type: ignore[misc]
    with pytest.raises(InputError, match="--min-positives: 0 is below 1"):
        EvaluateRequest(options, "gold-report", min_positives=0)


# --- the lesions a report may state -------------------------------------------------------------------
def _predictions(counts: list[tuple[int, int, int]], n: int = 20, regions: int = 5):
    """Validation predictions where lesion j has `positives` true cells and, at threshold 0.5,
    `flagged` predicted cells of which `hits` are true: counts[j] = (positives, flagged, hits)."""
    from model.evaluate.inference import Predictions

    lesions = len(counts)
    probabilities = np.full((n, regions, lesions), 0.1, np.float32)
    labels = np.zeros((n, regions, lesions), np.float32)
    for j, (positives, flagged, hits) in enumerate(counts):
        cells = np.arange(n * regions)
        labels[..., j].reshape(-1)[cells[:positives]] = 1
        chosen = np.concatenate([cells[:hits], cells[positives : positives + flagged - hits]])
        probabilities[..., j].reshape(-1)[chosen] = 0.9
    mask = np.ones((n, regions, lesions), bool)
    return Predictions(probabilities, labels, mask, np.ones((n, regions), bool), {})


def _pooled_f1(predictions, keep) -> float:
    predicted = (predictions.probabilities >= 0.5) & np.asarray(keep)
    truth = predictions.labels > 0.5
    return 2 * float((predicted & truth).sum()) / (float(predicted.sum()) + float(truth.sum()))


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # precise; imprecise (2 of 20): it would halve the pooled F1; never right.
        ([(5, 5, 4), (2, 20, 2), (1, 3, 0)], [True, False, False]),
        # half right: it raises the pooled F1 (0.615 -> 0.706), so it is stated.
        ([(5, 5, 4), (2, 4, 2), (1, 3, 0)], [True, True, False]),
        # nothing the model flags is right: nothing is stated.
        ([(3, 4, 0), (2, 2, 0)], [False, False]),
    ],
)
def test_reportable_lesions_are_the_set_with_the_best_pooled_f1(counts, expected):
    from model.evaluate.metrics import reportable_lesions

    predictions = _predictions(counts)
    keep, f1 = reportable_lesions(predictions, [0.5] * len(counts))
    assert keep == expected
    best = max(
        (_pooled_f1(predictions, subset) for subset in itertools.product([False, True], repeat=len(counts))),
        default=0.0,
    )
    assert f1 == pytest.approx(best) if any(expected) else f1 == 0.0
    assert _pooled_f1(predictions, keep) == pytest.approx(f1)


# --- the constant report ------------------------------------------------------------------------------
def test_best_constant_count_is_the_best_of_every_set_of_findings():
    from model.reports.constant import best_constant_count

    rng = np.random.default_rng(5)
    present = rng.random((30, 5)) < np.array([0.5, 0.35, 0.2, 0.1, 0.0])  # reports x findings
    best = 0.0
    for size in range(1, 6):
        for chosen in itertools.combinations(range(5), size):
            said = np.zeros(5, bool)
            said[list(chosen)] = True
            tp = int((present & said).sum())
            fp = int((~present & said).sum())
            fn = int((present & ~said).sum())
            best = max(best, 2 * tp / (2 * tp + fp + fn))
    count, f1 = best_constant_count(present.mean(axis=0))
    assert f1 == pytest.approx(best)
    order = np.argsort(-present.mean(axis=0), kind="stable")
    said = np.zeros(5, bool)
    said[order[:count]] = True
    tp, fp, fn = int((present & said).sum()), int((~present & said).sum()), int((present & ~said).sum())
    assert 2 * tp / (2 * tp + fp + fn) == pytest.approx(f1)
    assert best_constant_count([0.0, 0.0]) == (0, 0.0)


TEXTS = [
    *["FINDINGS: Left pleural effusion. IMPRESSION: Left pleural effusion."] * 4,
    *["FINDINGS: Bilateral pleural effusions. Cardiomegaly. IMPRESSION: Bilateral effusions, cardiomegaly."] * 2,
    *["FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly."] * 2,
    "FINDINGS: Right upper lung zone nodule. IMPRESSION: Nodule.",
    *["FINDINGS: Possible pulmonary edema. IMPRESSION: Possible edema."] * 6,  # uncertain: not counted
    "FINDINGS: Lungs are clear. IMPRESSION: No acute cardiopulmonary process.",
    # Not among the reports counted (not training reports): a finding they would otherwise add.
    *["FINDINGS: Right pneumothorax. IMPRESSION: Right pneumothorax."] * 8,
]


@pytest.fixture(scope="module")
def rules_db(tmp_path_factory):
    from conftest import reports_db

    from labeling.sources.rules import RulesRequest, label_with_rules

    db = reports_db(tmp_path_factory.mktemp("constant"), TEXTS)
    with Store(db) as store:
        label_with_rules(store, RulesRequest(name="rules"))
    return db


def test_constant_report_is_the_most_frequent_findings_in_their_usual_regions(rules_db):
    from model.reports.constant import constant_report

    with Store(rules_db, read_only=True) as store:
        keys = store.current_report_keys()[:16]  # the first 16 reports: no pneumothorax among them
        constant = constant_report(store, "rules", keys)
    assert constant.reports == 16
    # Effusion in 6 of 16, cardiomegaly 4, nodule 1 (edema is only uncertain): F1 of saying the top
    # k in every report = 2 (sum of the top k) / (k + 11/16): k=1 0.444, k=2 0.465, k=3 0.373.
    said = [(f.finding, round(f.frequency, 4), f.regions) for f in constant.findings]
    assert said == [
        ("pleural effusion", 0.375, ("left lung",)),  # left in 6 of 6, right in 2 of 6
        ("enlarged cardiac silhouette", 0.25, ("cardiac silhouette",)),
    ]
    assert constant.train_f1 == pytest.approx(2 * (6 + 4) / 16 / (2 + 11 / 16))


def test_constant_report_is_written_by_the_writer_for_the_same_studies(rules_db):
    from labeling.sources.rules import RulesLabeler
    from model.reports.constant import constant_report, write_constant_reports
    from model.reports.round_trip import read_cells
    from model.reports.writer import ReportInputs, generated_reports, store_generated_reports, write_reports
    from schemas.vocabulary import load_vocabulary

    with Store(rules_db) as store:
        keys = store.current_report_keys()
        constant = constant_report(store, "rules", keys[:16])
        like = [ReportInputs(report_id=f"s{i}", source_report_key=keys[i]) for i in (3, 9)]
        store_generated_reports(store, "model", write_reports(like))
        stored = write_constant_reports(store, "model-constant", "model", constant)
        model_rows, constant_rows = generated_reports(store, "model"), generated_reports(store, "model-constant")
    assert stored.dataset == "generated:model-constant" and len(stored.report_keys) == 2
    assert [(r["report_id"], r["source_report_key"]) for r in constant_rows] == [
        (r["report_id"], r["source_report_key"]) for r in model_rows
    ]
    assert len({r["text"] for r in constant_rows}) == 1  # one report, whatever the study
    provenance = constant_rows[0]["metadata"]["generation"]["constant"]
    assert [f["finding"] for f in provenance["findings"]] == ["pleural effusion", "enlarged cardiac silhouette"]
    # Read back by the rules, the report says exactly the constant findings, in their regions.
    cells = read_cells([constant_rows[0]["text"]], RulesLabeler(load_vocabulary()))[0]
    present = {(finding, region) for finding, region, status, *_ in cells if status == "present"}
    assert {cell for cell in present if cell[1]} == {
        ("pleural effusion", "left lung"),
        ("enlarged cardiac silhouette", "cardiac silhouette"),
    }


# --- a real training: gold beats the constant, counterfeits do not -----------------------------------
def _cohort(root: Path, n: int, seed: int, valid: int, test: int) -> tuple[Path, Path]:
    """A 64 px cohort where the LEARNED findings are common and nothing else is drawn,
    with `valid` and `test` images (the rest train), ingested and its gold imported."""
    from labeling.ingest import IngestOptions, ingest
    from labeling.sources.imports import ImportRequest, import_labels
    from model.synth.render import DEFAULT_PREVALENCE
    from model.synth.writer import generate_cohort

    prevalence = {name: 0.0 for name in DEFAULT_PREVALENCE} | {name: PREVALENCE for name in LEARNED}
    cohort = generate_cohort(root / "cohort", n, seed=seed, size=64, prevalence=prevalence)
    splits = cohort / "splits"
    rows, header = [], []
    for name in ("train", "valid", "test"):
        with (splits / f"{name}.csv").open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows.extend(reader)
    rows.sort(key=lambda row: row[3])  # by dicom id: a fixed, seed-determined shuffle
    for name, part in (("test", rows[:test]), ("valid", rows[test : test + valid]), ("train", rows[test + valid :])):
        with (splits / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(part)
    (splits / "images_to_avoid.csv").write_text(",".join(header) + "\n")
    db = root / "cohort.duckdb"
    with Store(db) as store:
        ingest(store, cohort / "files", IngestOptions(format="mimic"))
        import_labels(store, ImportRequest("synth-gold", cohort, "gold"))
    return cohort, db


def _blank_copy(cohort: Path, out: Path) -> Path:
    """The cohort with every image replaced by a uniform one of the same size (boxes, splits, reports kept)."""
    shutil.copytree(cohort, out)
    images = [p for p in (out / "files").rglob("*.png")]
    assert images
    for path in images:
        with Image.open(path) as image:
            size, mode = image.size, image.mode
        Image.new(mode, size, 128).save(path)
    return out


def _shuffled_run(db: Path, name: str) -> None:
    """Run `name`: gold-report's labels, each report's set moved to another report (a fixed permutation)."""
    import pyarrow as pa

    from labeling.store.run_records import record_run
    from schemas.runs import RunKind, RunSpec

    with Store(db) as store:
        gold = store.run("gold-report")
        keys = np.asarray(sorted(store.covered_reports("gold-report").tolist()))
        moved = dict(zip(keys.tolist(), np.roll(np.random.default_rng(0).permutation(keys), 1).tolist()))
        labels = store.labels("gold-report")
        columns = ["region", "finding", "status", "severity", "temporal", "evidence_start", "evidence_end"]
        table = {c: labels[c].to_pylist() for c in columns} | {
            "report_key": [moved[k] for k in labels["report_key"].to_pylist()],
            "evidence_text": labels["evidence_text"].to_pylist(),
        }
        spec = RunSpec(name=name, kind=RunKind.derived, vocabulary_version=gold.vocabulary_version, source=gold.name)
        record_run(store, spec, keys.tolist(), pa.table(table))


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    from model.train.config import TrainConfig
    from model.train.loop import train

    root = tmp_path_factory.mktemp("learns")
    cohort, db = _cohort(root, n=260, seed=11, valid=40, test=60)
    blank = _blank_copy(cohort, root / "blank")
    _shuffled_run(db, "shuffled")
    model = dict(
        backbone="test_resnet",
        d_model=32,
        lca_heads=2,
        lca_feedforward_dim=64,
        llcl_projection_dim=16,
        use_itcl=False,
        use_decoder=False,
    )
    evaluations = {}
    for name, data, run in (
        ("gold", cohort, "gold-report"),
        ("shuffled", cohort, "shuffled"),
        ("blank", blank, "gold-report"),
    ):
        config = TrainConfig(
            run=run,
            data=str(data),
            db=str(db),
            findings=LEARNED,
            sentences="none",
            image_size=64,
            batch_size=8,
            epochs=5,
            lr=3e-3,
            warmup=0.1,
            patience=0,
            seed=3,
            threads=2,
            checkpoint_dir=str(root / name),
            model=model,
        )
        result = train(config)
        options = InferenceOptions(result.best_checkpoint, data, split="test")
        with Store(db, read_only=True) as store:
            request = EvaluateRequest(options, "gold-report", root / f"{name}.csv", record=False, min_positives=10)
            evaluations[name] = evaluate(store, request)
    return evaluations


def _image_auroc(evaluation) -> float:
    return float(np.mean([row.image_auroc for row in evaluation.scored]))


@pytest.mark.slow
def test_gold_model_beats_the_constant_and_counterfeits_do_not(learned):
    gold, shuffled, blank = learned["gold"], learned["shuffled"], learned["blank"]
    for evaluation in learned.values():
        assert [row.lesion for row in evaluation.scored] == LEARNED  # >= 10 positive test cells each
        assert min(row.support for row in evaluation.scored) >= 10
    # Every model is scored on the same test cells, so the constants are the same.
    assert blank.baseline_mean_lesion_f1 == pytest.approx(gold.baseline_mean_lesion_f1)
    assert shuffled.image_baseline_mean_f1 == pytest.approx(gold.image_baseline_mean_f1)
    # Gold (measured 0.60 vs 0.15 per region, 0.59 vs 0.41 per image, image AUROC 0.85): far above
    # the constant, and it ranks the images.
    assert gold.mean_lesion_f1 >= 3 * gold.baseline_mean_lesion_f1, gold.summary()
    assert gold.image_mean_f1 >= gold.image_baseline_mean_f1 + 0.1, gold.summary()
    assert _image_auroc(gold) >= 0.75
    # A model that cannot see the lesions (shuffled labels, blank images) can at best say "always"
    # per image, the constant: measured 0.36 and 0.15 vs 0.41, image AUROC 0.58 and 0.50.
    for counterfeit in (shuffled, blank):
        assert counterfeit.image_mean_f1 <= counterfeit.image_baseline_mean_f1 + 0.02, counterfeit.summary()
        assert abs(_image_auroc(counterfeit) - 0.5) <= 0.12, counterfeit.summary()
        assert counterfeit.mean_lesion_f1 <= gold.mean_lesion_f1 - 0.25, counterfeit.summary()
    # Per region, blank images give no better than the constant (0.105 vs 0.15). Shuffled labels do
    # (0.31, from where the labels usually sit: the cardiac silhouette rather than the mediastinum,
    # the lungs rather than their zones), which is why the counterfeits are judged per image.
    assert blank.mean_lesion_f1 <= blank.baseline_mean_lesion_f1 * 1.2, blank.summary()


@pytest.mark.slow
def test_evaluation_csv_marks_the_scored_lesions(learned, tmp_path):
    gold = learned["gold"]
    with Path(gold.csv_path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    scored = {row["lesion"] for row in rows[:-1] if row["scored"] == "1"}
    assert scored == set(LEARNED)
    assert rows[-1]["lesion"] == "mean (lesions with >= 10 positives)" and int(rows[-1]["scored"]) == 2
    assert float(rows[-1]["f1"]) == pytest.approx(gold.mean_lesion_f1, abs=1e-6)
    assert not math.isnan(gold.mean_auroc)
