"""Report aggregation: the prompt renders its inputs; LLM answers from a real local HTTP server are
validated and re-asked; the deterministic fallback orders by anatomy and removes near-duplicates;
generated reports are stored with provenance and labeled by `clala label --backend rules`."""

import hashlib
import json
import time

import pytest
from fault_server import FaultServer

from labeling.core.errors import InputError
from labeling.ingest.pipeline import IngestOptions, ingest
from labeling.ingest.readers import Columns
from labeling.store.store import Store
from model.reports.writer import (
    NORMAL_IMPRESSION,
    AggregatedReport,
    LLMOptions,
    PredictedLesion,
    RegionSentence,
    ReportInputs,
    aggregator_prompt,
    aggregator_text,
    fallback_report,
    generated_reports,
    is_near_duplicate,
    ordered_sentences,
    store_generated_reports,
    write_reports,
)
from prompts.render import list_prompts
from schemas.vocabulary import load_vocabulary

VOCAB = load_vocabulary()

SCRAMBLED = [
    RegionSentence(region="left clavicle", text="Healed left clavicle fracture."),
    RegionSentence(region="cardiac silhouette", text="The heart is enlarged."),
    RegionSentence(region="right costophrenic angle", text="Blunting of the right costophrenic angle."),
    RegionSentence(region="left lower lung zone", text="Patchy opacity at the left base."),
    RegionSentence(region="right lower lung zone", text="Patchy opacity at the right base."),
    RegionSentence(region="right upper lung zone", text="Nodule in the right upper lobe"),
    RegionSentence(region="left lower lung zone", text="patchy opacity at the LEFT base"),  # same once normalized
    RegionSentence(region="right atrium", text="The heart is  enlarged ."),  # same once normalized
    RegionSentence(region="right hilar structures", text="Patchy opacity at the right lung base."),  # Jaccard 6/7
]
EXPECTED_FINDINGS = (
    "Nodule in the right upper lobe. Patchy opacity at the right base. Patchy opacity at the left "
    "base. Blunting of the right costophrenic angle. The heart is enlarged. Healed left clavicle "
    "fracture."
)
LESIONS = [
    PredictedLesion(finding="enlarged cardiac silhouette", probability=0.3, regions=("cardiac silhouette",)),
    PredictedLesion(finding="atelectasis", probability=0.6, regions=("left lower lung zone", "right lower lung zone")),
    PredictedLesion(finding="pleural effusion", probability=0.8, regions=("right costophrenic angle",)),
]


def inputs(report_id="s1", sentences=SCRAMBLED, lesions=LESIONS, source=None):
    return ReportInputs(
        report_id=report_id, source_report_key=source, region_sentences=list(sentences), lesions=list(lesions)
    )


def test_aggregator_prompt_renders_the_inputs():
    prompt = aggregator_prompt(VOCAB)
    assert "report_aggregator" in list_prompts() and len(prompt.sha256) == 64
    messages = prompt.messages(aggregator_text(inputs(), VOCAB))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert '{"findings": "...", "impression": "..."}' in messages[0]["content"]
    assert "right costophrenic angle" in messages[0]["content"] and "$regions" not in messages[0]["content"]
    assert messages[1]["content"] == (
        "PARTS OF THE REPORT:\n"
        "REGION SENTENCES (region: sentence), in anatomical order:\n"
        "- right upper lung zone: Nodule in the right upper lobe\n"
        "- right lower lung zone: Patchy opacity at the right base.\n"
        "- left lower lung zone: Patchy opacity at the left base.\n"
        "- right costophrenic angle: Blunting of the right costophrenic angle.\n"
        "- cardiac silhouette: The heart is enlarged.\n"
        "- left clavicle: Healed left clavicle fracture.\n"
        "PREDICTED LESIONS (probability >= 0.50):\n"
        "- pleural effusion: 0.80 (right costophrenic angle)\n"
        "- atelectasis: 0.60 (left lower lung zone, right lower lung zone)\n"
        "SAY EACH LESION AS (these words, each lesion once):\n"
        "- pleural effusion: pleural effusion at the right costophrenic angle\n"
        "- atelectasis: bibasilar atelectasis"
    )


