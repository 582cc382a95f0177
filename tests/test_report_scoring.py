"""Scoring generated reports: label consistency on a hand-made example with exact P/R at image and
region level, the judge's schema and a judge answer from a real local HTTP server, BLEU-4 and
ROUGE-L against sacrebleu and rouge-score called directly, the experiment row and files, and the
`clala score-reports` command."""

import csv
import json
import time

import pytest
import sacrebleu
from fault_server import FaultServer
from rouge_score import rouge_scorer

from labeling.core.errors import InputError
from labeling.ingest.pipeline import IngestOptions, ingest
from labeling.ingest.readers import Columns
from labeling.store.run_records import record_run
from labeling.store.store import Store
from model.reports.scoring import (
    JudgeScores,
    ScoreRequest,
    judge_chat_text,
    record_scores,
    score_reports,
    scored_text,
    text_scores,
)
from model.reports.writer import AggregatedReport, LLMOptions, ReportInputs, WrittenReport, store_generated_reports
from schemas.runs import RunKind, RunSpec
from schemas.vocabulary import load_vocabulary

SOURCES = {
    "s1": "INDICATION: Cough.\nFINDINGS: Small right pleural effusion. Atelectasis in the left lower lobe.\n"
    "IMPRESSION: Right effusion and left basal atelectasis.",
    "s2": "FINDINGS: Left pneumothorax.\nIMPRESSION: Left pneumothorax.",
    "s3": "FINDINGS: The heart size is normal.\nIMPRESSION: No acute cardiopulmonary process.",
}
# The reference run's labels of the source reports.
REFERENCE = [
    ("s1", "right costophrenic angle", "pleural effusion", "present"),
    ("s1", "left lower lung zone", "atelectasis", "present"),
    ("s2", "left lung", "pneumothorax", "present"),
    ("s3", "cardiac silhouette", "enlarged cardiac silhouette", "absent"),
]
# Generated reports: s1 restates the effusion but puts the atelectasis on the wrong side; s2
# omits the pneumothorax; s3 invents a consolidation.
GENERATED = {
    "s1": (
        "Pleural effusion in the right costophrenic angle. Atelectasis in the right lower lung zone.",
        "Findings as above.",
    ),
    "s2": ("No focal abnormality is described.", "Findings as above."),
    "s3": ("Consolidation in the right lower lung zone.", "Findings as above."),
}


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "sources.jsonl"
    path.write_text(
        "".join(json.dumps({"id": rid, "study_id": rid, "text": text}) + "\n" for rid, text in SOURCES.items())
    )
    db = tmp_path / "score.duckdb"
    with Store(db) as store:
        ingest(store, path, IngestOptions(dataset="src", columns=Columns(id="id", text="text", study="study_id")))
    with Store(db) as store:
        keys = dict(store.con.execute("SELECT report_id, report_key FROM reports").fetchall())
        record_run(
            store,
            RunSpec(name="ref", kind=RunKind.imported, vocabulary_version=load_vocabulary().version),
            list(keys.values()),
            {
                "report_key": [keys[r] for r, *_ in REFERENCE],
                "region": [g for _, g, _, _ in REFERENCE],
                "finding": [f for _, _, f, _ in REFERENCE],
                "status": [s for *_, s in REFERENCE],
            },
        )
        store_generated_reports(store, "hand", [generated(rid, keys[rid], *GENERATED[rid]) for rid in GENERATED])
    return db


def score(db, name, reference, **options):
    """score_reports on a store opened for it, as the command opens it."""
    with Store(db) as store:
        return score_reports(store, ScoreRequest(name=name, reference=reference, **options))


def generated(report_id, source_key, findings, impression):
    return WrittenReport(
        ReportInputs(report_id=report_id, source_report_key=source_key),
        AggregatedReport(findings=findings, impression=impression),
        "fallback",
    )


def test_label_consistency_on_a_hand_made_example(db):
    scores = score(db, "hand", "ref")
    assert scores.region is not None
    region, image = scores.region.micro, scores.image.micro
    # region: tp = effusion; fp = atelectasis right, consolidation; fn = atelectasis left, pneumothorax
    assert (region.tp, region.fp, region.fn) == (1, 2, 2)
    assert region.precision == pytest.approx(1 / 3) and region.recall == pytest.approx(1 / 3)
    # image: the atelectasis counts as found; consolidation invented, pneumothorax missed
    assert (image.tp, image.fp, image.fn) == (2, 1, 1)
    assert image.precision == pytest.approx(2 / 3) and image.recall == pytest.approx(2 / 3)
    assert image.f1 == pytest.approx(2 / 3)
    assert set(scores.image.findings) == {"pleural effusion", "atelectasis", "pneumothorax", "consolidation"}
    assert scores.label_run == "score:hand:rules" and scores.reports == scores.aligned == 3
    assert scores.judge_note is not None and scores.judge_note.startswith("skipped")
    assert scores.judge_means() is None
    # The label run is reused the second time, not made again.
    with Store(db, read_only=True) as store:
        runs = len(store.runs())
    assert score(db, "hand", "ref").image.micro.tp == 2
    with Store(db, read_only=True) as store:
        assert len(store.runs()) == runs


