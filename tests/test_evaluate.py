"""Evaluation and prediction of a real tiny checkpoint: metrics equal scikit-learn's on the same
arrays, the CSV and experiments row hold them, and the predicted run scored by `compare_runs`
gives the very same per-lesion precision, recall and F1 as `evaluate`."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from test_trainer import LESIONS, make_cohort, tiny_config

from labeling.core.errors import InputError
from labeling.core.files import file_sha256
from labeling.review.compare import CompareOptions, compare_runs
from labeling.store.store import Store
from model.data.batches import allowed_cells
from model.evaluate.evaluate import EvaluateRequest, evaluate
from model.evaluate.inference import InferenceOptions
from model.evaluate.metrics import ScoredArrays, lesion_scores
from model.evaluate.predict import PredictRequest, predict_run
from model.train.loop import train


def evaluated(db, checkpoint, cohort, reference, split="test", out=None, record=True):
    options = InferenceOptions(checkpoint, cohort, split=split)
    with Store(db) as store:
        return evaluate(store, EvaluateRequest(options, reference, out, record))


def predicted(db, checkpoint, cohort, name, split=None):
    with Store(db) as store:
        return predict_run(store, PredictRequest(name, InferenceOptions(checkpoint, cohort, split=split)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    cohort, db = make_cohort(root, n=60, seed=8, valid=12, test=14)
    config = tiny_config(cohort, db, root / "ckpt", epochs=2, model={"use_itcl": False, "use_decoder": False})
    result = train(config)
    return cohort, db, result


def test_lesion_scores_equal_scikit_learn_on_the_same_arrays():
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    rng = np.random.default_rng(1)
    n, regions, lesions = 30, 29, 3
    probabilities = rng.random((n, regions, lesions))
    labels = (rng.random((n, regions, lesions)) < 0.1 + 0.5 * probabilities).astype(np.float32)
    labels *= (rng.random(n) < 0.5)[:, None, None]  # half the images normal: both image classes occur
    labels[..., 2] = 0  # a lesion without support
    mask = rng.random((n, regions, lesions)) > 0.1
    box_mask = rng.random((n, regions)) > 0.05
    allowed = np.ones((regions, lesions), bool)
    allowed[:10, 0] = False
    mask &= box_mask[..., None] & allowed[None]
    image_labels = (labels * mask).max(axis=1)
    image_mask = np.ones((n, lesions), bool)
    thresholds = [0.4, 0.6, 0.5]
    arrays = ScoredArrays(probabilities, labels, mask, image_labels, image_mask, box_mask, allowed)
    rows = lesion_scores(["a", "b", "c"], thresholds, arrays)
    for j, row in enumerate(rows[:2]):
        truth, scores = labels[..., j][mask[..., j]] > 0.5, probabilities[..., j][mask[..., j]]
        assert row.f1 == pytest.approx(f1_score(truth, scores >= thresholds[j]))
        assert row.precision == pytest.approx(precision_score(truth, scores >= thresholds[j]))
        assert row.recall == pytest.approx(recall_score(truth, scores >= thresholds[j]))
        assert row.auroc == pytest.approx(roc_auc_score(truth, scores))
        assert row.support == truth.sum() and row.cells == mask[..., j].sum()
        assert row.baseline_f1 == pytest.approx(f1_score(truth, np.ones_like(truth)))
        usable = box_mask & allowed[:, j][None]
        image_scores = np.where(usable, probabilities[..., j], 0).max(axis=1)
        assert row.image_f1 == pytest.approx(f1_score(image_labels[:, j] > 0.5, image_scores >= thresholds[j]))
        assert row.image_auroc == pytest.approx(roc_auc_score(image_labels[:, j] > 0.5, image_scores))
    assert math.isnan(rows[2].f1) and math.isnan(rows[2].auroc) and rows[2].support == 0


def test_evaluate_writes_csv_and_experiment_row(trained, tmp_path):
    cohort, db, result = trained
    out = tmp_path / "scores.csv"
    scores = evaluated(db, result.best_checkpoint, cohort, "gold-report", split="test", out=out)
    assert scores.images == 14 and [row.lesion for row in scores.lesions] == LESIONS
    supported = [row.f1 for row in scores.lesions if row.support]
    assert scores.mean_lesion_f1 == pytest.approx(np.mean(supported))
    assert scores.baseline_mean_lesion_f1 == pytest.approx(
        np.mean([r.baseline_f1 for r in scores.lesions if r.support])
    )
    assert [row.threshold for row in scores.lesions] == result.thresholds
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["lesion"] for r in rows[:2]] == LESIONS
    for row, lesion in zip(rows, scores.lesions):
        assert float(row["f1"]) == pytest.approx(lesion.f1, abs=1e-6)
        assert int(row["support"]) == lesion.support
    assert float(rows[-1]["f1"]) == pytest.approx(scores.mean_lesion_f1, abs=1e-6)
    with Store(db, read_only=True) as store:
        row = next(e for e in store.experiments() if e["experiment_id"] == scores.experiment_id)
    assert row["status"] == "complete" and row["label_spec"]["reference"] == "gold-report"
    assert row["metrics"]["mean_lesion_f1"] == pytest.approx(scores.mean_lesion_f1)
    assert row["config"]["checkpoint_sha256"] == file_sha256(result.best_checkpoint)


def test_predicted_run_compares_exactly_like_the_evaluation(trained):
    cohort, db, result = trained
    scores = evaluated(db, result.best_checkpoint, cohort, "gold-report", split="test", record=False)
    run = predicted(db, result.best_checkpoint, cohort, "model-test", split="test")
    assert run.reports == 14 and run.counts["images"] == 14 and run.counts["skipped_images"] == 0
    allowed = allowed_cells(LESIONS)
    assert run.labels == 14 * int(allowed.sum())  # every allowed cell of every study, present or absent
    with Store(db) as store:
        info = store.run("model-test")
        assert info.kind.value == "model" and info.params["checkpoint_sha256"] == file_sha256(result.best_checkpoint)
        assert info.params["thresholds"] == pytest.approx(dict(zip(LESIONS, result.thresholds)))
        labels = store.labels("model-test").to_pylist()
        comparison = compare_runs(
            store, "model-test", "gold-report", CompareOptions(findings=LESIONS, uncertain="exclude")
        )
    threshold = dict(zip(LESIONS, result.thresholds))
    for row in labels:  # the confidence of the stated status
        if row["status"] == "present":
            assert row["confidence"] >= threshold[row["finding"]] - 1e-6
        else:
            assert row["confidence"] > 1 - threshold[row["finding"]] - 1e-6 and row["status"] == "absent"
    by_name = {row.name: row for row in comparison.by_finding}
    for lesion in scores.lesions:
        row = by_name[lesion.lesion]
        assert row.tp + row.fn == lesion.support
        assert row.f1 == pytest.approx(lesion.f1) and row.recall == pytest.approx(lesion.recall)
        if row.tp + row.fp:
            assert row.precision == pytest.approx(lesion.precision)


def test_cli_evaluate_predict_and_bad_inputs(trained, tmp_path, cli):
    cohort, db, result = trained
    out = tmp_path / "cli.csv"
    code, stdout, err = cli(
        "evaluate", result.best_checkpoint, "--reference", "gold-report", "--data", cohort, "--db", db, "--out", out
    )
    assert code == 0, err
    assert "mean lesion F1" in stdout and "constant-prediction baseline" in stdout and out.is_file()
    code, stdout, err = cli(
        "predict", result.best_checkpoint, "--data", cohort, "--name", "cli-pred", "--db", db, "--split", "valid"
    )
    assert code == 0, err
    assert "12 reports" in stdout

    not_checkpoint = tmp_path / "x.pt"
    not_checkpoint.write_bytes(b"\x00\x01 not a checkpoint")
    bare = tmp_path / "bare"
    bare.mkdir()
    with Store(db, read_only=True) as store:
        runs_before = len(store.runs())
    for args, message in (
        (
            ["evaluate", not_checkpoint, "--reference", "gold-report", "--data", cohort, "--db", db],
            "not a CLALA-Net checkpoint",
        ),
        (
            ["evaluate", result.best_checkpoint, "--reference", "nope", "--data", cohort, "--db", db],
            "no run named 'nope'",
        ),
        (
            ["evaluate", result.best_checkpoint, "--reference", "gold-report", "--data", bare, "--db", db],
            "scene_graph folder not found",
        ),
        (["predict", result.best_checkpoint, "--data", cohort, "--name", "cli-pred", "--db", db], "already exists"),
        (["predict", not_checkpoint, "--data", cohort, "--name", "fresh", "--db", db], "not a CLALA-Net checkpoint"),
    ):
        code, _, err = cli(*args)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    with Store(db, read_only=True) as store:
        assert len(store.runs()) == runs_before  # nothing half-written
    with pytest.raises(InputError, match="split 'nope'"):
        evaluated(db, result.best_checkpoint, cohort, "gold-report", split="nope", record=False)


def test_evaluate_and_generate_share_one_inference_loader(trained, monkeypatch):
    """`evaluate` and `generate` build their loader through the one function, with the same AMP,
    workers and batch size decisions (this test runs last: its generated reports reuse study ids)."""
    from model.evaluate import inference
    from model.reports.generation import GenerateRequest, generate_reports

    cohort, db, result = trained
    calls = []
    real = inference.inference_loader

    def spy(examples, loaded, options):
        calls.append((loaded.amp, options.workers, options.batch_size, options.split))
        return real(examples, loaded, options)

    monkeypatch.setattr(inference, "inference_loader", spy)
    with Store(db) as store:
        options = InferenceOptions(result.best_checkpoint, cohort, split="test", device="cpu")
        evaluate(store, EvaluateRequest(options, "gold-report", record=False))
        request = GenerateRequest(checkpoint=result.best_checkpoint, data=cohort, name="spy", limit=2, device="cpu")
        generate_reports(store, request)
    assert len(calls) == 2 and calls[0] == calls[1] == (False, 0, 16, "test")