def test_fallback_fits_a_model_that_predicts_everywhere():
    """An untrained model can place every lesion in every allowed region: the impression then names
    the lesions without places, and FINDINGS keeps whole sentences within its limit."""
    from model.reports.writer import FINDINGS_MAX_CHARS, IMPRESSION_MAX_CHARS, fallback_report

    vocab = load_vocabulary()
    findings = vocab.finding_names  # grouped places make 20 fit; all of them do not
    everywhere = [
        PredictedLesion(finding=f, probability=0.9, regions=tuple(vocab.finding(f).regions)) for f in findings
    ]
    report = fallback_report(ReportInputs(report_id="s9", lesions=everywhere), vocab)
    assert len(report.impression) <= IMPRESSION_MAX_CHARS and " in the " not in report.impression
    wordings = [vocab.finding(f).report for f in findings]
    phrases = [w.plural or w.phrase for w in wordings if w is not None]
    assert [f"{p[0].upper()}{p[1:]}." in report.impression for p in phrases] == [True] * len(findings)
    assert 0 < len(report.findings) <= FINDINGS_MAX_CHARS and report.findings.endswith(".")


def test_fallback_writes_from_the_lesions_by_system_and_priority():
    """The deterministic report is written from the predicted lesions (region sentences are the LLM
    aggregator's input): systems in order with normal statements, impression by clinical priority."""
    report = fallback_report(inputs(), VOCAB)
    assert report.findings == (
        "Pleural effusion at the right costophrenic angle with bibasilar atelectasis. No pneumothorax. "
        "The cardiomediastinal silhouette is normal. The hila are normal. No acute osseous abnormality."
    )
    assert report.impression == "1. Pleural effusion at the right costophrenic angle. 2. Bibasilar atelectasis."
    empty = fallback_report(inputs(sentences=[], lesions=LESIONS[:1]), VOCAB)
    assert empty.impression == NORMAL_IMPRESSION == "No acute cardiopulmonary process."
    assert empty.findings.startswith("The lungs are clear. No pleural effusion or pneumothorax.")


def test_region_sentences_are_ordered_by_anatomy_without_near_duplicates():
    from model.reports.wording import as_sentence

    kept = [as_sentence(s.text) for s in ordered_sentences(SCRAMBLED, VOCAB)]
    assert " ".join(kept) == EXPECTED_FINDINGS


def test_near_duplicates():
    assert is_near_duplicate("No pneumothorax.", ["no  pneumothorax"])
    assert not is_near_duplicate("No right pleural effusion.", ["Right pleural effusion."])  # 3/4 < 0.8
    assert not is_near_duplicate("Small left pleural effusion.", ["Small right pleural effusion."])


def test_answer_model_validates_sections():
    report = AggregatedReport.model_validate({"findings": "FINDINGS:  Small  effusion.", "impression": "Effusion."})
    assert report.findings == "Small effusion."
    for bad in (
        {"findings": "  ", "impression": "x"},
        {"findings": "x", "impression": "y" * 1001},
        {"findings": "x"},
        {"findings": "x", "impression": "y", "extra": 1},
    ):
        with pytest.raises(ValueError):
            AggregatedReport.model_validate(bad)