def test_bleu_and_rouge_match_the_packages(db):
    scores = score(db, "hand", "ref")
    hypotheses = [" ".join(GENERATED[r]) for r in ("s1", "s2", "s3")]
    references = [
        "Small right pleural effusion. Atelectasis in the left lower lobe. Right effusion and left basal atelectasis.",
        "Left pneumothorax. Left pneumothorax.",
        "The heart size is normal. No acute cardiopulmonary process.",
    ]
    with Store(db, read_only=True) as store:
        stored = store.con.execute(
            "SELECT text, sections FROM reports WHERE dataset = 'src' ORDER BY report_id"
        ).fetchall()
    assert [scored_text(text, json.loads(sections)) for text, sections in stored] == references  # INDICATION left out
    assert scores.bleu4 == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for report, hypothesis, reference in zip(scores.per_report, hypotheses, references):
        assert report.bleu4 == pytest.approx(sacrebleu.sentence_bleu(hypothesis, [reference]).score)
        assert report.rouge_l == pytest.approx(scorer.score(reference, hypothesis)["rougeL"].fmeasure)
    per_rouge = [r.rouge_l for r in scores.per_report]
    assert None not in per_rouge and scores.bleu4 is not None and scores.rouge_l is not None
    assert scores.rouge_l == pytest.approx(sum(r for r in per_rouge if r is not None) / 3)
    assert 0 < scores.bleu4 < 100 and 0 < scores.rouge_l < 1


def test_identical_text_scores_bleu_100_and_rouge_l_1():
    text = "Small right pleural effusion. Atelectasis in the left lower lobe."
    bleu, rouge, per_bleu, per_rouge = text_scores(
        [text, "Left pneumothorax is large."], [text, "Left pneumothorax is large."]
    )
    assert bleu == pytest.approx(100) and per_bleu == [pytest.approx(100)] * 2
    assert rouge == 1.0 and per_rouge == [1.0, 1.0]


def test_judge_schema_rejects_out_of_range_and_non_integer_scores():
    valid = {
        "lesion_correctness": 5,
        "location_correctness": 0,
        "internal_consistency": 4,
        "clinical_coherence_completeness": 3,
        "rationale": "Location of the atelectasis is wrong.",
    }
    assert JudgeScores.model_validate_json(json.dumps(valid)).total == 12
    for field, value in (
        ("lesion_correctness", 6),
        ("location_correctness", -1),
        ("internal_consistency", 2.5),
        ("internal_consistency", 3.0),
        ("clinical_coherence_completeness", "3"),
        ("rationale", "  "),
    ):
        with pytest.raises(ValueError):
            JudgeScores.model_validate_json(json.dumps({**valid, field: value}))
    with pytest.raises(ValueError):
        JudgeScores.model_validate_json(json.dumps({k: v for k, v in valid.items() if k != "rationale"}))
    schema = JudgeScores.model_json_schema()["properties"]["lesion_correctness"]
    assert (schema["type"], schema["minimum"], schema["maximum"]) == ("integer", 0, 5)


