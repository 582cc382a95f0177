"""Run comparison: exact counts computed by hand, kappa and F1 checked against scikit-learn, each
uncertain policy, image-level collapse, common reports only, micro vs macro, CSV, CLI errors."""

import csv
import json
import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, precision_recall_fscore_support

from labeling.core.errors import InputError
from labeling.review.compare import (
    CompareOptions,
    bin_counts,
    cell_bins,
    compare_runs,
    compare_to_reference,
    metrics_from_counts,
)
from labeling.store.run_records import record_run
from labeling.store.store import Store
from schemas.labels import ABSENT, PRESENT, UNCERTAIN, UNMENTIONED
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import load_vocabulary

EFF, CARDIO, PTX = "pleural effusion", "enlarged cardiac silhouette", "pneumothorax"
LCP, RCP, HEART, RLUNG, LLUNG = (
    "left costophrenic angle",
    "right costophrenic angle",
    "cardiac silhouette",
    "right lung",
    "left lung",
)
REGIONS = load_vocabulary().region_names

TEXTS = {
    "r1": "Small left pleural effusion.",
    "r2": (
        "Small left pleural effusion. Right pneumothorax is questioned. No pneumothorax on the lateral. No atelectasis."
    ),
    "r3": "Possible left pleural effusion. Right pleural effusion.",
    "r4": "The heart may be enlarged. Left apical pneumothorax.",
    "r5": "No left pleural effusion. Blunted left costophrenic angle, effusion.",
    "r6": "Left pleural effusion.",
}

# (report, region, finding) -> (status, evidence or None); the scored run "llm" covers r1-r5,
# the reference "gold" covers r2-r6, so r2-r5 are compared.
LLM = {
    ("r1", LCP, EFF): ("present", "Small left pleural effusion"),
    ("r2", LCP, EFF): ("present", "Small left pleural effusion"),
    ("r2", RLUNG, PTX): ("absent", "No pneumothorax"),
    ("r2", RLUNG, "atelectasis"): ("absent", "No atelectasis"),
    ("r3", LCP, EFF): ("uncertain", "Possible left pleural effusion"),
    ("r3", RCP, EFF): ("present", "Right pleural effusion"),
    ("r4", HEART, CARDIO): ("present", "The heart may be enlarged"),
    ("r4", LLUNG, PTX): ("present", "Left apical pneumothorax"),
    ("r5", LCP, EFF): ("absent", None),
}
GOLD = {
    ("r2", LCP, EFF): ("present", "Small left pleural effusion"),
    ("r2", RLUNG, PTX): ("present", "Right pneumothorax"),
    ("r3", LCP, EFF): ("present", "Possible left pleural effusion"),
    ("r3", RCP, EFF): ("present", "Right pleural effusion"),
    ("r4", HEART, CARDIO): ("uncertain", "The heart may be enlarged"),
    ("r5", LCP, EFF): ("present", "Blunted left costophrenic angle, effusion"),
    ("r6", LCP, EFF): ("present", "Left pleural effusion"),
}
# An image-level source (like a CheXpert import): region None.
IMAGE_ONLY = {
    ("r2", None, EFF): ("present", None),
    ("r3", None, EFF): ("uncertain", None),
    ("r4", None, PTX): ("present", None),
}
COMMON = ["r2", "r3", "r4", "r5"]


def label_columns(keys: dict[str, int], labels: dict) -> dict[str, list]:
    columns = {
        c: [] for c in ("report_key", "region", "finding", "status", "evidence_start", "evidence_end", "evidence_text")
    }
    for (report, region, finding), (status, evidence) in labels.items():
        start = TEXTS[report].index(evidence) if evidence else None
        for column, value in (
            ("report_key", keys[report]),
            ("region", region),
            ("finding", finding),
            ("status", status),
            ("evidence_start", start),
            ("evidence_end", start + len(evidence) if evidence and start is not None else None),
            ("evidence_text", evidence),
        ):
            columns[column].append(value)
    return columns


