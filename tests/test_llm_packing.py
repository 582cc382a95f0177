"""Several sentences per request (`--unit sentences --per-call K`) against a real server on 127.0.0.1."""

import math

from fault_server import PACKED, FaultServer
from test_llm_source import label_reports, make_db, options, rows

from labeling.sources.llm import LabelOptions, LlmRequest, label_with_llm
from labeling.store.store import Store

REPORTS = {
    f"r{i}": f"FINDINGS: Small left pleural effusion {i}. No pneumothorax seen {i}. Right atelectasis {i}."
    for i in range(6)
}
LABELS_SQL = """SELECT r.report_id, l.region, l.finding, l.status, l.evidence_start, l.evidence_end
                FROM labels l JOIN reports r USING (report_key) JOIN runs USING (run_id)
                WHERE runs.name = ? ORDER BY ALL"""


def packed(server, **overrides):
    return options(server, **{"unit": "sentences", "per_call": 4, **overrides})


def test_packed_labels_equal_lone_labels_and_share_the_cache(tmp_path):
    db = make_db(tmp_path, REPORTS)
    with FaultServer() as server:
        pack_run = label_reports(db, "packed", packed(server, use_cache=False))
        pack_requests = server.chat_requests()
        assert pack_run.status.value == "complete"
        lone_run = label_reports(db, "alone", options(server, use_cache=False))
        lone_requests = server.chat_requests()[len(pack_requests) :]
        # the cache is per sentence, whatever K: a packed run after a lone one asks nothing
        again = label_reports(db, "packed-again", packed(server))
        assert len(server.chat_requests()) == len(pack_requests) + len(lone_requests)
    sentences = 3 * len(REPORTS)
    assert lone_run.status.value == "complete"
    assert len(lone_requests) == sentences
    # 18 distinct sentences, at most 4 a request; a batch's remainder makes a smaller pack
    assert math.ceil(sentences / 4) <= len(pack_requests) < sentences / 2
    assert all(PACKED in r["body"]["messages"][-1]["content"] for r in pack_requests)
    assert pack_requests[0]["body"]["response_format"]["json_schema"]["schema"]["properties"]["answers"]
    assert pack_run.counts["packed_units"] == sentences and pack_run.counts["lone_reasks"] == 0
    assert again.counts["cache_hits"] == sentences and again.counts["model_calls"] == 0
    packed_labels = rows(db, LABELS_SQL, ["packed"])
    assert packed_labels and packed_labels == rows(db, LABELS_SQL, ["alone"]) == rows(db, LABELS_SQL, ["packed-again"])
    # the static prefix is byte-identical on every packed call; only the last message changes
    prefixes = {str(r["body"]["messages"][:-1]) for r in pack_requests}
    assert len(prefixes) == 1
    with Store(db, read_only=True) as store:
        run = store.run("packed")
        assert run.params["per_call"] == 4 and run.params["unit"] == "sentences"
        layout = run.params["prompt_layout"]
        assert layout["static_chars"] == len(pack_requests) * sum(
            len(m["content"]) for m in pack_requests[0]["body"]["messages"][:-1]
        )
        assert 0.8 < layout["static_fraction"] < 1.0
        assert run.decoding["unit"] == "sentence" and store.run("alone").decoding == run.decoding
        # tokens are counted once per request, as the server reported them
        assert store.run("packed").prompt_tokens == sum(
            sum(len(m["content"]) for m in r["body"]["messages"]) // 4 for r in pack_requests
        )


def test_an_invalid_part_is_asked_alone_and_the_rest_of_the_pack_is_kept(tmp_path):
    db = make_db(
        tmp_path,
        {
            "a": "FINDINGS: Left effusion BADINPACK. No pneumothorax. Right atelectasis.",
            "b": "FINDINGS: Cardiomegaly LEFTOUT. Left consolidation.",
            "c": "FINDINGS: Right effusion OUTSIDEVOCAB. Left pneumothorax.",
        },
    )
    with FaultServer() as server:
        result = label_reports(db, "mixed", packed(server, per_call=8, max_retries=0))
        lone = [r["body"]["messages"][-1]["content"] for r in server.chat_requests() if PACKED not in str(r["body"])]
        packs = server.packs
    assert len(packs) == 1 and len(packs[0]) == 7
    assert sorted(t.split("TEXT TO LABEL:\n")[1] for t in lone) == [
        "Cardiomegaly LEFTOUT.",
        "Left effusion BADINPACK.",
        "Right effusion OUTSIDEVOCAB.",
    ]
    assert result.counts["lone_reasks"] == 3 and result.counts["packed_units"] == 4
    assert result.reports_done == 2 and result.reports_failed == 1  # c: its sentence is invalid alone too
    labels = rows(db, "SELECT r.report_id, l.finding, l.status FROM labels l JOIN reports r USING (report_key)")
    assert ("a", "pleural effusion", "present") in labels and ("a", "pneumothorax", "absent") in labels
    assert ("b", "enlarged cardiac silhouette", "present") in labels
    assert not [row for row in labels if row[0] == "c"]


def test_an_unreadable_pack_asks_each_sentence_alone(tmp_path):
    db = make_db(tmp_path, {"a": "FINDINGS: Left effusion PACKNOTJSON. No pneumothorax. Right atelectasis."})
    with FaultServer() as server:
        result = label_reports(db, "notjson", packed(server))
        assert len(server.packs) == 1 and len(server.chat_requests()) == 4
    assert result.status.value == "complete" and result.counts["lone_reasks"] == 3


def test_a_pack_the_server_fails_stays_pending_and_resumes(tmp_path):
    db = make_db(tmp_path, {"a": "FINDINGS: Left effusion. No pneumothorax.", "b": "FINDINGS: Right SERVERERROR."})
    with FaultServer() as server:
        first = label_reports(db, "down", packed(server, per_call=8, transport_retries=0, batch_size=1))
    assert first.status.value == "incomplete" and first.reports_done == 0
    with Store(db) as store:  # the sentence is fixed; the run resumes from its pending reports
        store.con.execute("UPDATE reports SET text = replace(text, 'SERVERERROR', 'pneumothorax')")
        store.con.execute("UPDATE sentences SET text = replace(text, 'SERVERERROR', 'pneumothorax')")
    with FaultServer() as server:
        server_url = server.base_url
        with Store(db) as store:
            resumed = label_with_llm(store, LlmRequest(resume="down", options=LabelOptions(base_urls=[server_url])))
    assert resumed.status.value == "complete" and resumed.reports_done == 2
