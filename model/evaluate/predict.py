"""A checkpoint's predictions stored as a label run of kind `model`.

`predict_run(store, PredictRequest(name, InferenceOptions(checkpoint, data, split=None)))`: for
every predicted study and every region the vocabulary allows for a lesion, `present` when the
probability reaches the lesion's threshold, else `absent`; the confidence is that of the stated
status (p for present, 1 - p for absent). Several images of one study are combined by the maximum
probability. Provenance: the checkpoint's path and sha256, its label spec and configs. The run is
written in one transaction (`record_run`), so `clala compare` can score it like any other label
source. The result's counts: `present` labels, `images` predicted, `skipped_images` (no stored
report for their study).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labeling.core.errors import InputError
from labeling.store.run_records import RunHooks, RunResult, check_new_run_name, record_run, status_counts
from model.evaluate.inference import InferenceOptions
from schemas.runs import RunKind, RunSpec

if TYPE_CHECKING:
    import pyarrow as pa

    from labeling.store.store import Store
    from model.data.dataset import ImageRecord
    from model.evaluate.inference import Inference


@dataclass
class PredictRequest:
    """Store the predictions of `inference.checkpoint` on `inference.split` (None: every split)
    as run `name`."""

    name: str
    inference: InferenceOptions


def _study_probabilities(
    store: Store, records: list[ImageRecord], probabilities: np.ndarray, box_mask: np.ndarray, dataset: str | None
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], int]:
    """Per stored study report: the maximum probability over its images with a valid box, where
    some image had a valid box, and the images skipped for want of a (single) stored report."""
    found = store.report_keys([r.study_id for r in records], by="study_id", dataset=dataset)
    study_probability: dict[int, np.ndarray] = {}
    study_seen: dict[int, np.ndarray] = {}
    skipped = 0
    for i, record in enumerate(records):
        hits = found.get(record.study_id, [])
        if len(hits) != 1:
            skipped += 1  # no stored report for this study (or several datasets: ambiguous)
            continue
        key = hits[0][1]
        valid = box_mask[i]
        probability = np.where(valid[:, None], probabilities[i], -1.0)
        study_probability[key] = np.maximum(study_probability.get(key, probability), probability)
        study_seen[key] = study_seen.get(key, np.zeros_like(valid)) | valid
    return study_probability, study_seen, skipped


def _label_table(
    inference: Inference, study_probability: dict[int, np.ndarray], study_seen: dict[int, np.ndarray]
) -> pa.Table:
    import pyarrow as pa

    from model.data.dataset import REGION_NAMES

    thresholds = np.asarray(inference.checkpoint["thresholds"], np.float32)
    columns: dict[str, list] = {"report_key": [], "region": [], "finding": [], "status": [], "confidence": []}
    for key in sorted(study_probability):
        probability, seen = study_probability[key], study_seen[key]
        regions, lesion_index = np.nonzero(inference.allowed & seen[:, None])
        for r, j in zip(regions.tolist(), lesion_index.tolist()):
            p = float(probability[r, j])
            present = p >= thresholds[j]
            columns["report_key"].append(key)
            columns["region"].append(REGION_NAMES[r])
            columns["finding"].append(inference.lesions[j])
            columns["status"].append("present" if present else "absent")
            columns["confidence"].append(p if present else 1.0 - p)
    return pa.table(
        {
            **{k: columns[k] for k in ("report_key", "region", "finding", "status")},
            "confidence": pa.array(columns["confidence"], pa.float32()),
        }
    )


def _run_spec(name: str, inference: Inference, options: InferenceOptions) -> RunSpec:
    from labeling.core.files import file_sha256

    ckpt, checkpoint = inference.checkpoint, Path(options.checkpoint)
    params: dict[str, Any] = {
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": file_sha256(checkpoint),
        "split": options.split,
        "thresholds": dict(zip(inference.lesions, np.asarray(ckpt["thresholds"], np.float32).tolist())),
        "label_spec": ckpt["label_spec"],
        "train_config": ckpt["train_config"],
        "model_config": {k: v for k, v in ckpt["model_config"].items() if k not in ("pos_weight", "global_pos_weight")},
        "epoch": ckpt["epoch"],
    }
    return RunSpec(
        name=name,
        kind=RunKind.model,
        vocabulary_version=ckpt["vocabulary_version"],
        backend="clala-net",
        model=str(checkpoint.resolve()),
        source=str(checkpoint.resolve()),
        params=params,
    )


def predict_run(store: Store, request: PredictRequest, *, hooks: RunHooks | None = None) -> RunResult:
    """Store the checkpoint's region-level predictions as run `request.name` (see the module doc)."""
    from model.evaluate.inference import load_inference, predict_split

    options = request.inference
    check_new_run_name(store, request.name)
    if not store.current_report_count():
        raise InputError(f"{store.path}: no reports stored; ingest the cohort's reports first")
    inference = load_inference(options)
    # Prediction needs no labels: every image of the split, with empty targets.
    predictions = predict_split(options, inference)
    records = predictions.dataset.examples.records
    study_probability, study_seen, skipped = _study_probabilities(
        store, records, predictions.probabilities, predictions.box_mask, inference.train_config.get("dataset")
    )
    if not study_probability:
        raise InputError(f"{options.data}: none of the predicted images has a report in {store.path}")
    table = _label_table(inference, study_probability, study_seen)
    result = RunResult(name=request.name, kind=RunKind.model.value, source=str(Path(options.checkpoint).resolve()))
    result.reports = len(study_probability)
    if hooks:
        hooks.start(result)
    result.run_id = record_run(store, _run_spec(request.name, inference, options), sorted(study_probability), table)
    result.reports_done = result.reports
    result.labels = table.num_rows
    result.statuses = status_counts(table)
    result.counts = Counter(present=result.statuses["present"], images=len(records), skipped_images=skipped)
    if hooks:
        hooks.advance(result, result.reports)
    return result


__all__ = ["PredictRequest", "predict_run"]
