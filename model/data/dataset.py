"""Training data: MIMIC-CXR-JPG images with Chest ImaGenome region boxes, and per-region labels
from any run of the store, as a torch Dataset.

Reading (no torch needed): `load_cohort(images_root, imagenome_root, split)` reads the splits,
`images_to_avoid.csv`, the metadata CSV and one scene graph per image, and returns `ImageRecord`s
with the 29 boxes in original pixels (clipped to the image; zero-area and missing boxes marked
invalid and counted in `Cohort.box_problems`). A synthetic cohort is read the same way.

Labels: `build_examples(store, cohort, run, TargetOptions(...))` matches images to reports by study
id and turns the run's label matrix into targets + masks (`model.labels.targets`: the uncertainty
policy, stated once), in the main process (DuckDB connections must not cross into DataLoader
workers). `RegionDataset` then only decodes
images and moves boxes with them.

Horizontal flips are deliberately absent: a flipped chest swaps right and left, which would
silently corrupt every lateralized region label.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from labeling.core.errors import InputError
from model.labels.targets import TargetOptions, label_targets
from schemas.labels import UNMENTIONED
from schemas.vocabulary import load_vocabulary

if TYPE_CHECKING:
    from labeling.store.store import Store

REGION_NAMES: tuple[str, ...] = load_vocabulary().region_names
SPLITS = ("train", "valid", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".dcm")


# --- reading the layout -------------------------------------------------------------------------------
@dataclass
class ImageRecord:
    dicom_id: str
    subject_id: str
    study_id: str
    split: str
    image_path: Path
    width: int
    height: int
    boxes: np.ndarray  # [29, 4] float32, x1 y1 x2 y2 in original pixels (clipped)
    box_valid: np.ndarray  # [29] bool
    phrases: list[str]  # per region: the scene graph's phrases, joined


@dataclass
class Cohort:
    records: list[ImageRecord]
    split: str | None
    avoided: int = 0  # excluded by images_to_avoid.csv
    missing_images: int = 0
    missing_scene_graphs: int = 0
    box_problems: dict[str, int] = field(default_factory=dict)  # reason -> boxes dropped


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline=""))
    return list(reader)


def read_split_rows(imagenome_root: Path, split: str | None) -> list[dict[str, str]]:
    splits_dir = Path(imagenome_root) / "splits"
    if not splits_dir.is_dir():
        raise InputError(f"{splits_dir}: splits folder not found (expected Chest ImaGenome silver_dataset/splits)")
    rows = []
    for name in [split] if split else SPLITS:
        if name not in SPLITS:
            raise InputError(f"split {name!r}: choose one of {', '.join(SPLITS)}")
        path = splits_dir / f"{name}.csv"
        if not path.is_file():
            raise InputError(f"{path}: split file not found")
        for number, row in enumerate(_read_csv_rows(path), start=2):
            for column in ("dicom_id", "study_id", "subject_id"):
                if not (row.get(column) or "").strip():
                    raise InputError(f"{path}: line {number}: empty or missing column {column!r}")
            rows.append({**row, "_split": name})
    return rows


def read_images_to_avoid(imagenome_root: Path) -> set[str]:
    for path in (Path(imagenome_root) / "splits" / "images_to_avoid.csv", Path(imagenome_root) / "images_to_avoid.csv"):
        if path.is_file():
            rows = _read_csv_rows(path)
            if rows and "dicom_id" not in rows[0]:
                raise InputError(f"{path}: no 'dicom_id' column")
            return {row["dicom_id"].strip() for row in rows}
    return set()


def read_metadata_sizes(images_root: Path) -> dict[str, tuple[int, int]]:
    """dicom_id -> (width, height) from mimic-cxr-2.0.0-metadata.csv[.gz] (Columns, Rows), if present."""
    for name in ("mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-metadata.csv.gz"):
        path = Path(images_root) / name
        if path.is_file():
            sizes = {}
            for number, row in enumerate(_read_csv_rows(path), start=2):
                try:
                    sizes[row["dicom_id"]] = (int(float(row["Columns"])), int(float(row["Rows"])))
                except (KeyError, TypeError, ValueError):
                    raise InputError(f"{path}: line {number}: needs dicom_id, Rows and Columns") from None
            return sizes
    return {}


def read_scene_graph(path: Path) -> dict[str, Any]:
    try:
        graph = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(graph, dict):
        raise InputError(f"{path}: a scene graph must be a JSON object")
    if not isinstance(graph.get("objects"), list):
        raise InputError(f"{path}: field 'objects' is missing or not a list")
    return graph


def scene_graph_boxes(
    graph: dict[str, Any], path: Path, width: int, height: int, problems: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The 29 boxes in original pixels, clipped to the image; invalid ones counted in `problems`."""
    boxes = np.zeros((len(REGION_NAMES), 4), np.float32)
    valid = np.zeros(len(REGION_NAMES), bool)
    index = {name: i for i, name in enumerate(REGION_NAMES)}
    for number, obj in enumerate(graph["objects"]):
        if not isinstance(obj, dict) or "bbox_name" not in obj:
            raise InputError(f"{path}: objects[{number}]: field 'bbox_name' is missing")
        i = index.get(obj["bbox_name"])
        if i is None:
            continue  # one of the 7 bbox names outside RGRG's 29
        try:
            x1, y1, x2, y2 = (float(obj[k]) for k in ("original_x1", "original_y1", "original_x2", "original_y2"))
        except KeyError as exc:
            raise InputError(
                f"{path}: objects[{number}] ({obj['bbox_name']}): field {exc.args[0]!r} is missing"
            ) from None
        except (TypeError, ValueError):
            raise InputError(
                f"{path}: objects[{number}] ({obj['bbox_name']}): box coordinates must be numbers"
            ) from None
        x1, x2 = np.clip([x1, x2], 0, width)
        y1, y2 = np.clip([y1, y2], 0, height)
        if x2 - x1 < 1 or y2 - y1 < 1:
            problems["zero area after clipping"] = problems.get("zero area after clipping", 0) + 1
            continue
        boxes[i] = (x1, y1, x2, y2)
        valid[i] = True
    named = {obj.get("bbox_name") for obj in graph["objects"] if isinstance(obj, dict)}
    not_in_graph = sum(1 for name in REGION_NAMES if name not in named)
    if not_in_graph:
        problems["region missing from scene graph"] = problems.get("region missing from scene graph", 0) + not_in_graph
    return boxes, valid


