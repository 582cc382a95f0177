"""The rules label source: medspaCy target rules + ConText + region resolution, on real pipelines."""

import json
import subprocess
import sys

import pytest

from labeling.sources import ReportSelection
from labeling.sources.rules import RulesLabeler, RulesRequest, label_with_rules
from labeling.store.run_records import RunHooks
from labeling.store.store import Store
from schemas.vocabulary import load_vocabulary


@pytest.fixture(scope="module")
def labeler():
    return RulesLabeler(load_vocabulary())


def cells(labeler, sentence):
    [labels] = labeler.label_sentences([sentence])
    return sorted(
        (
            (
                label.region,
                label.finding,
                label.status,
                label.severity,
                label.temporal,
                sentence[label.start : label.end],
            )
            for label in labels
        ),
        key=lambda cell: tuple("" if value is None else value for value in cell),  # region None: image level
    )


def test_negation_and_no_location(labeler):
    # The no-location rule (rules version 8): no place named -> no region (image level), not both lungs.
    assert cells(labeler, "No pleural effusion or pneumothorax.") == [
        (None, "pleural effusion", "absent", None, None, "pleural effusion"),
        (None, "pneumothorax", "absent", None, None, "pneumothorax"),
    ]


def test_uncertainty_and_shared_zone_words(labeler):
    assert cells(labeler, "Retrocardiac opacity could represent atelectasis or pneumonia.") == [
        ("left lower lung zone", "atelectasis", "uncertain", None, None, "atelectasis"),
        ("left lower lung zone", "lung opacity", "uncertain", None, None, "opacity"),
        ("left lower lung zone", "pneumonia", "uncertain", None, None, "pneumonia"),
    ]
    assert cells(labeler, "Bibasilar opacities and atelectasis.") == [
        ("left lower lung zone", "atelectasis", "present", None, None, "atelectasis"),
        ("left lower lung zone", "lung opacity", "present", None, None, "opacities"),
        ("right lower lung zone", "atelectasis", "present", None, None, "atelectasis"),
        ("right lower lung zone", "lung opacity", "present", None, None, "opacities"),
    ]


@pytest.mark.parametrize(
    "sentence, region, finding",
    [
        ("Calcified granuloma in the lingula.", "left mid lung zone", "granulomatous disease"),
        ("Opacity at the left base.", "left lower lung zone", "lung opacity"),
        ("Scarring in the right apex.", "right apical zone", "pleural/parenchymal scarring"),
        ("Small right pneumothorax.", "right lung", "pneumothorax"),
    ],
)
def test_zone_and_laterality_words(labeler, sentence, region, finding):
    found = cells(labeler, sentence)
    assert [(c[0], c[1], c[2]) for c in found] == [(region, finding, "present")]


def test_each_region_goes_to_its_nearest_finding(labeler):
    assert cells(labeler, "Right lower lobe opacity and left pleural effusion.") == [
        ("left lung", "pleural effusion", "present", None, None, "pleural effusion"),
        ("right lower lung zone", "lung opacity", "present", None, None, "opacity"),
    ]
    assert [c[0] for c in cells(labeler, "Opacity in the right upper lobe and left lower lobe.")] == [
        "left lower lung zone",
        "right upper lung zone",
    ]


def test_line_breaks_inside_a_sentence_change_nothing(labeler):
    sentence = "The heart is not\n enlarged.  Small   left\n pleural effusion."
    assert cells(labeler, sentence) == [
        ("cardiac silhouette", "enlarged cardiac silhouette", "absent", None, None, "heart"),
        ("left lung", "pleural effusion", "present", "mild", None, "pleural effusion"),
    ]


def test_generic_words_take_the_finding_of_the_named_region(labeler):
    assert cells(labeler, "Displaced fracture of the right clavicle.") == [
        ("right clavicle", "clavicle fracture", "present", None, None, "fracture")
    ]
    assert [c[:3] for c in cells(labeler, "Old fractures of the thoracic vertebrae.")] == [
        ("spine", "spinal fracture", "present")
    ]
    assert [c[:3] for c in cells(labeler, "Healed left rib fractures.")] == [("left lung", "rib fracture", "present")]


def test_history_hypothetical_and_normal_statements(labeler):
    assert cells(labeler, "History of pneumothorax.") == []
    assert cells(labeler, "Heart size is normal.") == [
        ("cardiac silhouette", "enlarged cardiac silhouette", "absent", None, None, "Heart size")
    ]
    # an organ named without a normal or abnormal statement says nothing
    assert cells(labeler, "The heart is stable.") == []
    assert cells(labeler, "The heart is mildly enlarged.") == [
        ("cardiac silhouette", "enlarged cardiac silhouette", "present", "mild", None, "heart")
    ]
    assert [c[:3] for c in cells(labeler, "The hila are prominent.")] == [
        ("left hilar structures", "enlarged hilum", "present"),
        ("right hilar structures", "enlarged hilum", "present"),
    ]
    assert cells(labeler, "Mild cardiomegaly.") == [
        ("cardiac silhouette", "enlarged cardiac silhouette", "present", "mild", None, "cardiomegaly")
    ]