class AggregatorServer(FaultServer):
    """The fault server's HTTP machinery, answering aggregator prompts: a fixed valid report (faithful
    to LESIONS, so the round trip keeps it: tests/test_report_llm_round_trip.py checks the rest); an
    empty FINDINGS (schema-invalid) first for a unit containing REASK; `{not json` always for
    ALWAYSBAD."""

    VALID = {
        "findings": "FINDINGS: Pleural effusion at the right costophrenic angle.  Bibasilar atelectasis.",
        "impression": "Pleural effusion at the right costophrenic angle and bibasilar atelectasis.",
    }

    def respond(self, body):
        unit = next(m["content"] for m in body["messages"] if m["role"] == "user")
        with self.lock:
            self.seen[unit] = self.seen.get(unit, 0) + 1
            count = self.seen[unit]
        content = json.dumps(self.VALID)
        if "ALWAYSBAD" in unit:
            content = "{not json"
        elif "REASK" in unit and count == 1:
            content = json.dumps({"findings": "", "impression": "Nothing."})
        message = {"role": "assistant", "content": content}
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


def test_llm_answers_are_validated_and_reasked_through_a_real_server():
    items = [
        inputs("plain"),
        inputs("reask", sentences=[RegionSentence(region="right lung", text="REASK opacity.")]),
        inputs("bad", sentences=[RegionSentence(region="right lung", text="ALWAYSBAD opacity.")], lesions=[]),
    ]
    with AggregatorServer() as server:
        options = LLMOptions(
            backend="openai",
            base_urls=[server.base_url],
            model="fake-model",
            structured_output="json_schema",
            max_retries=1,
            transport_retries=0,
            timeout=10,
        )
        written = write_reports(items, options, vocabulary=VOCAB)
        requests = server.chat_requests()
    plain, reasked, bad = written
    assert plain.aggregator == "llm:fake-model" and plain.prompt_name == "report_aggregator"
    assert plain.prompt_sha256 == aggregator_prompt(VOCAB).sha256
    assert plain.report.findings == "Pleural effusion at the right costophrenic angle. Bibasilar atelectasis."
    assert plain.text.startswith("FINDINGS: Pleural effusion") and "\n\nIMPRESSION: Pleural" in plain.text
    assert plain.round_trip == "kept"
    assert reasked.aggregator == "llm:fake-model" and reasked.llm_error is None
    reask_requests = [r for r in requests if "REASK" in r["body"]["messages"][1]["content"]]
    assert len(reask_requests) == 2
    assert "findings must not be empty" in json.dumps(reask_requests[1]["body"]["messages"][2:])
    assert requests[0]["body"]["response_format"]["type"] == "json_schema"
    assert set(requests[0]["body"]["response_format"]["json_schema"]["schema"]["properties"]) == {
        "findings",
        "impression",
    }
    # Still invalid after re-asking: the fallback writes that report, and says why.
    assert bad.aggregator == "fallback" and "invalid after 2 attempt(s)" in (bad.llm_error or "")
    # The fallback writes from the lesions (none here), not from the region sentences.
    assert bad.report.findings.startswith("The lungs are clear.") and bad.report.impression == NORMAL_IMPRESSION


def test_bad_inputs_are_named():
    with pytest.raises(InputError, match="report 's1': region 'left knee' is not in vocabulary"):
        write_reports([inputs(sentences=[RegionSentence(region="left knee", text="Fine.")])])
    with pytest.raises(InputError, match="finding 'flu'"):
        write_reports([inputs(lesions=[PredictedLesion(finding="flu", probability=0.9)])])
    with pytest.raises(InputError, match="given twice"):
        write_reports([inputs("a"), inputs("a")])


@pytest.fixture
def source_db(tmp_path):
    path = tmp_path / "source.jsonl"
    path.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in (
                {
                    "id": "s1",
                    "study_id": "s1",
                    "patient_id": "p1",
                    "text": "FINDINGS: Right effusion.\nIMPRESSION: Effusion.",
                },
                {
                    "id": "s2",
                    "study_id": "s2",
                    "patient_id": "p2",
                    "text": "FINDINGS: Clear lungs.\nIMPRESSION: Normal.",
                },
            )
        )
    )
    db = tmp_path / "gen.duckdb"
    columns = Columns(id="id", text="text", patient="patient_id", study="study_id")
    with Store(db) as store:
        ingest(store, path, IngestOptions(dataset="src", columns=columns))
    return db