def scene_graph_phrases(graph: dict[str, Any]) -> list[str]:
    phrases = [[] for _ in REGION_NAMES]
    index = {name: i for i, name in enumerate(REGION_NAMES)}
    for entry in graph.get("attributes") or []:
        i = index.get(str(entry.get("bbox_name"))) if isinstance(entry, dict) else None
        if i is not None:
            for phrase in entry.get("phrases") or []:
                text = " ".join(str(phrase).split())
                if text not in phrases[i]:
                    phrases[i].append(text)
    return [" ".join(p) for p in phrases]


def find_image(images_root: Path, row: dict[str, str]) -> Path | None:
    """The image a split row names: its path as given, or the same stem as JPG/PNG/DICOM (the real
    split files name .dcm files; MIMIC-CXR-JPG holds .jpg)."""
    given = Path(images_root) / row.get("path", "")
    if row.get("path") and given.is_file():
        return given
    folder = given.parent if row.get("path") else None
    if folder is None:
        subject, study = row["subject_id"].strip(), row["study_id"].strip()
        folder = Path(images_root) / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{row['dicom_id'].strip()}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels."""
    if path.suffix.lower() == ".dcm":
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows)
    with Image.open(path) as image:
        return image.size


def load_cohort(
    images_root: str | Path,
    imagenome_root: str | Path,
    split: str | None = "train",
    exclude_avoided: bool | None = None,
) -> Cohort:
    """Images of a split with their boxes. `images_to_avoid.csv` is excluded from the train split
    (or wherever `exclude_avoided` says)."""
    images_root, imagenome_root = Path(images_root), Path(imagenome_root)
    for folder, what in ((images_root, "images root"), (imagenome_root, "Chest ImaGenome root")):
        if not folder.is_dir():
            raise InputError(f"{folder}: {what} folder not found")
    graph_dir = imagenome_root / "scene_graph"
    if not graph_dir.is_dir():
        raise InputError(f"{graph_dir}: scene_graph folder not found")
    rows = read_split_rows(imagenome_root, split)
    avoid = (
        read_images_to_avoid(imagenome_root)
        if (exclude_avoided if exclude_avoided is not None else split == "train")
        else set()
    )
    sizes = read_metadata_sizes(images_root)
    cohort = Cohort(records=[], split=split)
    for row in rows:
        dicom = row["dicom_id"].strip()
        if dicom in avoid:
            cohort.avoided += 1
            continue
        image = find_image(images_root, row)
        if image is None:
            cohort.missing_images += 1
            continue
        graph_path = graph_dir / f"{dicom}_SceneGraph.json"
        if not graph_path.is_file():
            cohort.missing_scene_graphs += 1
            continue
        width, height = sizes.get(dicom) or image_size(image)
        graph = read_scene_graph(graph_path)
        boxes, valid = scene_graph_boxes(graph, graph_path, width, height, cohort.box_problems)
        cohort.records.append(
            ImageRecord(
                dicom,
                row["subject_id"].strip(),
                row["study_id"].strip(),
                row["_split"],
                image,
                width,
                height,
                boxes,
                valid,
                scene_graph_phrases(graph),
            )
        )
    return cohort


# --- labels -------------------------------------------------------------------------------------------
@dataclass
class Examples:
    """Everything a Dataset needs, as plain arrays (safe to pickle into workers)."""

    records: list[ImageRecord]
    findings: tuple[str, ...]
    report_keys: np.ndarray  # [N] int64, -1 where no report
    targets: np.ndarray  # [N, 29, L] float32
    masks: np.ndarray  # [N, 29, L] bool: False = not trained on
    sentences: list[list[str]]  # [N][29]
    unlabeled: int = 0  # images whose study the run does not cover (skipped or all-negative)
    # The global classifier's targets [N, L] (float32) and mask (bool): the run's region labels
    # collapsed together with its region-less (image-level) ones. None: derived from the region ones.
    image_targets: np.ndarray | None = None
    image_masks: np.ndarray | None = None

    def image_level(self) -> tuple[np.ndarray, np.ndarray]:
        """(image targets [N, L] float32, mask [N, L] bool): the stored ones, else a lesion is
        present when a region has it, absent when no region has it and none of its cells is masked."""
        if self.image_targets is not None and self.image_masks is not None:
            return self.image_targets, self.image_masks
        present = ((self.targets > 0.5) & self.masks).any(axis=1)
        return present.astype(np.float32), present | self.masks.all(axis=1)

    def without_reports(self, report_keys: np.ndarray) -> Examples:
        """These examples less the images of `report_keys` (a cross-fitting fold held out)."""
        keep = ~np.isin(self.report_keys, report_keys)
        return dataclasses.replace(
            self,
            records=[r for r, k in zip(self.records, keep) if k],
            report_keys=self.report_keys[keep],
            targets=self.targets[keep],
            masks=self.masks[keep],
            sentences=[t for t, k in zip(self.sentences, keep) if k],
            image_targets=None if self.image_targets is None else self.image_targets[keep],
            image_masks=None if self.image_masks is None else self.image_masks[keep],
        )


def build_examples(store: Store, cohort: Cohort, run: str, options: TargetOptions | None = None) -> Examples:
    """Targets for `cohort` from `run` under `options` (`model.labels.targets.TargetOptions`):
    uncertain -> positive | negative | ignore; unmentioned cells -> negative | ignore; images whose
    report the run did not cover -> error | skip | all-negative; reference sentences from the
    run's evidence, the scene graph, or none."""
    options = options or TargetOptions()
    options.check()
    findings = tuple(options.findings) if options.findings else run_lesions(store, run)
    keys = _report_keys(store, cohort, run, options.dataset)
    missing = int((keys < 0).sum())
    if missing and options.unlabeled == "error":
        example = cohort.records[int(np.argmax(keys < 0))].study_id
        raise InputError(
            f"run {run!r} has no labels for {missing:,} of {len(keys):,} images (e.g. study "
            f"{example}); choose unlabeled='skip' or 'all-negative'"
        )
    keep = np.ones(len(keys), bool) if options.unlabeled == "all-negative" else keys >= 0
    records = [r for r, k in zip(cohort.records, keep) if k]
    keys = keys[keep]
    labelled = np.unique(keys[keys >= 0])
    codes, placeless = _run_codes(store, run, findings, keys, labelled)
    # The no-location rule (`model.labels.targets.label_targets`): a region-less label ("no
    # pneumothorax", "mild atelectasis") trains the global classifier, and its absent / somewhere
    # says what it can of the regions.
    targets, masks, image_targets, image_masks = label_targets(
        codes, placeless, options.uncertain, options.unmentioned, unlabeled_rows=keys < 0
    )
    if options.sentences == "scene-graph":
        texts = [list(r.phrases) for r in records]
    elif options.sentences == "evidence":
        evidence = _evidence_sentences(store, run, labelled)
        texts = [[evidence.get((int(k), name), "") for name in REGION_NAMES] for k in keys]
    else:
        texts = [[""] * len(REGION_NAMES) for _ in records]
    return Examples(
        records,
        findings,
        keys,
        targets,
        masks,
        texts,
        unlabeled=missing,
        image_targets=image_targets,
        image_masks=image_masks,
    )


