"""A synthetic cohort written in the real layouts (MIMIC-CXR-JPG + Chest ImaGenome), with its gold.

    DIR/files/pXX/pNNNNNNNN/sNNNNNNNN.txt                 report (MIMIC-CXR)
    DIR/files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg|png  image (MIMIC-CXR-JPG)
    DIR/scene_graph/<dicom_id>_SceneGraph.json            Chest ImaGenome scene graph
    DIR/splits/{train,valid,test}.csv, images_to_avoid.csv
    DIR/mimic-cxr-2.0.0-metadata.csv
    DIR/synth_gold.jsonl                                  image truth + report truth per study
    DIR/synth_cohort.json                                 how it was made (seed, sizes, prevalence)

The cohort plan (ids, patients, splits) comes from the seed alone; each study then draws from
its own generator seeded by (seed, study index), so studies can be made in any order, in any
process, and come out the same.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from labeling.core.errors import InputError
from model.synth.anatomy import anatomy_masks, region_boxes, sample_anatomy
from model.synth.render import (
    DEFAULT_PREVALENCE,
    RENDERED_FINDINGS,
    anatomy_parameters,
    choose_findings,
    render,
    sample_lesions,
)
from model.synth.reports import INDICATIONS, compose_report
from schemas.vocabulary import load_vocabulary

GENERATOR_VERSION = "1"
GOLD_FILE = "synth_gold.jsonl"
COHORT_FILE = "synth_cohort.json"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv"
SPLITS = ("train", "valid", "test")
SPLIT_WEIGHTS = (0.7, 0.1, 0.2)
REPORT_RATE = 0.88  # a lesion is described in the report
SUBTLE_RATE = (0.1, 0.4)  # density lesions drawn faint: (reported, unreported)
DENSITY_FINDINGS = {
    "lung opacity",
    "consolidation",
    "atelectasis",
    "linear/patchy atelectasis",
    "pulmonary edema/hazy opacity",
    "pleural effusion",
    "pneumothorax",
    "mass/nodule (not otherwise specified)",
}
METADATA_COLUMNS = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
SPLIT_COLUMNS = ["", "subject_id", "study_id", "dicom_id", "path", "ViewPosition"]


@dataclass(frozen=True)
class StudyPlan:
    index: int
    subject_id: int
    study_id: int
    dicom_id: str
    split: str
    avoid: bool
    study_date: int


@dataclass(frozen=True)
class CohortOptions:
    out: str
    seed: int
    size: int = 256
    image_format: str = "png"
    prevalence: tuple[tuple[str, float], ...] = tuple(DEFAULT_PREVALENCE.items())


def parse_prevalence(values: list[str] | None) -> dict[str, float]:
    """--prevalence values: a JSON object, or `finding=rate` items; finding names as in the
    vocabulary (or unambiguous starts of them: `mass=0.2`)."""
    prevalence = dict(DEFAULT_PREVALENCE)
    for value in values or []:
        value = value.strip()
        if value.startswith("{"):
            try:
                items = json.loads(value)
            except json.JSONDecodeError as exc:
                raise InputError(f"--prevalence: not valid JSON: {exc.msg}") from None
            if not isinstance(items, dict):
                raise InputError("--prevalence: the JSON must be an object of finding -> rate")
            pairs = list(items.items())
        else:
            if "=" not in value:
                raise InputError(f"--prevalence {value!r}: write FINDING=RATE or a JSON object")
            name, _, rate = value.rpartition("=")
            pairs = [(name.strip(), rate.strip())]
        for name, rate in pairs:
            matches = [f for f in RENDERED_FINDINGS if f == name] or [
                f for f in RENDERED_FINDINGS if f.startswith(name)
            ]
            if len(matches) != 1:
                raise InputError(
                    f"--prevalence: {name!r} is not one finding the phantom draws; choose from "
                    f"{', '.join(RENDERED_FINDINGS)}"
                )
            try:
                number = float(rate)
            except (TypeError, ValueError):
                raise InputError(f"--prevalence {name}: rate {rate!r} is not a number") from None
            if not 0.0 <= number <= 1.0:
                raise InputError(f"--prevalence {name}: rate {number} is not between 0 and 1")
            prevalence[matches[0]] = number
    return prevalence


def _fresh(rng: np.random.Generator, low: int, high: int, taken: set[int]) -> int:
    while True:
        value = int(rng.integers(low, high))
        if value not in taken:
            taken.add(value)
            return value


def plan_cohort(n: int, seed: int) -> list[StudyPlan]:
    """Patients (1-3 studies each), ids, splits by patient, and the avoided ("gold") patients.

    Each patient draws from its own generator, so a larger cohort of the same seed begins with
    the same patients and studies."""
    if n < 1:
        raise InputError(f"--n: need at least one study, got {n}")
    subjects: set[int] = set()
    studies: set[int] = set()
    plans: list[StudyPlan] = []
    patient = 0
    while len(plans) < n:
        rng = np.random.default_rng([seed, 0x5EED, patient])
        count = min(int(rng.choice([1, 1, 1, 2, 2, 3])), n - len(plans))
        subject = _fresh(rng, 10_000_000, 20_000_000, subjects)
        split = str(rng.choice(SPLITS, p=SPLIT_WEIGHTS))
        avoid = bool(rng.random() < 0.05)
        for _ in range(count):
            dicom = "-".join(rng.bytes(4).hex() for _ in range(5))
            plans.append(
                StudyPlan(
                    len(plans),
                    subject,
                    _fresh(rng, 50_000_000, 60_000_000, studies),
                    dicom,
                    split,
                    avoid,
                    int(21000101 + rng.integers(0, 3000)),
                )
            )
        patient += 1
    return plans


def study_folder(plan: StudyPlan) -> str:
    subject = str(plan.subject_id)
    return f"files/p{subject[:2]}/p{subject}/s{plan.study_id}"


@lru_cache(maxsize=1)
def _vocabulary():
    return load_vocabulary()


def make_study(plan: StudyPlan, options: CohortOptions) -> dict[str, Any]:
    """Draw, render and write one study; returns its gold record."""
    vocabulary = _vocabulary()
    rng = np.random.default_rng([options.seed, plan.index])
    prevalence = dict(options.prevalence)
    findings = choose_findings(rng, prevalence)
    anatomy_kwargs, anatomy_lesions = anatomy_parameters(rng, findings)
    height = options.size
    width = int(round(options.size * rng.uniform(0.82, 1.0)))
    anatomy = sample_anatomy(rng, width, height, **anatomy_kwargs)
    masks = anatomy_masks(anatomy)
    boxes = region_boxes(anatomy, masks)
    lesions = sample_lesions(rng, anatomy, masks, findings, anatomy_lesions)
    reported = []
    for lesion in lesions:
        told = bool(rng.random() < REPORT_RATE)
        reported.append(told)
        if lesion.finding in DENSITY_FINDINGS:
            lesion.subtle = bool(rng.random() < SUBTLE_RATE[0 if told else 1])
    pixels = render(rng, anatomy, masks, lesions)
    # What a statement that names no place says: the no-location rule (README, "Label semantics").
    defaults = {f.name: f.implied_regions for f in vocabulary.findings}
    draft = compose_report(rng, lesions, reported, defaults, str(rng.choice(INDICATIONS)))

    folder = Path(options.out) / study_folder(plan)
    folder.mkdir(parents=True, exist_ok=True)
    (folder.parent / f"s{plan.study_id}.txt").write_text(draft.text, encoding="utf-8")
    image_path = folder / f"{plan.dicom_id}.{options.image_format}"
    image = Image.fromarray(pixels, mode="L")
    if options.image_format == "jpg":
        image.save(image_path, quality=95)
    else:
        image.save(image_path, compress_level=3)

    image_truth = []
    for lesion, told in zip(lesions, reported):
        allowed = vocabulary.finding(lesion.finding).regions
        centers = [part["center"] for part in lesion.parts]
        regions = [
            name
            for name in vocabulary.region_names
            if name in allowed
            and any(boxes[name][0] <= x < boxes[name][2] and boxes[name][1] <= y < boxes[name][3] for x, y in centers)
        ]
        image_truth.append(
            {
                "finding": lesion.finding,
                "regions": regions,
                "home": list(lesion.home),
                "severity": lesion.severity,
                "subtle": lesion.subtle,
                "reported": told,
                "sides": list(lesion.sides),
                "centers": [[round(x, 2), round(y, 2)] for x, y in centers],
            }
        )
    report_truth = [
        {
            "finding": s.finding,
            "regions": list(s.regions),
            "status": s.status,
            "severity": s.severity,
            "temporal": s.temporal,
            "lesion": s.lesion,
            "evidence_start": s.start,
            "evidence_end": s.end,
            "evidence_text": s.text,
        }
        for s in draft.statements
    ]
    relative_image = image_path.relative_to(options.out).as_posix()
    scene_graph = _scene_graph(plan, boxes, width, height, draft.statements, vocabulary, rng)
    graph_dir = Path(options.out) / "scene_graph"
    graph_dir.mkdir(parents=True, exist_ok=True)
    (graph_dir / f"{plan.dicom_id}_SceneGraph.json").write_text(json.dumps(scene_graph), encoding="utf-8")
    return {
        "subject_id": str(plan.subject_id),
        "study_id": str(plan.study_id),
        "dicom_id": plan.dicom_id,
        "split": plan.split,
        "avoid": plan.avoid,
        "image_path": relative_image,
        "width": width,
        "height": height,
        "view": "PA" if rng.random() < 0.8 else "AP",
        "study_date": plan.study_date,
        "ctr": round(anatomy.ctr, 4),
        "tilt_deg": round(anatomy.tilt_deg, 3),
        "boxes": {k: [round(v, 2) for v in b] for k, b in boxes.items()},
        "image_truth": image_truth,
        "report_truth": report_truth,
    }


def _scene_graph(
    plan: StudyPlan,
    boxes: dict[str, tuple[float, float, float, float]],
    width: int,
    height: int,
    statements,
    vocabulary,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """The Chest ImaGenome scene-graph JSON: 224-scale boxes are on the image resized so its longer
    side is 224 and padded (centred) to a square."""
    scale = 224.0 / max(width, height)
    pad_x, pad_y = (224 - width * scale) / 2, (224 - height * scale) / 2
    objects = []
    for name in vocabulary.region_names:
        x1, y1, x2, y2 = boxes[name]
        ox1, oy1, ox2, oy2 = math.floor(x1), math.floor(y1), math.ceil(x2), math.ceil(y2)
        sx1, sy1 = round(ox1 * scale + pad_x), round(oy1 * scale + pad_y)
        sx2, sy2 = round(ox2 * scale + pad_x), round(oy2 * scale + pad_y)
        objects.append(
            {
                "object_id": f"{plan.dicom_id}_{name}",
                "x1": sx1,
                "y1": sy1,
                "x2": sx2,
                "y2": sy2,
                "width": sx2 - sx1,
                "height": sy2 - sy1,
                "bbox_name": name,
                "synsets": [],
                "name": name.title(),
                "original_x1": ox1,
                "original_y1": oy1,
                "original_x2": ox2,
                "original_y2": oy2,
                "original_width": ox2 - ox1,
                "original_height": oy2 - oy1,
            }
        )
    by_region: dict[str, dict[tuple[int, int], list]] = {}
    sentence_ids: dict[tuple[int, int], int] = {}
    for statement in statements:
        span = (statement.start, statement.end)
        sentence_ids.setdefault(span, len(sentence_ids))
        for region in statement.regions:
            by_region.setdefault(region, {}).setdefault(span, []).append(statement)
    attributes, relationships = [], []
    previous_dicom = "-".join(rng.bytes(4).hex() for _ in range(5))
    for region in vocabulary.region_names:
        if region not in by_region:
            continue
        entry: dict[str, Any] = {
            region: True,
            "bbox_name": region,
            "synsets": [],
            "name": region.title(),
            "attributes": [],
            "attributes_ids": [],
            "phrases": [],
            "phrase_IDs": [],
            "sections": [],
            "comparison_cues": [],
            "temporal_cues": [],
            "severity_cues": [],
            "texture_cues": [],
            "object_id": f"{plan.dicom_id}_{region}",
        }
        for span, said in by_region[region].items():
            # Chest ImaGenome's NLP affirms hedged findings ("possible X" -> yes); only negation is "no".
            attrs = [
                f"{vocabulary.finding(s.finding).category}|{'no' if s.status == 'absent' else 'yes'}|{s.finding}"
                for s in said
            ]
            attrs.append("nlp|yes|abnormal" if any(s.status != "absent" for s in said) else "nlp|yes|normal")
            entry["attributes"].append(attrs)
            entry["attributes_ids"].append(["" for _ in attrs])
            entry["phrases"].append(said[0].text)
            entry["phrase_IDs"].append(f"{plan.study_id}|{sentence_ids[span]}")
            entry["sections"].append("finalreport")
            temporal = sorted({s.temporal for s in said if s.temporal})
            entry["temporal_cues"].append(
                [f"temporal|yes|{'acute' if t == 'new' else 'chronic'}" for t in temporal if t in ("new", "unchanged")]
            )
            entry["severity_cues"].append(sorted({f"severity|yes|{s.severity}" for s in said if s.severity}))
            entry["comparison_cues"].append([f"comparison|yes|{_COMPARISON[t]}" for t in temporal])
            entry["texture_cues"].append([])
            for t in temporal:
                relationships.append(
                    {
                        "relationship_id": f"{plan.dicom_id}_{previous_dicom}_{region}",
                        "subject_id": f"{plan.dicom_id}_{region}",
                        "object_id": f"{previous_dicom}_{region}",
                        "bbox_name": region,
                        "relationship_names": [f"comparison|yes|{_COMPARISON[t]}"],
                        "attributes": attrs,
                        "phrase": said[0].text,
                    }
                )
        attributes.append(entry)
    return {
        "image_id": plan.dicom_id,
        "patient_id": plan.subject_id,
        "study_id": plan.study_id,
        "gender": "U",
        "reason_for_exam": "",
        "viewpoint": "PA",
        "objects": objects,
        "attributes": attributes,
        "relationships": relationships,
    }


_COMPARISON = {"new": "worsened", "worsened": "worsened", "improved": "improved", "unchanged": "no change"}


def check_output_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; --out needs a folder")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"{out}: folder is not empty; choose a new --out folder")


def write_index_files(options: CohortOptions, n: int, records: list[dict[str, Any]]) -> None:
    """Splits, images to avoid, metadata, gold and the cohort description, after all studies."""
    out = Path(options.out)
    records = sorted(records, key=lambda r: (r["subject_id"], r["study_id"]))
    (out / "splits").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        _write_split(out / "splits" / f"{split}.csv", [r for r in records if r["split"] == split])
    _write_split(out / "splits" / "images_to_avoid.csv", [r for r in records if r["avoid"]])
    with (out / METADATA_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(METADATA_COLUMNS)
        for r in records:
            writer.writerow(
                [
                    r["dicom_id"],
                    r["subject_id"],
                    r["study_id"],
                    "CHEST (PA AND LAT)",
                    r["view"],
                    r["height"],
                    r["width"],
                    r["study_date"],
                    "120000.000",
                    "CHEST (PA AND LAT)",
                    "postero-anterior" if r["view"] == "PA" else "antero-posterior",
                    "Erect",
                ]
            )
    with (out / GOLD_FILE).open("w", encoding="utf-8") as handle:
        for r in records:
            handle.write(json.dumps(r) + "\n")
    description = {
        "generator": "clala synth",
        "version": GENERATOR_VERSION,
        "studies": n,
        "seed": options.seed,
        "size": options.size,
        "image_format": options.image_format,
        "prevalence": dict(options.prevalence),
        "vocabulary": _vocabulary().version,
        "report_rate": REPORT_RATE,
        "subtle_rate": list(SUBTLE_RATE),
    }
    (out / COHORT_FILE).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")


def _write_split(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SPLIT_COLUMNS)
        for i, r in enumerate(records):
            writer.writerow([i, r["subject_id"], r["study_id"], r["dicom_id"], r["image_path"], r["view"]])


def options_for(out: Path, seed: int, size: int, image_format: str, prevalence: dict[str, float]) -> CohortOptions:
    if image_format not in ("png", "jpg"):
        raise InputError(f"--format: {image_format!r} is not png or jpg")
    if not 64 <= size <= 4096:
        raise InputError(f"--size: {size} is outside 64..4096 pixels")
    return CohortOptions(
        out=str(out), seed=seed, size=size, image_format=image_format, prevalence=tuple(sorted(prevalence.items()))
    )


def generate_cohort(
    out: Path,
    n: int,
    seed: int,
    *,
    size: int = 256,
    image_format: str = "png",
    prevalence: dict[str, float] | None = None,
    workers: int = 1,
    progress: Callable[[int], object] | None = None,
) -> Path:
    """Write a whole cohort; `progress(done)` is called after each study. Returns the folder."""
    out = Path(out)
    check_output_folder(out)
    options = options_for(out, seed, size, image_format, prevalence or dict(DEFAULT_PREVALENCE))
    plans = plan_cohort(n, seed)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    if workers <= 1:
        for plan in plans:
            records.append(make_study(plan, options))
            if progress:
                progress(len(records))
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            for record in pool.map(make_study, plans, [options] * len(plans), chunksize=4):
                records.append(record)
                if progress:
                    progress(len(records))
    write_index_files(options, n, records)
    return out


__all__ = [
    "generate_cohort",
    "plan_cohort",
    "make_study",
    "parse_prevalence",
    "CohortOptions",
    "StudyPlan",
    "GOLD_FILE",
    "COHORT_FILE",
]