def build_db(tmp_path, cli) -> tuple:
    reports = tmp_path / "reports.jsonl"
    reports.write_text("".join(json.dumps({"id": rid, "text": text}) + "\n" for rid, text in TEXTS.items()))
    db = tmp_path / "compare.duckdb"
    code, _, stderr = cli("ingest", reports, "--db", db, "--dataset", "demo")
    assert code == 0, stderr
    with Store(db) as store:
        keys = {rid: found[0][1] for rid, found in store.report_keys(list(TEXTS)).items()}
        vocab = load_vocabulary().version
        for name, labels, covered, kind in (
            ("llm", LLM, ["r1", "r2", "r3", "r4", "r5"], RunKind.llm),
            ("gold", GOLD, ["r2", "r3", "r4", "r5", "r6"], RunKind.human),
            ("chexpert", IMAGE_ONLY, COMMON, RunKind.imported),
        ):
            record_run(
                store,
                RunSpec(name=name, kind=kind, vocabulary_version=vocab),
                [keys[r] for r in covered],
                label_columns(keys, labels),
            )
    return db, keys


@pytest.fixture
def compare_db(tmp_path, cli):
    return build_db(tmp_path, cli)


def cell_classes(labels: dict, finding: str, policy: str, level: str = "region") -> np.ndarray:
    """The test's own reading of a run on the common reports: class per cell (0 negative,
    1 present, 2 uncertain; None where the policy turns uncertain into 'exclude')."""
    code = {"present": PRESENT, "absent": ABSENT, "uncertain": UNCERTAIN}
    grid = {(r, g): UNMENTIONED for r in COMMON for g in REGIONS}
    for (report, region, f), (status, _) in labels.items():
        if f == finding and report in COMMON:
            grid[(report, region)] = code[status]
    if level == "image":
        rank = [PRESENT, UNCERTAIN, ABSENT, UNMENTIONED]
        values = [min((grid[(r, g)] for g in REGIONS), key=rank.index) for r in COMMON]
    else:
        values = [grid[(r, g)] for r in COMMON for g in REGIONS]
    uncertain = {"positive": 1, "negative": 0, "own-class": 2, "exclude": None}[policy]
    return np.asarray([1 if v == PRESENT else uncertain if v == UNCERTAIN else 0 for v in values], dtype=object)


def sklearn_reference(finding: str, policy: str, level: str = "region") -> dict:
    a, b = cell_classes(LLM, finding, policy, level), cell_classes(GOLD, finding, policy, level)
    keep = np.asarray([x is not None and y is not None for x, y in zip(a, b)])
    a, b = a[keep].astype(int), b[keep].astype(int)
    p, r, f, _ = precision_recall_fscore_support(b == 1, a == 1, average="binary", zero_division=0)  # pyright: ignore[reportArgumentType]  # sklearn takes 0
    return {
        "kappa": cohen_kappa_score(a, b),
        "precision": p,
        "recall": r,
        "f1": f,
        "cells": len(a),
        "excluded": int((~keep).sum()),
        "agreement": float((a == b).mean()),
    }


def same(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, abs_tol=1e-12)


def rows_by_name(comparison):
    return {row.name: row for row in comparison.by_finding}


