"""Loaders and the Dataset: MIMIC-CXR-JPG + Chest ImaGenome layout (read from a generated cohort,
with no special case for it), boxes, splits, images to avoid, label policies, images of every
format, and batches that equal the store's rows."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeling.core.errors import InputError
from labeling.store.store import Store
from model.data.dataset import REGION_NAMES, build_examples, letterbox, load_cohort, read_image
from model.labels.targets import TargetOptions
from model.synth.render import DEFAULT_PREVALENCE
from model.synth.writer import generate_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return generate_cohort(
        tmp_path_factory.mktemp("data") / "c",
        16,
        seed=21,
        size=128,
        prevalence={name: 0.3 for name in DEFAULT_PREVALENCE},
    )


@pytest.fixture(scope="module")
def labelled(cohort: Path, tmp_path_factory) -> Path:
    """The cohort ingested and its gold imported, through the real CLI."""
    from typer.testing import CliRunner

    from cli import app

    db = tmp_path_factory.mktemp("db") / "d.duckdb"
    runner = CliRunner()
    for args in (
        ["ingest", cohort / "files", "--format", "mimic", "--db", db],
        ["import", "synth-gold", cohort, "--name", "g", "--db", db],
    ):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.stdout
    return db


def split_ids(root: Path, name: str) -> list[str]:
    with (root / "splits" / f"{name}.csv").open() as handle:
        return [row["dicom_id"] for row in csv.DictReader(handle)]


def gold(root: Path) -> dict[str, dict]:
    return {r["dicom_id"]: r for r in map(json.loads, (root / "synth_gold.jsonl").read_text().splitlines())}


def test_cohort_reads_boxes_in_original_pixels(cohort: Path):
    loaded = load_cohort(cohort, cohort, split=None)
    truth = gold(cohort)
    assert len(loaded.records) == 16 and not loaded.box_problems and not loaded.missing_images
    for record in loaded.records:
        r = truth[record.dicom_id]
        assert (record.width, record.height) == (r["width"], r["height"])
        assert record.box_valid.all()
        for i, name in enumerate(REGION_NAMES):
            # floor/ceil of the phantom's box: within a pixel.
            assert np.allclose(record.boxes[i], r["boxes"][name], atol=1.0)


def test_images_to_avoid_are_left_out_of_training(cohort: Path, tmp_path: Path):
    root = tmp_path / "c"
    shutil.copytree(cohort, root)
    train = split_ids(root, "train")
    avoid = train[:2]
    with (root / "splits" / "images_to_avoid.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "subject_id", "study_id", "dicom_id", "path", "ViewPosition"])
        for i, dicom in enumerate(avoid):
            writer.writerow([i, "1", "1", dicom, "", "PA"])
    loaded = load_cohort(root, root, "train")
    assert loaded.avoided == 2 and {r.dicom_id for r in loaded.records} == set(train) - set(avoid)
    assert len(load_cohort(root, root, "train", exclude_avoided=False).records) == len(train)
    assert {r.split for r in load_cohort(root, root, "test").records} <= {"test"}


def test_degenerate_and_missing_boxes_are_dropped_and_counted(cohort: Path, tmp_path: Path):
    root = tmp_path / "c"
    shutil.copytree(cohort, root)
    dicom = split_ids(root, "train")[0]
    path = root / "scene_graph" / f"{dicom}_SceneGraph.json"
    graph = json.loads(path.read_text())
    objects = {o["bbox_name"]: o for o in graph["objects"]}
    objects["spine"].update(original_x1=-40, original_x2=-5)  # wholly left of the image
    objects["trachea"].update(original_y2=objects["trachea"]["original_y1"])  # zero height
    objects["abdomen"].update(original_y2=10_000)  # beyond: clipped, kept
    graph["objects"] = [o for o in graph["objects"] if o["bbox_name"] != "carina"]
    path.write_text(json.dumps(graph))
    loaded = load_cohort(root, root, "train", exclude_avoided=False)
    record = next(r for r in loaded.records if r.dicom_id == dicom)
    dropped = [REGION_NAMES[i] for i in np.flatnonzero(~record.box_valid)]
    assert sorted(dropped) == ["carina", "spine", "trachea"]
    assert loaded.box_problems == {"zero area after clipping": 2, "region missing from scene graph": 1}
    assert record.boxes[REGION_NAMES.index("abdomen"), 3] == record.height


def test_bad_layout_gives_one_line_errors(cohort: Path, tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        load_cohort(tmp_path / "nowhere", cohort)
    root = tmp_path / "c"
    shutil.copytree(cohort, root)
    dicom = split_ids(root, "train")[0]
    path = root / "scene_graph" / f"{dicom}_SceneGraph.json"
    graph = json.loads(path.read_text())
    del graph["objects"][3]["original_y2"]
    path.write_text(json.dumps(graph))
    with pytest.raises(InputError, match=r"SceneGraph\.json: objects\[3\].*'original_y2'"):
        load_cohort(root, root, "train")
    path.write_text("{not json")
    with pytest.raises(InputError, match=r"SceneGraph\.json: not valid JSON"):
        load_cohort(root, root, "train")


def test_label_policies(cohort: Path, labelled: Path):
    loaded = load_cohort(cohort, cohort, split=None)
    with Store(labelled, read_only=True) as store:
        rows = store.labels("g-report").to_pylist()
    uncertain = [r for r in rows if r["status"] == "uncertain" and r["region"]]
    assert uncertain, "the cohort should hold hedged statements"
    findings = sorted({r["finding"] for r in rows})
    with Store(labelled, read_only=True) as store:
        ignore = build_examples(store, loaded, "g-report", TargetOptions(tuple(findings), uncertain="ignore"))
        positive = build_examples(store, loaded, "g-report", TargetOptions(tuple(findings), uncertain="positive"))
        strict = build_examples(store, loaded, "g-report", TargetOptions(tuple(findings), unmentioned="ignore"))
    row_of = {int(k): i for i, k in enumerate(ignore.report_keys)}
    for label in uncertain:
        i, r, f = row_of[label["report_key"]], REGION_NAMES.index(label["region"]), findings.index(label["finding"])
        assert not ignore.masks[i, r, f] and ignore.targets[i, r, f] == 0
        assert positive.masks[i, r, f] and positive.targets[i, r, f] == 1
    # Known cells: the located labels that are not uncertain, and every other region of a finding
    # the report's own words say is absent without naming a place (the no-location rule).
    located: dict[tuple, int] = {}
    for r in rows:
        if r["region"]:
            located[r["report_key"], r["finding"]] = located.get((r["report_key"], r["finding"]), 0) + 1
    placeless_absent = [(r["report_key"], r["finding"]) for r in rows if not r["region"] and r["status"] == "absent"]
    assert placeless_absent, "the cohort's normal statements name no place"
    assert strict.masks.sum() == sum(1 for r in rows if r["region"] and r["status"] != "uncertain") + sum(
        len(REGION_NAMES) - located.get(pair, 0) for pair in placeless_absent
    )


def test_unlabeled_reports_policy(cohort: Path, labelled: Path, tmp_path: Path):
    loaded = load_cohort(cohort, cohort, split=None)
    db = tmp_path / "d.duckdb"
    shutil.copy(labelled, db)
    with Store(db) as store:
        key = int(store.covered_reports("g-report")[0])
        store.con.execute("DELETE FROM work WHERE report_key = ? AND run_id = ?", [key, store.run("g-report").run_id])
    with Store(db, read_only=True) as store:
        with pytest.raises(InputError, match="no labels for 1 of 16 images"):
            build_examples(store, loaded, "g-report")
        assert len(build_examples(store, loaded, "g-report", TargetOptions(unlabeled="skip")).records) == 15
        negative = build_examples(store, loaded, "g-report", TargetOptions(unlabeled="all-negative"))
        with pytest.raises(InputError, match="uncertain"):
            build_examples(store, loaded, "g-report", TargetOptions(uncertain="maybe"))
    missing = int(np.flatnonzero(negative.report_keys < 0)[0])
    assert negative.unlabeled == 1 and negative.targets[missing].sum() == 0 and negative.masks[missing].all()


def test_dataset_batches_equal_the_store(cohort: Path, labelled: Path):
    torch = pytest.importorskip("torch")
    from model.data.dataset import Augment, RegionDataset, collate

    every_image = load_cohort(cohort, cohort, None)
    with Store(labelled, read_only=True) as store:
        dataset = RegionDataset.from_store(
            store, every_image, "g-image", TargetOptions(sentences="scene-graph"), image_size=96
        )
        text = RegionDataset.from_store(store, every_image, "g-report", image_size=64)
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, collate_fn=collate, num_workers=2)
    with Store(labelled, read_only=True) as store:
        present = {(r["report_key"], r["region"], r["finding"]) for r in store.labels("g-image").to_pylist()}
    seen = 0
    for batch in loader:
        assert batch["image"].shape[1:] == (1, 96, 96) and batch["image"].dtype == torch.float32
        assert batch["boxes"].shape[1:] == (29, 4) and batch["labels"].shape[1:] == (29, len(dataset.findings))
        assert (batch["boxes"] >= 0).all() and (batch["boxes"] <= 96).all()
        for b, key in enumerate(batch["report_key"].tolist()):
            got = {(key, REGION_NAMES[r], dataset.findings[f]) for r, f in zip(*np.nonzero(batch["labels"][b].numpy()))}
            assert got == {cell for cell in present if cell[0] == key}
            seen += 1
        assert len(batch["sentences"]) == len(batch["dicom_id"]) and len(batch["sentences"][0]) == 29
    assert seen == 16
    # Evidence sentences come from the report run.
    assert any(s for i in range(len(text)) for s in text[i]["sentences"])
    # Augmentation moves the boxes with the image, reproducibly per (seed, epoch, index).
    moved = RegionDataset(dataset.examples, image_size=96, augment=Augment(scale=(1.1, 1.1), shift=0.05), seed=1)
    a, b = moved[0], moved[0]
    assert torch.equal(a["boxes"], b["boxes"]) and not torch.equal(a["boxes"], dataset[0]["boxes"])


def test_letterbox_moves_boxes_with_pixels():
    image = np.zeros((100, 60), np.float32)
    image[20:40, 10:30] = 1.0
    box = np.array([[10, 20, 30, 40]], np.float32)
    for scale, shift in ((1.0, (0, 0)), (0.9, (7, -5))):
        out, moved = letterbox(image, box, 50, scale, shift)
        x1, y1, x2, y2 = moved[0].round().astype(int)
        assert out[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].mean() > 0.9
        assert out.sum() == pytest.approx(((x2 - x1) * (y2 - y1)), rel=0.2)


def test_images_of_every_format(tmp_path: Path):
    pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    ramp16 = (np.arange(40 * 30, dtype=np.uint32).reshape(40, 30) * 4).astype(np.uint16)
    ramp8 = (np.arange(40 * 30).reshape(40, 30) % 256).astype(np.uint8)

    def dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2") -> Path:
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.Rows, ds.Columns = pixels.shape
        bits = pixels.dtype.itemsize * 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
        ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, photometric
        ds.PixelData = pixels.tobytes()
        ds.save_as(path, enforce_file_format=True)
        return path

    for pixels in (ramp16, ramp8):
        data = read_image(dicom(tmp_path / f"x{pixels.dtype}.dcm", pixels))
        assert data.shape == (40, 30) and data.dtype == np.float32
        assert data.min() == 0 and data.max() == 1
        assert np.allclose(data, (pixels - pixels.min()) / float(pixels.max() - pixels.min()), atol=1e-6)
    inverted = read_image(dicom(tmp_path / "inv.dcm", ramp16, "MONOCHROME1"))
    assert inverted[0, 0] == 1 and inverted[-1, -1] == 0
    Image.fromarray(ramp16).save(tmp_path / "x16.png")
    assert np.allclose(read_image(tmp_path / "x16.png"), ramp16 / 65535.0)
    Image.fromarray(ramp8).save(tmp_path / "x8.png")
    assert np.allclose(read_image(tmp_path / "x8.png"), ramp8 / 255.0)
    Image.fromarray(ramp8).save(tmp_path / "x8.jpg", quality=100)
    assert np.abs(read_image(tmp_path / "x8.jpg") - ramp8 / 255.0).max() < 0.1
    (tmp_path / "bad.dcm").write_bytes(b"not a dicom")
    with pytest.raises(InputError, match="bad.dcm"):
        read_image(tmp_path / "bad.dcm")


def test_region_less_labels_train_the_global_classifier_only(cohort: Path, labelled: Path, tmp_path: Path):
    """The no-location rule in training: a region-less present lesion is an image-level positive
    and leaves its regions unknown (masked), not positive in every lung region; a region-less
    absent one is absent in every region; a located one is where it is said to be."""
    torch = pytest.importorskip("torch")
    from labeling.store.run_records import record_run
    from model.data.batches import BatchCollator, allowed_cells
    from model.data.dataset import RegionDataset
    from schemas.runs import RunKind, RunSpec
    from schemas.vocabulary import load_vocabulary

    db = tmp_path / "d.duckdb"
    shutil.copy(labelled, db)
    atelectasis, pneumothorax, effusion = "atelectasis", "pneumothorax", "pleural effusion"
    with Store(db) as store:
        covered = [int(k) for k in store.covered_reports("g-report")]
        key = covered[0]
        rows = [
            (None, atelectasis, "present"),
            (None, pneumothorax, "absent"),
            ("right lower lung zone", effusion, "present"),
        ]
        record_run(
            store,
            RunSpec(name="placeless", kind=RunKind.rules, vocabulary_version=load_vocabulary().version),
            covered,
            {
                "report_key": [key] * 3,
                "region": [r for r, _, _ in rows],
                "finding": [f for _, f, _ in rows],
                "status": [s for _, _, s in rows],
            },
        )
    loaded = load_cohort(cohort, cohort, split=None)
    findings = (atelectasis, pneumothorax, effusion)
    with Store(db, read_only=True) as store:
        examples = build_examples(store, loaded, "placeless", TargetOptions(findings, sentences="none"))
        strict = build_examples(
            store, loaded, "placeless", TargetOptions(findings, unmentioned="ignore", sentences="none")
        )
    i = int(np.flatnonzero(examples.report_keys == key)[0])
    lungs = [REGION_NAMES.index(r) for r in load_vocabulary().finding(atelectasis).regions]
    image_targets, image_masks = examples.image_level()
    assert examples.image_targets is not None  # the run's own, not derived from the regions
    assert image_targets[i].tolist() == [1.0, 0.0, 1.0] and image_masks[i].all()
    assert examples.targets[i, :, 0].sum() == 0 and not examples.masks[i, :, 0].any()  # somewhere, not where
    assert examples.targets[i, :, 1].sum() == 0 and strict.masks[i, lungs, 1].all()  # absent everywhere, known
    rll = REGION_NAMES.index("right lower lung zone")
    assert examples.targets[i, :, 2].nonzero()[0].tolist() == [rll] and examples.masks[i, :, 2].all()
    others = examples.report_keys != key
    assert image_targets[others].sum() == 0 and image_masks[others].all()
    # Through the real Dataset and collator, the global targets are the run's, not the regions' collapse.
    dataset = RegionDataset(examples, image_size=64)
    batch = BatchCollator(allowed_cells(findings))([dataset[i], dataset[(i + 1) % len(dataset)]])
    assert batch["image_labels"][0].tolist() == [1.0, 0.0, 1.0] and batch["image_label_mask"][0].all()
    assert not batch["label_mask"][0, :, 0].any() and batch["labels"][0].sum() == 1
    assert isinstance(batch["image_labels"], torch.Tensor)
