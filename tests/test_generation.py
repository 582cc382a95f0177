"""`clala generate` from a real tiny checkpoint trained with its sentence decoder: one report per
test study stored as `generated:NAME` with FINDINGS, IMPRESSION and provenance; the predicted
lesions are exactly those the checkpoint's probabilities and thresholds give (of the lesions it
marks reportable); `--regions all`
writes a sentence for more regions; a checkpoint without decoder falls back to template
sentences; `clala score-reports` scores the generation; bad input is one line, exit 1."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_trainer import make_cohort, tiny_config

from labeling.core.files import file_sha256
from labeling.store.store import Store
from model.evaluate.inference import InferenceOptions, predict_split
from model.reports.generation import report_lesions
from model.reports.writer import generated_reports
from model.train.loop import train

REGION_SENTENCE = re.compile(r"^FINDINGS: .+\n\nIMPRESSION: .+\n$", re.DOTALL)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One cohort; a checkpoint with the decoder (ITCL off to stay quick) and one without."""
    root = tmp_path_factory.mktemp("generation")
    cohort, db = make_cohort(root, n=60, seed=8, valid=12, test=14)
    with_decoder = train(tiny_config(cohort, db, root / "decoder", epochs=2, model={"use_itcl": False}))
    without = train(tiny_config(cohort, db, root / "plain", epochs=1, model={"use_itcl": False, "use_decoder": False}))
    return cohort, db, with_decoder.best_checkpoint, without.best_checkpoint


def test_generate_stores_one_report_per_test_study_with_provenance(checkpoints, cli):
    cohort, db, checkpoint, _ = checkpoints
    code, out, err = cli(
        "generate", checkpoint, "--data", cohort, "--name", "gen1", "--db", db, "--llm-backend", "none"
    )
    assert code == 0, err
    assert "14 reports in dataset generated:gen1 (fallback 14)" in out and "from the decoder" in out
    with Store(db, read_only=True) as store:
        rows = generated_reports(store, "gen1")
        sources = dict(
            store.con.execute(
                "SELECT report_key, study_id FROM reports WHERE dataset NOT LIKE 'generated:%'"
            ).fetchall()
        )
    assert len(rows) == 14
    sha = file_sha256(checkpoint)
    # The lesions in the provenance are those the checkpoint's own probabilities and thresholds
    # predict, of the lesions it marks reportable.
    predicted = predict_split(InferenceOptions(checkpoint, cohort, split="test", device="cpu"))
    thresholds = np.asarray(predicted.checkpoint["thresholds"])
    reportable = report_lesions(predicted.checkpoint)
    assert predicted.checkpoint["report_lesions"] is not None and reportable.dtype == bool
    lesions = predicted.checkpoint["lesions"]
    by_study = {r.study_id: i for i, r in enumerate(predicted.dataset.examples.records)}
    for row in rows:
        assert REGION_SENTENCE.match(row["text"]), row["text"]
        meta = row["metadata"]
        assert meta["checkpoint_sha256"] == sha and meta["aggregator"] == "fallback"
        assert meta["generation"]["sentences"] == "decoder" and meta["generation"]["split"] == "test"
        assert sources[row["source_report_key"]] == row["report_id"]
        i = by_study[row["report_id"]]
        usable = predicted.box_mask[i][:, None] & predicted.allowed
        passes = (predicted.probabilities[i] >= thresholds) & usable & reportable
        assert meta["generation"]["reported_lesions"] == [x for x, kept in zip(lesions, reportable) if kept]
        expected = {
            lesions[j]: float(predicted.probabilities[i][:, j][usable[:, j]].max())
            for j in range(len(lesions))
            if passes[:, j].any()
        }
        assert {lesion["finding"]: lesion["probability"] for lesion in meta["lesions"]} == pytest.approx(
            expected, abs=1e-5
        )
        # abnormal regions only: every sentence is about a region where some lesion passes its threshold
        abnormal = {predicted.dataset.regions[r] for r in np.flatnonzero(passes.any(axis=1))}
        assert {s["region"] for s in meta["region_sentences"]} <= abnormal
    # The deterministic writer writes each report from its stored lesions and the decoder's region
    # sentences the rules check (issue 15): the same inputs give the same text and the same count of
    # decoder sentences, recorded per report and in total.
    from labeling.sources.rules import RulesLabeler
    from model.reports.round_trip import check_report
    from model.reports.writer import (
        PredictedLesion,
        RegionSentence,
        ReportInputs,
        deterministic_report,
        report_text,
        words_of,
    )
    from schemas.vocabulary import load_vocabulary

    vocabulary = load_vocabulary()
    labeler = RulesLabeler(vocabulary)
    for row in rows:
        lesions = [PredictedLesion(**lesion) for lesion in row["metadata"]["lesions"]]
        sentences = [RegionSentence(**sentence) for sentence in row["metadata"]["region_sentences"]]
        again, used = deterministic_report(
            ReportInputs(report_id="again", lesions=lesions, region_sentences=sentences),
            vocabulary,
            0.0,  # stored = passed the checkpoint's thresholds
            decoder_labeler=labeler,
        )
        assert row["text"] == report_text(again) and row["metadata"]["decoder_sentences"] == used
        if used:  # a report with decoder sentences still reads back as exactly its lesions
            assert check_report(row["text"], [words_of(x, vocabulary) for x in lesions], labeler).faithful
    total = sum(row["metadata"]["decoder_sentences"] for row in rows)
    assert f"decoder sentences used in FINDINGS: {total:,} " in out

    # Scoring works on the generation: values in [0, 1], BLEU and ROUGE present.
    code, out, err = cli("score-reports", "gen1", "--reference", "gold-report", "--db", db)
    assert code == 0, err
    assert "BLEU-4" in out and "ROUGE-L" in out
    with Store(db, read_only=True) as store:
        scored = [e for e in store.experiments() if "gen1" in e["name"]][-1]["metrics"]
    assert scored["reports"] == scored["aligned"] == 14
    assert scored["rouge_l"] is not None and 0 <= scored["rouge_l"] <= 1
    assert scored["bleu4"] is not None and 0 <= scored["bleu4"] <= 100  # sacrebleu's 0-100 scale
    for level in ("image", "region"):
        figures = scored["label_consistency"][level]
        assert figures["reports"] == 14
        for key in ("precision", "recall", "f1"):
            assert figures[key] is None or 0 <= figures[key] <= 1, figures