class JudgeServer(FaultServer):
    """The fault server's HTTP machinery answering judge prompts: a score of 6 (invalid) on the first
    request about a generated report that mentions consolidation, valid scores otherwise."""

    def respond(self, body):
        unit = next(m["content"] for m in body["messages"] if m["role"] == "user")
        with self.lock:
            self.seen[unit] = self.seen.get(unit, 0) + 1
            count = self.seen[unit]
        answer = {
            "lesion_correctness": 3,
            "location_correctness": 4,
            "internal_consistency": 5,
            "clinical_coherence_completeness": 2,
            "rationale": "One lesion on the wrong side.",
        }
        if "Consolidation" in unit and count == 1:
            answer["lesion_correctness"] = 6
        message = {"role": "assistant", "content": json.dumps(answer)}
        return (
            200,
            {
                "id": f"c{count}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            },
            {},
        )


def test_judge_through_a_real_server(db, tmp_path):
    with JudgeServer() as server:
        options = LLMOptions(
            backend="openai",
            base_urls=[server.base_url],
            model="judge-model",
            structured_output="json_schema",
            max_retries=1,
            transport_retries=0,
            timeout=10,
        )
        scores = score(db, "hand", "ref", judge=options)
        requests = server.chat_requests()
    assert [r.judge.total if r.judge else None for r in scores.per_report] == [14, 14, 14]
    means = scores.judge_means()
    assert means is not None and means["total"] == 14.0 and scores.judge_model == "judge-model"
    assert len(requests) == 4  # three reports, one re-asked
    first_user = requests[0]["body"]["messages"][1]["content"]
    assert first_user.startswith("REFERENCE REPORT:\nFINDINGS: ")
    assert "\n\nGENERATED REPORT:\nFINDINGS: " in first_user
    assert "lesion_correctness" in requests[0]["body"]["messages"][0]["content"]
    reasked = [r for r in requests if len(r["body"]["messages"]) > 2]
    assert len(reasked) == 1 and "less than or equal to 5" in json.dumps(reasked[0]["body"]["messages"][2:])

    with Store(db) as store:
        experiment_id, files = record_scores(store, scores, judge=options, out=tmp_path / "out")
    with Store(db, read_only=True) as store:
        [experiment] = [e for e in store.experiments() if e["experiment_id"] == experiment_id]
    assert experiment["name"] == "score-reports:hand" and experiment["status"] == "complete"
    assert experiment["metrics"]["judge"]["means"]["total"] == 14.0
    assert experiment["metrics"]["label_consistency"]["image"]["precision"] == pytest.approx(2 / 3)
    summary = json.loads(files[0].read_text())
    assert summary["bleu4"] == pytest.approx(scores.bleu4) and summary["config"]["judge"]["model"] == "judge-model"
    rows = list(csv.DictReader(files[1].open()))
    assert [r["report_id"] for r in rows] == ["s1", "s2", "s3"] and rows[0]["judge_total"] == "14"


def test_judge_text_uses_both_reports_sections():
    text = judge_chat_text(
        (
            "FINDINGS: A.\nIMPRESSION: B.",
            [{"name": "findings", "start": 10, "end": 13}, {"name": "impression", "start": 25, "end": 28}],
        ),
        ("No headers here.", []),
    )
    assert text == "REFERENCE REPORT:\nFINDINGS: A.\nIMPRESSION: B.\n\nGENERATED REPORT:\nNo headers here."


def test_score_reports_command(db, tmp_path, cli):
    code, out, err = cli("score-reports", "hand", "--reference", "ref", "--db", db, "--out", tmp_path / "scores")
    assert code == 0, err
    assert "Label consistency: score:hand:rules" in out and "BLEU-4" in out and "judge: skipped" in out
    assert (tmp_path / "scores" / "hand.scores.json").is_file()
    assert (tmp_path / "scores" / "hand.per_report.csv").is_file()
    for args, message in (
        (["nope", "--reference", "ref"], "no generated reports named 'nope'"),
        (["hand", "--reference", "nope"], "no run named 'nope'"),
        (["hand", "--reference", "ref", "--labeler", "ref"], "is a import run"),
        (["hand", "--reference", "ref", "--uncertain", "maybe"], "--uncertain"),
    ):
        code, _, err = cli("score-reports", *args, "--db", db)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


def test_reference_must_cover_the_sources(db):
    with Store(db) as store:
        record_run(
            store,
            RunSpec(name="empty", kind=RunKind.imported, vocabulary_version="v"),
            [],
            {"report_key": [], "finding": [], "status": []},
        )
    with pytest.raises(InputError, match="covers none of the source reports"):
        score(db, "hand", "empty")


def test_a_failed_write_leaves_no_partial_file_and_the_target_unchanged(db, tmp_path, monkeypatch):
    """The scores files are written whole or not at all: a write that fails midway leaves the
    previous files as they were and no temporary file beside them (it used to leave `*.partial`)."""
    import model.reports.scoring as scoring

    out = tmp_path / "out"
    scores = score(db, "hand", "ref")
    with Store(db) as store:
        record_scores(store, scores, out=out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    assert sorted(before) == ["hand.per_report.csv", "hand.scores.json"]

    class Broken(RuntimeError):
        pass

    def fail_midway(*args, **kwargs):
        stream = args[1]
        stream.write('{"half": ')
        raise Broken("disk full")

    monkeypatch.setattr(scoring.json, "dump", fail_midway)
    with Store(db) as store, pytest.raises(Broken):
        record_scores(store, scores, out=out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
