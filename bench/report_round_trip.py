"""Benchmark: the deterministic report writer against the synthetic cohort's gold (issue 15).

Writes a synthetic cohort (model.synth.writer.generate_cohort), turns each study's report truth
(its present and uncertain statements, merged per finding) into the writer's inputs, and writes
one report per study with the new writer and with `legacy_fallback_report` (the writer before
issue 15, kept here only, as the baseline of the same run). Then:
- round trip: region-level F1 of the rules' reading of each new report against the labels it
  was written from, (a) as given and (b) in canonical regions (a zone implies its lung; zones
  covering a lung are the lung: model/reports/grouping.py); cells are (study, finding, region)
  with status present or uncertain;
- text: BLEU-4 and ROUGE-L (model/reports/scoring.text_scores) of each writer's FINDINGS +
  IMPRESSION against the cohort's own report, and mean lengths in words;
- with --checkpoint: the round trip on a tiny trained checkpoint's predictions. It trains the
  tests' tiny CLALA-Net (tests/test_trainer.py: 64 px cohort, 2 epochs, with the sentence decoder)
  on CPU, runs `generate_reports` on its test split, and reads each stored report back with the
  rules against the lesions it was written from (canonical cells with status, severity and
  temporal); also how many FINDINGS sentences came from the decoder.

    python bench/report_round_trip.py [--studies 300] [--seed 15] [--checkpoint]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from labeling.ingest.sections import detect_sections
from labeling.sources.rules.labeler import RulesLabeler
from model.reports.grouping import canonical_regions
from model.reports.round_trip import read_cells
from model.reports.scoring import scored_text, text_scores
from model.reports.writer import PredictedLesion, ReportInputs, fallback_report
from model.synth.writer import GOLD_FILE, generate_cohort
from schemas.vocabulary import load_vocabulary


def legacy_fallback_report(lesions: list[PredictedLesion], vocabulary) -> str:
    """The writer before issue 15 (model/reports/writer.py at 1b76360), region sentences left
    out as here: IMPRESSION lists each lesion as '<Finding name> in the <region>, ... and the
    <region>.'; FINDINGS had only the decoder's region sentences, so without them it said
    'No focal abnormality is described.'"""
    order = {r.name: (r.index,) for r in vocabulary.regions}
    sentences = []
    for lesion in lesions:
        regions = sorted(lesion.regions, key=lambda r: order[r])
        places = [f"the {r}" for r in regions]
        where = places[0] if len(places) == 1 else ", ".join(places[:-1]) + " and " + places[-1]
        text = f"{lesion.finding} in {where}" if places else lesion.finding
        sentences.append(text[0].upper() + text[1:] + ".")
    impression = " ".join(sentences) or "No acute cardiopulmonary abnormality."
    return f"FINDINGS: No focal abnormality is described.\n\nIMPRESSION: {impression}\n"


def gold_lesions(record: dict) -> list[PredictedLesion]:
    merged: dict[str, dict] = {}
    for statement in record["report_truth"]:
        if statement["status"] not in ("present", "uncertain"):
            continue
        kept = merged.setdefault(
            statement["finding"],
            {"regions": [], "severity": statement["severity"], "temporal": statement["temporal"], "uncertain": True},
        )
        kept["regions"] += [r for r in statement["regions"] if r not in kept["regions"]]
        kept["uncertain"] &= statement["status"] == "uncertain"
    return [
        PredictedLesion(
            finding=name,
            probability=1.0,
            regions=tuple(v["regions"]),
            severity=v["severity"],
            temporal=v["temporal"] if v["temporal"] != "resolved" else None,
            uncertain=v["uncertain"],
        )
        for name, v in merged.items()
    ]


def f1(predicted: set, gold: set) -> tuple[float, float, float]:
    tp = len(predicted & gold)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(gold) if gold else 1.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def words(text: str) -> int:
    return len(re.findall(r"[A-Za-z0-9]+", text))


def checkpoint_round_trip(studies: int, seed: int) -> dict:
    """The round trip on a tiny trained checkpoint's predictions (see the module doc)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_trainer import make_cohort, tiny_config  # type: ignore[import-not-found]  # the tests' tiny setting

    from labeling.store.store import Store
    from model.reports.generation import GenerateRequest, generate_reports
    from model.reports.round_trip import check_report
    from model.reports.writer import generated_reports, words_of
    from model.train.loop import train

    vocabulary = load_vocabulary()
    labeler = RulesLabeler(vocabulary)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        cohort, db = make_cohort(root, n=studies, seed=seed, valid=studies // 5, test=studies // 4)
        checkpoint = train(tiny_config(cohort, db, root / "ckpt", epochs=2, model={"use_itcl": False})).best_checkpoint
        train_s = time.perf_counter() - started
        with Store(db) as store:
            request = GenerateRequest(checkpoint=checkpoint, data=cohort, name="bench", device="cpu")
            generate_reports(store, request)
            rows = generated_reports(store, "bench")
    written, read, used, faithful = set(), set(), 0, 0
    for i, row in enumerate(rows):
        lesions = [words_of(PredictedLesion(**x), vocabulary) for x in row["metadata"]["lesions"]]
        trip = check_report(row["text"], lesions, labeler)
        written |= {(i, *c) for c in trip.written}
        read |= {(i, *c) for c in trip.read if c[2] != "absent"}
        used += row["metadata"]["decoder_sentences"]
        faithful += trip.faithful
    return {
        "reports": len(rows),
        "predicted_cells": len(written),
        "round_trip": dict(zip(("precision", "recall", "f1"), f1(read, written))),
        "faithful_reports": faithful,
        "decoder_sentences_used": used,
        "decoder_sentences_given": sum(len(r["metadata"]["region_sentences"]) for r in rows),
        "seconds_train_and_generate": round(time.perf_counter() - started, 1),
        "seconds_train": round(train_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=300)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--checkpoint", action="store_true", help="also: a tiny trained checkpoint's predictions")
    parser.add_argument("--checkpoint-studies", type=int, default=72)
    args = parser.parse_args()
    if args.checkpoint:
        print(json.dumps({"checkpoint": checkpoint_round_trip(args.checkpoint_studies, args.seed)}, indent=2))
    vocabulary = load_vocabulary()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        out = generate_cohort(Path(tmp) / "cohort", args.studies, args.seed, size=64)
        records = [json.loads(line) for line in (out / GOLD_FILE).read_text().splitlines()]
        references = [(out / f"files/p{r['subject_id'][:2]}/p{r['subject_id']}/s{r['study_id']}.txt") for r in records]
        if not references[0].exists():
            references = [next(out.rglob(f"s{r['study_id']}.txt")) for r in records]
        reference_texts = [p.read_text() for p in references]
        cohort_s = time.perf_counter() - started
    inputs = [ReportInputs(report_id=r["study_id"], lesions=gold_lesions(r)) for r in records]
    started = time.perf_counter()
    new = []
    for item in inputs:
        report = fallback_report(item, vocabulary, threshold=0.5)
        new.append(f"FINDINGS: {report.findings}\n\nIMPRESSION: {report.impression}\n")
    write_s = time.perf_counter() - started
    old = [legacy_fallback_report(item.lesions, vocabulary) for item in inputs]
    reads = read_cells(new, RulesLabeler(vocabulary))
    read = {(i, c[0], c[1]) for i, cells in enumerate(reads) for c in cells if c[2] != "absent"}
    gold = {(i, lesion.finding, r) for i, item in enumerate(inputs) for lesion in item.lesions for r in lesion.regions}
    canonical = {
        (i, lesion.finding, r)
        for i, item in enumerate(inputs)
        for lesion in item.lesions
        for r in canonical_regions(lesion.regions, vocabulary)
    }

    def scored(texts: list[str]) -> list[str]:
        return [scored_text(t, [s.model_dump() for s in detect_sections(t)]) for t in texts]

    hyp_new, hyp_old, refs = scored(new), scored(old), scored(reference_texts)
    bleu_new, rouge_new, _, _ = text_scores(hyp_new, refs)
    bleu_old, rouge_old, _, _ = text_scores(hyp_old, refs)
    result = {
        "studies": len(records),
        "seed": args.seed,
        "lesions": sum(len(i.lesions) for i in inputs),
        "round_trip_as_given": dict(zip(("precision", "recall", "f1"), f1(read, gold))),
        "round_trip_canonical": dict(zip(("precision", "recall", "f1"), f1(read, canonical))),
        "bleu4": {"new": bleu_new, "legacy": bleu_old},
        "rouge_l": {"new": rouge_new, "legacy": rouge_old},
        "mean_words": {
            "new": sum(map(words, hyp_new)) / len(hyp_new),
            "legacy": sum(map(words, hyp_old)) / len(hyp_old),
            "reference": sum(map(words, refs)) / len(refs),
        },
        "seconds": {"cohort": round(cohort_s, 1), "write_new": round(write_s, 2)},
    }
    print(json.dumps(result, indent=2))
    for i in range(3):
        print(
            f"--- study {records[i]['study_id']}\nREFERENCE:\n{reference_texts[i].strip()}\n"
            f"LEGACY:\n{old[i]}NEW:\n{new[i]}"
        )


if __name__ == "__main__":
    main()