def test_region_level_exclude_counts_by_hand(compare_db):
    db, _ = compare_db
    with Store(db, read_only=True) as store:
        c = compare_runs(store, "llm", "gold")
    assert (c.run, c.reference, c.level, c.uncertain) == ("llm", "gold", "region", "exclude")
    # Only the four common reports count: r1's effusion (llm) and r6's (gold) are not cells.
    assert (c.reports, c.reports_run, c.reports_reference) == (4, 5, 5)
    # Default findings: present or uncertain in either run; atelectasis (absent only) is left out.
    assert c.findings == (EFF, CARDIO, PTX)
    assert "atelectasis" in c.findings_left_out
    rows = rows_by_name(c)
    eff = rows[EFF]  # r2 LCP tp, r3 RCP tp, r5 LCP fn, r3 LCP excluded (uncertain in llm)
    assert (eff.cells, eff.excluded, eff.tp, eff.fp, eff.fn, eff.tn, eff.support) == (115, 1, 2, 0, 1, 112, 3)
    assert (eff.precision, eff.recall) == (1.0, pytest.approx(2 / 3))
    assert eff.f1 == pytest.approx(0.8)
    assert eff.agreement == pytest.approx(114 / 115)
    # Cardiomegaly's only positive cell is uncertain in gold, so excluded: every cell negative,
    # kappa undefined rather than a crash, F1 undefined.
    cardio = rows[CARDIO]
    assert (cardio.cells, cardio.excluded, cardio.tp, cardio.fp, cardio.fn) == (115, 1, 0, 0, 0)
    assert math.isnan(cardio.kappa) and math.isnan(cardio.f1) and cardio.agreement == 1.0
    ptx = rows[PTX]  # r2 right lung fn (absent vs present), r4 left lung fp (present vs unmentioned)
    assert (ptx.tp, ptx.fp, ptx.fn, ptx.tn) == (0, 1, 1, 114)
    # kappa by hand: N=116, agreement 114, chance = 1*1 + 115*115 -> (116*114 - 13226) / (116^2 - 13226)
    assert ptx.kappa == pytest.approx(-2 / 230)
    # Micro pools the counts; macro averages the findings with a positive (effusion, pneumothorax).
    assert (c.micro.tp, c.micro.fp, c.micro.fn) == (2, 1, 2)
    assert c.micro.f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert c.macro.f1 == pytest.approx((0.8 + 0.0) / 2)
    assert c.macro.precision == pytest.approx((1.0 + 0.0) / 2)
    assert c.macro.recall == pytest.approx((2 / 3 + 0.0) / 2)
    assert c.macro.name == "macro (2 findings)"
    # Per region: the left costophrenic angle pools effusion (tp r2, fn r5, r3 excluded).
    regions = {row.name: row for row in c.by_region}
    assert (regions[LCP].tp, regions[LCP].fn, regions[LCP].excluded, regions[LCP].cells) == (1, 1, 1, 3 * 4 - 1)
    assert regions[RCP].f1 == 1.0 and regions[LLUNG].fp == 1
    assert sum(r.cells for r in c.by_region) == c.micro.cells == 3 * 4 * 29 - 2


@pytest.mark.filterwarnings("ignore:A single label was found", "ignore::sklearn.exceptions.UndefinedMetricWarning")
@pytest.mark.parametrize("policy", ["exclude", "positive", "negative", "own-class"])
@pytest.mark.parametrize("level", ["region", "image"])
def test_every_policy_matches_sklearn(compare_db, policy, level):
    db, _ = compare_db
    with Store(db, read_only=True) as store:
        c = compare_runs(store, "llm", "gold", CompareOptions(uncertain=policy, level=level))
    for finding, row in rows_by_name(c).items():
        expected = sklearn_reference(finding, policy, level)
        assert (row.cells, row.excluded) == (expected["cells"], expected["excluded"]), finding
        assert same(row.kappa, expected["kappa"]), (finding, row.kappa, expected["kappa"])
        assert row.agreement == pytest.approx(expected["agreement"])
        assert row.recall == pytest.approx(expected["recall"]) or (math.isnan(row.recall) and row.support == 0)
        if row.tp + row.fp + row.fn:
            assert row.f1 == pytest.approx(expected["f1"]), finding


def test_policies_change_the_numbers_as_expected(compare_db):
    db, _ = compare_db
    with Store(db, read_only=True) as store:
        by_policy = {
            p: rows_by_name(compare_runs(store, "llm", "gold", CompareOptions(uncertain=p)))
            for p in ("exclude", "positive", "negative", "own-class")
        }
    eff = {p: (r[EFF].tp, r[EFF].fn, r[EFF].excluded) for p, r in by_policy.items()}
    # r3 LCP: uncertain (llm) vs present (gold).
    assert eff == {"exclude": (2, 1, 1), "positive": (3, 1, 0), "negative": (2, 2, 0), "own-class": (2, 2, 0)}
    card = {p: (r[CARDIO].tp, r[CARDIO].fp) for p, r in by_policy.items()}
    # r4 heart: present (llm) vs uncertain (gold).
    assert card == {"exclude": (0, 0), "positive": (1, 0), "negative": (0, 1), "own-class": (0, 1)}
    assert by_policy["positive"][CARDIO].kappa == 1.0 and by_policy["negative"][CARDIO].kappa == 0.0
    # own-class: three classes, so the present/uncertain cell disagrees; kappa differs from "negative".
    assert by_policy["own-class"][EFF].agreement == pytest.approx(114 / 116)
    assert by_policy["own-class"][CARDIO].kappa != by_policy["negative"][CARDIO].kappa


