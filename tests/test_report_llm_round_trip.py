"""The LLM aggregator's reports are read back by the rules (issue 15, item 6), against a real
OpenAI-compatible server on 127.0.0.1 (tests/fault_server.py): a faithful report is kept; one that
adds a finding is re-asked once with the reason and kept when the second answer is faithful;
one that stays unfaithful (adds, or drops a lesion) is replaced by the deterministic report. The
outcome is stored with each report and counted; the prompt carries the vocabulary's structure."""

from __future__ import annotations

import json

from fault_server import ADDED_FINDING, FaultServer

from labeling.store.store import Store
from model.reports.structure import prompt_structure
from model.reports.writer import (
    LLMOptions,
    PredictedLesion,
    RegionSentence,
    ReportInputs,
    aggregator_prompt,
    aggregator_text,
    fallback_report,
    generated_reports,
    store_generated_reports,
    write_reports,
)
from schemas.labels import Severity
from schemas.vocabulary import load_vocabulary

VOCAB = load_vocabulary()
LESIONS = [
    PredictedLesion(finding="pleural effusion", probability=0.9, regions=("right lung",), severity=Severity("mild")),
    PredictedLesion(finding="atelectasis", probability=0.8, regions=("right lower lung zone", "left lower lung zone")),
]


def item(report_id: str, marker: str) -> ReportInputs:
    sentence = RegionSentence(region="right lower lung zone", text=f"Patchy opacity at the right base. {marker}")
    return ReportInputs(report_id=report_id, region_sentences=[sentence], lesions=LESIONS)


def options(server: FaultServer) -> LLMOptions:
    return LLMOptions(
        backend="openai",
        base_urls=[server.base_url],
        model="fake-model",
        structured_output="json_schema",
        max_retries=0,
        transport_retries=0,
        timeout=10,
    )


def test_unfaithful_llm_reports_are_reasked_once_then_replaced(tmp_path):
    items = [item("kept", "FAITHFUL"), item("again", "UNFAITHFULONCE"), item("never", "UNFAITHFUL")]
    items.append(item("drops", "DROPSLESION"))
    with FaultServer() as server:
        written = write_reports(items, options(server), vocabulary=VOCAB)
        requests = server.chat_requests()
    kept, again, never, drops = written
    deterministic = fallback_report(items[0], VOCAB)
    # Faithful: asked once, kept as written (the server wrote the lesions in the given words).
    assert (kept.round_trip, kept.aggregator, kept.llm_error) == ("kept", "llm:fake-model", None)
    assert kept.report.findings == "Small right pleural effusion. Bibasilar atelectasis."
    # Adds a pneumothorax, then faithful when told why: the second answer is kept.
    assert (again.round_trip, again.aggregator) == ("re-asked and kept", "llm:fake-model")
    assert ADDED_FINDING not in again.text and again.report.findings == kept.report.findings
    # Always unfaithful: replaced by the deterministic report, with the reason kept.
    assert (never.round_trip, never.aggregator) == ("replaced", "fallback")
    assert never.report == deterministic and never.prompt_name == "report_aggregator"
    assert never.llm_error is not None and "it adds pneumothorax (left lung, severe)" in never.llm_error
    assert "still it adds pneumothorax" in never.llm_error
    assert (drops.round_trip, drops.report) == ("replaced", deterministic)
    assert "it leaves out pleural effusion (right lung, mild)" in (drops.llm_error or "")
    # Requests: one for the faithful unit, two (ask + one re-ask) for each of the others.
    by_unit = {
        marker: [r for r in requests if f"base. {marker}\n" in r["body"]["messages"][1]["content"]]
        for marker in ("FAITHFUL", "UNFAITHFULONCE", "UNFAITHFUL", "DROPSLESION")
    }
    assert {m: len(rs) for m, rs in by_unit.items()} == {
        "FAITHFUL": 1,
        "UNFAITHFULONCE": 2,
        "UNFAITHFUL": 2,
        "DROPSLESION": 2,
    }
    reask = by_unit["UNFAITHFULONCE"][1]["body"]["messages"]
    assert reask[-2]["role"] == "assistant" and ADDED_FINDING in json.loads(reask[-2]["content"])["findings"]
    assert reask[-1]["role"] == "user" and "it adds pneumothorax (left lung, severe)" in reask[-1]["content"]
    # Stored with each report, and counted.
    with Store(tmp_path / "g.duckdb") as store:
        stored = store_generated_reports(store, "llm", written)
        rows = {row["report_id"]: row["metadata"] for row in generated_reports(store, "llm")}
    assert stored.round_trips == {"kept": 1, "re-asked and kept": 1, "replaced": 2}
    assert {k: m["round_trip"] for k, m in rows.items()} == {
        "kept": "kept",
        "again": "re-asked and kept",
        "never": "replaced",
        "drops": "replaced",
    }
    assert rows["never"]["aggregator"] == "fallback" and "it adds pneumothorax" in rows["never"]["llm_error"]


def test_the_aggregator_prompt_carries_the_structure_and_the_words():
    prompt = aggregator_prompt(VOCAB)
    structure = prompt_structure(VOCAB)
    assert structure in prompt.system and "$structure" not in prompt.system
    # Systems in the vocabulary's order with their normal statements; the impression's priority.
    systems = [s.name for s in VOCAB.data.report.systems]  # type: ignore[union-attr]
    positions = [structure.index(f"{name} (") for name in systems]
    assert positions == sorted(positions)
    assert 'lungs (none: "The lungs are clear.")' in structure
    assert 'pleura (none: "No pleural effusion or pneumothorax."; with other findings, say there is no' in structure
    assert structure.index("pneumothorax;") < structure.index("consolidation;") < structure.index("atelectasis;")
    assert '"No acute cardiopulmonary process."' in structure
    # The unit lists each lesion with the writer's words for it.
    unit = prompt.messages(aggregator_text(item("a", ""), VOCAB))
    assert unit[-1]["content"].endswith(
        "SAY EACH LESION AS (these words, each lesion once):\n"
        "- pleural effusion: small right pleural effusion\n"
        "- atelectasis: bibasilar atelectasis"
    )
