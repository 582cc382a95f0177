"""Review queues: which cells disagree, statuses and evidence of each side, the priority order,
--limit, formats, and bad input."""

import csv
import json

import pytest
from test_compare import CARDIO, EFF, HEART, LCP, LLUNG, PTX, RLUNG, build_db

from labeling.review.disagreements import QueueOptions, disagreement_queue
from labeling.store.store import Store


@pytest.fixture
def compare_db(tmp_path, cli):
    return build_db(tmp_path, cli)[0]


def cells(table):
    return [(r["report_id"], r["region"], r["finding"]) for r in table.to_pylist()]


def test_region_queue_order_and_contents(compare_db):
    with Store(compare_db, read_only=True) as store:
        queue, total = disagreement_queue(store, "llm", "gold")
    # Rarity = 1 / (2tp + fp + fn) between the runs: effusion 1/6, pneumothorax 1/2, cardiomegaly 1/1.
    # Priorities (kind weight x rarity x evidence factor):
    #   r4 pneumothorax present vs unmentioned  4 x 1/2 x 0.75 = 1.5  } r4 sums 3.5: first report
    #   r4 cardiomegaly present vs uncertain    2 x 1   x 1    = 2.0  } (present-vs-absent kind first)
    #   r2 pneumothorax absent vs present       4 x 1/2 x 1    = 2.0
    #   r5 effusion absent (no span) vs present 4 x 1/6 x 0.75 = 0.5
    #   r3 effusion uncertain vs present        2 x 1/6 x 1    = 0.333
    # r2's absent atelectasis against gold's silence is agreement, not a disagreement.
    assert total == 5
    assert cells(queue) == [
        ("r4", LLUNG, PTX),
        ("r4", HEART, CARDIO),
        ("r2", RLUNG, PTX),
        ("r5", LCP, EFF),
        ("r3", LCP, EFF),
    ]
    rows = queue.to_pylist()
    assert [r["priority"] for r in rows] == pytest.approx([1.5, 2.0, 2.0, 0.5, 1 / 3], abs=1e-6)
    assert [r["report_priority"] for r in rows] == pytest.approx([3.5, 3.5, 2.0, 0.5, 1 / 3], abs=1e-6)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    first = rows[0]
    assert (first["status_a"], first["status_b"], first["kind"]) == ("present", "unmentioned", "present vs absent")
    assert (first["evidence_a"], first["start_a"], first["end_a"]) == ("Left apical pneumothorax", 27, 51)
    assert first["evidence_b"] is None and first["start_b"] is None
    r2 = rows[2]
    assert (r2["dataset"], r2["status_a"], r2["status_b"]) == ("demo", "absent", "present")
    assert (r2["evidence_a"], r2["evidence_b"]) == ("No pneumothorax", "Right pneumothorax")
    assert rows[4]["kind"] == "present vs uncertain" and rows[1]["kind"] == "present vs uncertain"


def test_image_level_queue_uses_collapsed_status_and_its_evidence(compare_db):
    with Store(compare_db, read_only=True) as store:
        queue, total = disagreement_queue(store, "llm", "gold", QueueOptions(level="image"))
    # r3's effusion collapses to present on both sides: no longer a disagreement.
    assert total == 4
    assert set(cells(queue)) == {("r4", None, PTX), ("r4", None, CARDIO), ("r2", None, PTX), ("r5", None, EFF)}
    r5 = next(r for r in queue.to_pylist() if r["report_id"] == "r5")
    assert (r5["status_a"], r5["status_b"], r5["evidence_b"]) == (
        "absent",
        "present",
        "Blunted left costophrenic angle, effusion",
    )


def test_cli_writes_csv_and_jsonl_with_limit(compare_db, cli, tmp_path):
    code, stdout, stderr = cli("disagreements", "llm", "gold", "--db", compare_db, "--out", tmp_path / "q.csv")
    assert code == 0, stderr
    assert "5 disagreeing cells in 4 reports" in stdout
    with (tmp_path / "q.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["report_id"], r["finding"]) for r in rows][:2] == [("r4", PTX), ("r4", CARDIO)]
    assert rows[0]["status_b"] == "unmentioned"
    code, stdout, _ = cli(
        "disagreements", "llm", "gold", "--db", compare_db, "--out", tmp_path / "q.jsonl", "--limit", "2"
    )
    assert code == 0 and "2 of 5 disagreeing cells" in stdout
    lines = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [(r["report_id"], r["finding"]) for r in lines] == [("r4", PTX), ("r4", CARDIO)]
    assert not list(tmp_path.glob(".q*"))


@pytest.mark.parametrize(
    "args, message",
    [
        (("llm", "gold", "--out", "q.txt"), ".csv or .jsonl"),
        (("llm", "missing", "--out", "q.csv"), "'missing'"),
        (("llm", "chexpert", "--out", "q.csv"), "--level image"),
        (("llm", "gold", "--out", "q.csv", "--findings", "nodules"), "'nodules'"),
        (("llm", "gold", "--out", "q.csv", "--limit", "0"), "--limit"),
    ],
)
def test_cli_bad_input(compare_db, cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = cli("disagreements", *args, "--db", compare_db)
    assert code == 1 and message in stderr and len(stderr.strip().splitlines()) == 1