def test_image_level_collapses_regions(compare_db):
    db, _ = compare_db
    with Store(db, read_only=True) as store:
        c = compare_runs(store, "llm", "gold", CompareOptions(level="image"))
    assert c.regions == () and c.by_region == []
    eff = rows_by_name(c)[EFF]
    # r3 is present in llm once its regions collapse (right present beats left uncertain): no exclusion.
    assert (eff.cells, eff.excluded, eff.tp, eff.fp, eff.fn, eff.tn) == (4, 0, 2, 0, 1, 1)
    assert eff.kappa == pytest.approx(0.5)  # (4*3 - (2*3 + 2*1)) / (16 - 8)
    cardio = rows_by_name(c)[CARDIO]
    assert (cardio.cells, cardio.excluded) == (3, 1)


def test_reference_may_be_the_first_run_and_several_runs_share_one(compare_db):
    db, _ = compare_db
    with Store(db, read_only=True) as store:
        swapped = compare_runs(store, "llm", "gold", reference="llm")
        straight = compare_runs(store, "llm", "gold")
        many = compare_to_reference(
            store, ["llm", "gold"], "chexpert", CompareOptions(level="image", uncertain="positive")
        )
    assert (swapped.run, swapped.reference) == ("gold", "llm")
    s, t = rows_by_name(swapped)[EFF], rows_by_name(straight)[EFF]
    assert (s.tp, s.fp, s.fn) == (t.tp, t.fn, t.fp)  # roles swap fp and fn
    assert s.kappa == pytest.approx(t.kappa)  # kappa is symmetric
    assert [m.run for m in many] == ["llm", "gold"] and all(m.reference == "chexpert" for m in many)
    assert many[0].findings == many[1].findings and many[0].reports == 4
    # llm vs chexpert, effusion, uncertain as positive: r2 tp, r3 tp (uncertain), r5 absent vs none -> tn.
    eff = rows_by_name(many[0])[EFF]
    assert (eff.tp, eff.fp, eff.fn, eff.tn) == (2, 0, 0, 2)


def test_findings_option_restricts_and_validates(compare_db):
    db, _ = compare_db
    with Store(db, read_only=True) as store:
        c = compare_runs(store, "llm", "gold", CompareOptions(findings=[PTX, "atelectasis"]))
        assert c.findings == (PTX, "atelectasis")
        assert math.isnan(rows_by_name(c)["atelectasis"].f1)
        assert c.macro.name == "macro (1 findings)"
        with pytest.raises(InputError, match="'effusions'"):
            compare_runs(store, "llm", "gold", CompareOptions(findings=["effusions"]))
        with pytest.raises(InputError, match="image-level labels only.*--level image"):
            compare_runs(store, "llm", "chexpert")
        with pytest.raises(InputError, match="--uncertain"):
            compare_runs(store, "llm", "gold", CompareOptions(uncertain="maybe"))


def test_vectorized_counts_match_sklearn_on_random_codes():
    rng = np.random.default_rng(7)
    codes = np.asarray([PRESENT, ABSENT, UNCERTAIN, UNMENTIONED], dtype=np.int8)
    a = rng.choice(codes, size=(300, 5, 4), p=[0.2, 0.3, 0.1, 0.4])
    b = np.where(rng.random(a.shape) < 0.7, a, rng.choice(codes, size=a.shape)).astype(np.int8)
    for policy, u in (("positive", 1), ("negative", 0), ("own-class", 2)):
        m = metrics_from_counts(bin_counts(cell_bins(a, b, policy)).sum(axis=0))  # per finding
        to_class = {PRESENT: 1, ABSENT: 0, UNMENTIONED: 0, UNCERTAIN: u}
        for f in range(4):
            ya = np.vectorize(to_class.get)(a[..., f].ravel())
            yb = np.vectorize(to_class.get)(b[..., f].ravel())
            assert m["kappa"][f] == pytest.approx(cohen_kappa_score(ya, yb))
            p, r, f1, _ = precision_recall_fscore_support(yb == 1, ya == 1, average="binary")
            assert (m["precision"][f], m["recall"][f], m["f1"][f]) == pytest.approx((p, r, f1))