def _run_codes(
    store: Store, run: str, findings: tuple[str, ...], keys: np.ndarray, labelled: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per image (row of `keys`, -1: no report): the run's region codes [N, 29, L] and its
    region-less codes [N, L]."""
    region = store.label_matrix(run, REGION_NAMES, findings, labelled.tolist())
    placeless = store.placeless_matrix(run, findings, labelled.tolist())
    row_of = {int(k): i for i, k in enumerate(region.report_keys)}  # the same order in both
    rows = np.asarray([row_of.get(int(k), -1) for k in keys], dtype=np.int64)
    has = rows >= 0
    codes = np.full((len(keys), len(REGION_NAMES), len(findings)), UNMENTIONED, np.int8)
    placeless_codes = np.full((len(keys), len(findings)), UNMENTIONED, np.int8)
    codes[has] = region.codes[rows[has]]
    placeless_codes[has] = placeless.codes[rows[has]]
    return codes, placeless_codes


def _report_keys(store: Store, cohort: Cohort, run: str, dataset: str | None) -> np.ndarray:
    """Per image, the key of its study's report that `run` covers (-1: none)."""
    found = store.report_keys([r.study_id for r in cohort.records], by="study_id", dataset=dataset)
    covered = set(store.covered_reports(run).tolist())
    keys = []
    for record in cohort.records:
        # Only the run's reports count: a generated report reuses its source's study id.
        hits = [key for _, key in found.get(record.study_id, []) if key in covered]
        if len(hits) > 1:
            raise InputError(f"study {record.study_id} is stored in several datasets; pass dataset=")
        keys.append(hits[0] if hits else -1)
    return np.asarray(keys, dtype=np.int64)


def run_lesions(store: Store, run: str) -> tuple[str, ...]:
    """The lesions a model trains on by default: every finding the run labels, at region or image
    level, in vocabulary order, unknown findings after them by name. (A label spec lays its matrix
    out over the region-level findings only, and sensitivity scores the reference's present ones:
    `Store.run_findings` says which.)"""
    return store.run_findings(run, load_vocabulary().finding_names)


def _evidence_sentences(store: Store, run: str, report_keys: np.ndarray) -> dict[tuple[int, str], str]:
    joined: dict[tuple[int, str], list[str]] = {}
    for key, region, text in store.region_evidence(run, report_keys.tolist()):
        text = " ".join(text.split())
        bucket = joined.setdefault((int(key), region), [])
        if text not in bucket:
            bucket.append(text)
    return {cell: " ".join(texts) for cell, texts in joined.items()}


# --- images -----------------------------------------------------------------------------------------------
def read_image(path: str | Path) -> np.ndarray:
    """A grayscale image as float32 [H, W] in [0, 1]: PNG/JPG (8- or 16-bit) or DICOM (modality and
    VOI LUTs applied, MONOCHROME1 inverted)."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        import pydicom
        from pydicom.pixels import processing  # where pydicom.pixels re-exports the LUTs from

        try:
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
        except Exception as exc:  # pydicom raises many types for damaged files
            raise InputError(f"{path}: cannot read DICOM pixels: {exc}") from None
        data = processing.apply_modality_lut(pixels, ds).astype(np.float32)
        if "WindowCenter" in ds:
            data = processing.apply_voi_lut(data, ds).astype(np.float32)
        low, high = float(data.min()), float(data.max())
        data = (data - low) / (high - low) if high > low else np.zeros_like(data)
        if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            data = 1.0 - data
        return data
    try:
        with Image.open(path) as image:
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                data = np.asarray(image, dtype=np.float32)
                return data / (65535.0 if data.max() > 255 or image.mode.startswith("I;16") else 255.0)
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except OSError as exc:
        raise InputError(f"{path}: cannot read image: {exc}") from None


@dataclass(frozen=True)
class Augment:
    """Small random scale and shift that move the boxes with the image (no flips: see module doc)."""

    scale: tuple[float, float] = (0.92, 1.08)
    shift: float = 0.04  # fraction of the output size


def letterbox(
    image: np.ndarray, boxes: np.ndarray, size: int, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Resize the longer side to `size` (times `scale`), pad to a centred square, shift; boxes follow.
    Returns the [size, size] image and the boxes in its pixels (clipped)."""
    height, width = image.shape
    factor = size / max(width, height) * scale
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    resized = np.asarray(Image.fromarray(image, mode="F").resize((new_w, new_h), Image.Resampling.BILINEAR))
    off_x = (size - new_w) / 2 + shift[0]
    off_y = (size - new_h) / 2 + shift[1]
    ox, oy = int(round(off_x)), int(round(off_y))
    canvas = np.zeros((size, size), np.float32)
    sx1, sy1 = max(0, -ox), max(0, -oy)
    dx1, dy1 = max(0, ox), max(0, oy)
    w = min(new_w - sx1, size - dx1)
    h = min(new_h - sy1, size - dy1)
    if w > 0 and h > 0:
        canvas[dy1 : dy1 + h, dx1 : dx1 + w] = resized[sy1 : sy1 + h, sx1 : sx1 + w]
    fx, fy = new_w / width, new_h / height
    moved = boxes * np.array([fx, fy, fx, fy], np.float32) + np.array([ox, oy, ox, oy], np.float32)
    return canvas, np.clip(moved, 0, size)


if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset as _TorchDataset
else:
    try:
        import torch
        from torch.utils.data import Dataset as _TorchDataset
    except ImportError:  # the readers above work without torch
        torch = None
        _TorchDataset = object


class RegionDataset(_TorchDataset):
    """(image, 29 boxes, box validity, region x lesion targets and mask, region sentences).

    `RegionDataset(examples, image_size=512, augment=None, mean=0.5, std=0.25, seed=0)`;
    items are dicts, batched by `collate`.
    """

    def __init__(
        self,
        examples: Examples,
        image_size: int = 512,
        augment: Augment | None = None,
        mean: float = 0.5,
        std: float = 0.25,
        seed: int = 0,
    ):
        if torch is None:
            raise ImportError("RegionDataset needs torch: pip install 'clala[model]'")
        self.examples = examples
        self.findings = examples.findings
        self.regions = REGION_NAMES
        self.image_size = image_size
        self.augment = augment
        self.mean, self.std = mean, std
        self.seed = seed
        self.epoch = 0
        self.cohort: Cohort | None = None  # set by `from_store`
        self._image_targets, self._image_masks = examples.image_level()

    def __len__(self) -> int:
        return len(self.examples.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.examples.records[index]
        pixels = read_image(record.image_path)
        height, width = pixels.shape
        boxes = record.boxes.copy()
        if (width, height) != (record.width, record.height):
            # Metadata or boxes measured on another resolution (e.g. MIMIC-CXR-JPG vs DICOM): rescale.
            boxes *= np.array([width / record.width, height / record.height] * 2, np.float32)
        scale, shift = 1.0, (0.0, 0.0)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            scale = float(rng.uniform(*self.augment.scale))
            shift = tuple(rng.uniform(-1, 1, 2) * self.augment.shift * self.image_size)
        image, boxes = letterbox(pixels, boxes, self.image_size, scale, shift)
        valid = record.box_valid & ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        image = (image - self.mean) / self.std
        return {
            "image": torch.from_numpy(image)[None],
            "boxes": torch.from_numpy(boxes.astype(np.float32)),
            "box_valid": torch.from_numpy(valid),
            "labels": torch.from_numpy(self.examples.targets[index]),
            "label_mask": torch.from_numpy(self.examples.masks[index] & valid[:, None]),
            "image_labels": torch.from_numpy(self._image_targets[index]),
            "image_label_mask": torch.from_numpy(self._image_masks[index]),
            "sentences": self.examples.sentences[index],
            "dicom_id": record.dicom_id,
            "study_id": record.study_id,
            "report_key": int(self.examples.report_keys[index]),
        }

    @classmethod
    def from_store(
        cls, store: Store, cohort: Cohort, run: str, targets: TargetOptions | None = None, **kwargs
    ) -> RegionDataset:
        """The dataset of `cohort` with targets from `run` (`kwargs`: image_size, augment, ...)."""
        dataset = cls(build_examples(store, cohort, run, targets), **kwargs)
        dataset.cohort = cohort
        return dataset


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep sentences and ids as lists."""
    batch: dict[str, Any] = {}
    for key in ("image", "boxes", "box_valid", "labels", "label_mask", "image_labels", "image_label_mask"):
        batch[key] = torch.stack([item[key] for item in items])
    batch["report_key"] = torch.tensor([item["report_key"] for item in items], dtype=torch.int64)
    for key in ("sentences", "dicom_id", "study_id"):
        batch[key] = [item[key] for item in items]
    return batch


__all__ = [
    "ImageRecord",
    "Cohort",
    "load_cohort",
    "Examples",
    "build_examples",
    "read_image",
    "letterbox",
    "Augment",
    "RegionDataset",
    "collate",
    "REGION_NAMES",
]