def test_all_regions_write_more_sentences(checkpoints, cli):
    cohort, db, checkpoint, _ = checkpoints
    assert (
        cli(
            "generate", checkpoint, "--data", cohort, "--name", "gen-all", "--db", db, "--regions", "all", "--limit", 3
        )[0]
        == 0
    )
    with Store(db, read_only=True) as store:
        every = generated_reports(store, "gen-all")
        abnormal = {r["report_id"]: r for r in generated_reports(store, "gen1")}
    assert len(every) == 3
    for row in every:
        assert row["metadata"]["generation"]["regions"] == "all"
        assert len(row["metadata"]["region_sentences"]) > len(
            abnormal[row["report_id"]]["metadata"]["region_sentences"]
        )


def test_checkpoint_without_decoder_writes_template_sentences(checkpoints, cli):
    cohort, db, _, plain = checkpoints
    code, out, err = cli("generate", plain, "--data", cohort, "--name", "gen-plain", "--db", db)
    assert code == 0, err
    assert "no sentence decoder" in out and "from the template" in out
    with Store(db, read_only=True) as store:
        rows = generated_reports(store, "gen-plain")
    for row in rows:
        meta = row["metadata"]
        assert meta["generation"]["sentences"] == "template"
        expected = sorted(
            f"{lesion['finding'][0].upper()}{lesion['finding'][1:]} in the {region}."
            for lesion in meta["lesions"]
            for region in lesion["regions"]
        )
        assert sorted(s["text"] for s in meta["region_sentences"]) == expected
        assert meta["decoder_sentences"] == 0  # template sentences never reach a report
    assert "decoder sentences used" not in out


def test_llm_reports_are_read_back_and_counted(checkpoints, cli):
    """`--llm-backend` against a real server on 127.0.0.1 that writes the lesions in the given
    words: every report is kept, recorded per report and counted in the output."""
    from fault_server import FaultServer

    cohort, db, checkpoint, _ = checkpoints
    with FaultServer() as server:
        code, out, err = cli(
            "generate", checkpoint, "--data", cohort, "--name", "gen-llm", "--db", db, "--llm-backend", "openai",
            "--llm-base-url", server.base_url, "--llm-model", "fake-model", "--llm-structured-output", "json_schema",
        )  # fmt: skip
    assert code == 0, err
    assert "LLM reports read back by the rules: kept 14" in out
    with Store(db, read_only=True) as store:
        rows = generated_reports(store, "gen-llm")
    assert [row["metadata"]["round_trip"] for row in rows] == ["kept"] * 14
    assert {row["metadata"]["aggregator"] for row in rows} == {"llm:fake-model"}


def test_bad_input_is_one_line_and_stores_nothing(checkpoints, cli, tmp_path):
    cohort, db, checkpoint, _ = checkpoints
    not_checkpoint = tmp_path / "x.pt"
    not_checkpoint.write_text("no")
    for args, message in (
        (["--name", "gen1"], "generated reports named 'gen1' already exist"),
        (["--name", "bad name"], "--name:"),
        (["--name", "g2", "--regions", "some"], "--regions: 'some'"),
        (["--name", "g2", "--llm-backend", "magic"], "--llm-backend: 'magic'"),
        (["--name", "g2", "--split", "nope"], "nope"),
    ):
        code, out, err = cli("generate", checkpoint, "--data", cohort, "--db", db, *args)
        assert code == 1, (args, out, err)
        assert message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli("generate", not_checkpoint, "--data", cohort, "--db", db, "--name", "g3")
    assert code == 1 and "not a CLALA-Net checkpoint" in err
    with Store(db, read_only=True) as store:
        assert not store.con.execute(
            "SELECT count(*) FROM reports WHERE dataset IN ('generated:g2', 'generated:g3')"
        ).fetchall()[0][0]