def test_csv_and_summary_written(compare_db, cli, tmp_path):
    db, _ = compare_db
    out = tmp_path / "out"
    code, stdout, stderr = cli("compare", "llm", "gold", "--db", db, "--out", out, "--uncertain", "positive")
    assert code == 0, stderr
    assert "uncertain -> positive" in stdout and "4 reports in common" in stdout
    assert "micro" in stdout and "macro (3 findings)" in stdout  # cardiomegaly counts once uncertain is positive
    path = out / "compare_llm_vs_gold_region.csv"
    assert f"wrote {path}" in stdout and f"wrote {out / 'compare_llm_vs_gold_region_f1.png'}" in stdout
    with path.open() as stream:
        rows = list(csv.DictReader(stream))
    assert [r["scope"] for r in rows] == ["finding"] * 3 + ["region"] * 29 + ["micro", "macro"]
    eff = next(r for r in rows if r["name"] == EFF)
    assert (eff["uncertain"], eff["level"], eff["tp"], eff["fp"], eff["fn"], eff["excluded"]) == (
        "positive",
        "region",
        "3",
        "0",
        "1",
        "0",
    )
    assert float(eff["f1"]) == pytest.approx(6 / 7, abs=1e-6)
    cardio = next(r for r in rows if r["name"] == CARDIO)
    assert cardio["kappa"] == "1.0"
    empty_region = next(r for r in rows if r["name"] == "spine")
    assert empty_region["kappa"] == "" and empty_region["f1"] == ""  # undefined: empty, not "nan"
    summary = json.loads((out / "compare_llm_vs_gold_region.json").read_text())
    assert summary["uncertain"] == "positive" and summary["unmentioned"] == "absent"
    assert summary["reports"] == 4 and "atelectasis" in summary["findings_left_out"]
    assert not list(out.glob(".*"))  # no temporary file left behind


@pytest.mark.parametrize(
    "args, message",
    [
        (("compare", "llm", "nosuch"), "'nosuch'"),
        (("compare", "llm", "chexpert"), "use --level image"),
        (("compare", "llm", "gold", "--findings", "effusions"), "'effusions'"),
        (("compare", "llm", "gold", "--uncertain", "maybe"), "--uncertain"),
        (("compare", "llm", "gold", "--metric", "auc"), "--metric"),
        (("compare", "llm", "gold", "chexpert"), "--reference"),
    ],
)
def test_cli_bad_input_is_one_line(compare_db, cli, args, message):
    db, _ = compare_db
    code, _, stderr = cli(*args, "--db", db)
    assert code == 1
    assert message in stderr and len(stderr.strip().splitlines()) == 1


def test_no_common_reports_names_both_runs(compare_db, cli):
    db, keys = compare_db
    with Store(db) as store:
        record_run(store, RunSpec(name="only-r1", kind=RunKind.human, vocabulary_version="v"), [keys["r1"]], {})
        record_run(store, RunSpec(name="only-r6", kind=RunKind.human, vocabulary_version="v"), [keys["r6"]], {})
    code, _, stderr = cli("compare", "only-r1", "only-r6", "--db", db)
    assert code == 1 and len(stderr.strip().splitlines()) == 1
    assert "'only-r1' covers 1" in stderr and "'only-r6' covers 1" in stderr


def test_cli_several_runs_against_a_reference(compare_db, cli, tmp_path):
    db, _ = compare_db
    out = tmp_path / "many"
    code, stdout, stderr = cli(
        "compare",
        "llm",
        "gold",
        "--reference",
        "chexpert",
        "--level",
        "image",
        "--uncertain",
        "positive",
        "--db",
        db,
        "--out",
        out,
    )
    assert code == 0, stderr
    assert "f1 against chexpert" in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "compare_gold_vs_chexpert_image.csv",
        "compare_gold_vs_chexpert_image.json",
        "compare_llm_vs_chexpert_image.csv",
        "compare_llm_vs_chexpert_image.json",
        "compare_runs_vs_chexpert_image_f1.png",
    ]


def placeless_run(db, keys):
    """Run "placeless" in the compare database: a pneumothorax with no region (r2), an effusion at
    the right costophrenic angle (r3)."""
    with Store(db) as store:
        record_run(
            store,
            RunSpec(name="placeless", kind=RunKind.rules, vocabulary_version=load_vocabulary().version),
            [keys[r] for r in COMMON],
            label_columns(keys, {("r2", None, PTX): ("present", None), ("r3", RCP, EFF): ("present", None)}),
        )
    return db