def test_severity_and_temporal_words(labeler):
    assert cells(labeler, "Small left pleural effusion is unchanged.") == [
        ("left lung", "pleural effusion", "present", "mild", "unchanged", "pleural effusion")
    ]
    assert cells(labeler, "Pneumothorax has resolved.") == [
        (None, "pneumothorax", "absent", None, "resolved", "Pneumothorax"),
    ]


def test_rule_set_identity_follows_the_vocabulary(labeler):
    other = RulesLabeler(load_vocabulary(enable=["device"]))
    assert labeler.sha256 != other.sha256
    assert RulesLabeler(load_vocabulary()).sha256 == labeler.sha256


REPORTS = {
    "a": "INDICATION: Evaluate for pneumonia.\nFINDINGS: Small left pleural effusion. No pneumothorax.\n"
    "IMPRESSION: Left effusion.",
    "b": "FINDINGS: No pneumothorax. Heart size is normal.",
    "c": "Bibasilar atelectasis. No effusion.",  # no headers: every sentence is read
    "d": "FINDINGS: The lungs are clear.",  # covered, with no label
}


def make_db(tmp_path, cli, reports=REPORTS):
    path = tmp_path / "reports.jsonl"
    path.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in reports.items()))
    db = tmp_path / "rules.duckdb"
    code, _, err = cli("ingest", path, "--db", db, "--dataset", "t")
    assert code == 0, err
    return db


def stored(db, run):
    with Store(db, read_only=True) as store:
        table = store.labels(run)
        texts = {r[0]: r[1] for r in store.con.execute("SELECT report_key, text FROM reports").fetchall()}
    return [
        (
            r["report_id"],
            r["region"],
            r["finding"],
            r["status"],
            r["evidence_text"],
            texts[r["report_key"]][r["evidence_start"] : r["evidence_end"]],
        )
        for r in table.to_pylist()
    ]


def test_label_backend_rules_stores_a_run(tmp_path, cli):
    db = make_db(tmp_path, cli)
    code, out, err = cli("label", "--backend", "rules", "--name", "rules-1", "--db", db)
    assert code == 0, err
    assert "run rules-1: complete" in out
    rows = stored(db, "rules-1")
    # evidence is the matched text at its exact offsets in the report
    assert all(evidence == at_offsets for *_, evidence, at_offsets in rows)
    cells_ = sorted((r[0], r[1] or "", r[2], r[3]) for r in rows)
    assert cells_ == [
        ("a", "", "pneumothorax", "absent"),  # no place named: image level (region None)
        ("a", "left lung", "pleural effusion", "present"),
        # "Evaluate for pneumonia" is in the indication: not read
        ("b", "", "pneumothorax", "absent"),
        ("b", "cardiac silhouette", "enlarged cardiac silhouette", "absent"),
        ("c", "", "pleural effusion", "absent"),
        ("c", "left lower lung zone", "atelectasis", "present"),
        ("c", "right lower lung zone", "atelectasis", "present"),
    ]
    with Store(db, read_only=True) as store:
        run = store.run("rules-1")
        assert run.kind.value == "rules" and run.status.value == "complete"
        assert run.params["rules_sha256"] == RulesLabeler(load_vocabulary()).sha256
        assert run.model is not None and run.model.startswith("medspacy-")
        assert len(store.covered_reports("rules-1")) == 4  # d is covered with no label


def test_rules_are_deterministic_and_resume_after_an_interruption(tmp_path, cli):
    reports = {
        f"r{i}": f"FINDINGS: {'Right' if i % 2 else 'Left'} basilar opacity. No effusion number {i}." for i in range(12)
    }
    db = make_db(tmp_path, cli, reports)
    with Store(db) as store:
        keys = ReportSelection(report_keys=store.current_report_keys())
        full = label_with_rules(store, RulesRequest(name="whole", reports=keys, batch_size=5))
    assert full.reports_done == 12

    def stop_after_first_batch(summary, n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), Store(db) as store:
        request = RulesRequest(name="broken", reports=keys, batch_size=5)
        label_with_rules(store, request, hooks=RunHooks(advanced=stop_after_first_batch))
    with Store(db, read_only=True) as store:
        assert store.run("broken").status.value == "incomplete"
        assert store.work_counts(store.run("broken").run_id) == {"done": 5, "pending": 7}
    code, out, err = cli("label", "--resume", "broken", "--db", db)
    assert code == 0, err
    assert stored(db, "broken") == stored(db, "whole")


def test_name_clash_and_resume_of_another_kind_are_errors(tmp_path, cli):
    db = make_db(tmp_path, cli)
    assert cli("label", "--backend", "rules", "--name", "x", "--db", db)[0] == 0
    code, _, err = cli("label", "--backend", "rules", "--name", "x", "--db", db)
    assert code == 1 and "already exists" in err and len(err.strip().splitlines()) == 1


def test_pyrush_debug_logging_is_silenced():
    # medspaCy's default pipeline (PyRuSH sentence splitter) in a fresh process: nothing on stderr
    code = (
        "import medspacy; from labeling.sources.rules.labeler import silence_pyrush; silence_pyrush(); "
        "nlp = medspacy.load(); nlp('No effusion. Heart size is normal.')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "DEBUG" not in result.stderr
    loud = subprocess.run(
        [sys.executable, "-c", code.replace("silence_pyrush(); ", "")], capture_output=True, text=True
    )
    assert "DEBUG" in loud.stderr  # the check above can fail: without silencing PyRuSH does log