def test_generated_reports_are_stored_with_provenance_and_labeled_by_rules(source_db, tmp_path, cli):
    with Store(source_db, read_only=True) as store:
        keys = {rid: key for rid, key in store.con.execute("SELECT report_id, report_key FROM reports").fetchall()}
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    written = write_reports(
        [
            inputs("s1", source=keys["s1"]),
            inputs(
                "s2",
                sentences=[RegionSentence(region="right lung", text="No pleural effusion or pneumothorax.")],
                lesions=[],
                source=keys["s2"],
            ),
        ]
    )
    with Store(source_db) as store:
        stored = store_generated_reports(store, "demo", written, checkpoint=checkpoint)
    assert stored.dataset == "generated:demo" and stored.aggregators == {"fallback": 2}
    with Store(source_db, read_only=True) as store:
        rows = generated_reports(store, "demo")
        identity = store.con.execute("""SELECT report_id, patient_id, study_id FROM reports
                                        WHERE dataset = 'generated:demo' ORDER BY report_key""").fetchall()
        sentences = store.sentences(rows[0]["report_key"])
    assert [r["report_id"] for r in rows] == ["s1", "s2"]
    assert identity == [("s1", "p1", "s1"), ("s2", "p2", "s2")]
    assert rows[0]["text"] == (
        f"FINDINGS: {written[0].report.findings}\n\nIMPRESSION: {written[0].report.impression}\n"
    )
    assert written[0].report.findings.startswith("Pleural effusion at the right costophrenic angle with bibasilar")
    meta = rows[0]["metadata"]
    assert meta["source_report_key"] == keys["s1"] == rows[0]["source_report_key"]
    assert meta["checkpoint_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert meta["checkpoint_path"].endswith("model.pt") and meta["aggregator"] == "fallback"
    assert meta["prompt_sha256"] is None and meta["lesions"][2] == {
        "finding": "pleural effusion",
        "probability": 0.8,
        "regions": ["right costophrenic angle"],
        "severity": None,
        "temporal": None,
        "uncertain": False,
    }
    assert [s["section"] for s in sentences][:1] == ["findings"] and "impression" in [s["section"] for s in sentences]
    assert sentences[0]["text"] == "Pleural effusion at the right costophrenic angle with bibasilar atelectasis."

    code, out, err = cli(
        "label", "--backend", "rules", "--dataset", "generated:demo", "--name", "gen-rules", "--db", source_db
    )
    assert code == 0, err
    with Store(source_db, read_only=True) as store:
        labels = {
            (r["report_id"], r["region"], r["finding"], r["status"]) for r in store.labels("gen-rules").to_pylist()
        }
    assert ("s1", "right costophrenic angle", "pleural effusion", "present") in labels
    assert ("s1", "right costophrenic angle", "pleural effusion", "present") in labels
    assert ("s1", "left lower lung zone", "atelectasis", "present") in labels
    assert any(rid == "s2" and status == "absent" for rid, _, _, status in labels)


def test_storing_is_atomic_and_names_are_used_once(source_db, tmp_path):
    written = write_reports([inputs("s1")])
    with Store(source_db) as store:
        store_generated_reports(store, "once", written)
        before = store.table_counts()
        with pytest.raises(InputError, match="generated reports named 'once' already exist"):
            store_generated_reports(store, "once", written)
        with pytest.raises(InputError, match="source report_key 999 is not in the database"):
            store_generated_reports(store, "other", write_reports([inputs("s9", source=999)]))
        with pytest.raises(InputError, match="checkpoint file not found"):
            store_generated_reports(store, "other", written, checkpoint=tmp_path / "missing.pt")
        with pytest.raises(InputError, match="--name"):
            store_generated_reports(store, "bad name", written)
        assert store.table_counts() == before
    with Store(source_db, read_only=True) as store, pytest.raises(InputError, match="no generated reports named"):
        generated_reports(store, "never")