def test_region_less_labels_count_at_image_level_only(compare_db):
    """The no-location rule at comparison: a region-less label is no region's cell (noted), and
    counts at image level after the collapse."""
    db = placeless_run(*compare_db)
    with Store(db, read_only=True) as store:
        region = compare_runs(store, "placeless", "gold", CompareOptions(findings=[PTX, EFF]))
        image = compare_runs(store, "placeless", "gold", CompareOptions(level="image", findings=[PTX, EFF]))
    ptx_region = next(r for r in region.by_finding if r.name == PTX)
    assert (ptx_region.tp, ptx_region.fp, ptx_region.fn) == (0, 0, 1)  # gold's right lung: the run does not say where
    assert any("1 image-level labels" in note for note in region.notes)
    ptx_image = next(r for r in image.by_finding if r.name == PTX)
    assert (ptx_image.tp, ptx_image.fp, ptx_image.fn) == (1, 0, 0)  # r2: the same finding, somewhere


def test_the_other_no_location_choice_reads_region_less_labels_in_default_regions(compare_db, cli):
    """`--no-location default-regions` measures the alternative to the no-location rule: a
    region-less pneumothorax counts in both lungs (right: the gold's, left: a false positive)."""
    db = placeless_run(*compare_db)
    with Store(db, read_only=True) as store:
        options = CompareOptions(findings=[PTX, EFF], no_location="default-regions")
        region = compare_runs(store, "placeless", "gold", options)
        with pytest.raises(InputError, match="--no-location"):
            compare_runs(store, "placeless", "gold", CompareOptions(no_location="both lungs"))
    ptx = next(r for r in region.by_finding if r.name == PTX)
    assert (ptx.tp, ptx.fp, ptx.fn) == (1, 1, 0)
    eff = next(r for r in region.by_finding if r.name == EFF)
    assert eff.tp == 1  # located labels are read as before
    assert any("default regions" in note for note in region.notes)
    code, stdout, stderr = cli(
        "compare", "placeless", "gold", "--db", db, "--findings", PTX, "--no-location", "default-regions"
    )
    assert code == 0, stderr
    assert "default regions" in stdout
    code, _, stderr = cli("compare", "placeless", "gold", "--db", db, "--no-location", "somewhere")
    assert code == 1 and len(stderr.strip().splitlines()) == 1 and "--no-location" in stderr


def test_roll_up_makes_a_specific_finding_imply_its_generic_ancestors(compare_db):
    """Hierarchy: "nodular opacity" read as mass/nodule agrees with a source coding "Opacity" (lung
    opacity) once rolled up; a specific absent says nothing of the generic one."""
    db, keys = compare_db
    nodule, opacity, lesion = "mass/nodule (not otherwise specified)", "lung opacity", "lung lesion"
    vocab = load_vocabulary().version
    zone = "right upper lung zone"
    runs = {
        "specific": {("r2", zone, nodule): ("present", None), ("r3", None, nodule): ("absent", None)},
        "generic": {("r2", zone, opacity): ("present", None), ("r3", None, opacity): ("present", None)},
    }
    with Store(db) as store:
        for name, labels in runs.items():
            spec = RunSpec(name=name, kind=RunKind.human, vocabulary_version=vocab)
            record_run(store, spec, [keys[r] for r in COMMON], label_columns(keys, labels))
    with Store(db, read_only=True) as store:
        flat = compare_runs(store, "specific", "generic", CompareOptions(level="image", findings=[opacity, nodule]))
        rolled = compare_runs(
            store,
            "specific",
            "generic",
            CompareOptions(level="image", findings=[opacity, lesion, nodule], roll_up=True),
        )
        region = compare_runs(store, "specific", "generic", CompareOptions(findings=[opacity], roll_up=True))
    row = {r.name: r for r in flat.by_finding}
    assert (row[opacity].tp, row[opacity].fn, row[nodule].fp) == (0, 2, 1)
    row = {r.name: r for r in rolled.by_finding}
    assert (row[opacity].tp, row[opacity].fp, row[opacity].fn) == (1, 0, 1)  # r3's absent nodule implies nothing
    assert (row[lesion].tp, row[lesion].fp) == (0, 1)  # the generic source never names a lesion
    assert rolled.roll_up and rolled.settings()["roll_up"] and any("rolled up" in n for n in rolled.notes)
    assert next(r for r in region.by_finding if r.name == opacity).tp == 1  # same cell, same region
