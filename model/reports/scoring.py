"""Scoring generated reports (dataset `generated:<name>`) against their source reports.

(a) Label consistency. The generated reports are labeled by a label source (the rules by
    default; or the same source as an existing run: a rules run's vocabulary, an LLM run's
    backend, model, prompt and decoding) as run `score:<name>:<labeler>`, reused when it already
    covers them. Each generated report is aligned with its source report through the
    `source_report_key` in its metadata; the labels of the generated report and the reference
    run's labels of the source report then form two code matrices with aligned rows, scored with
    compare.py (`cell_bins`, `bin_counts`, `Comparison`): clinical precision, recall and F1, micro
    and macro over findings, at region and image level. Only pairs the label run and the
    reference both cover are compared; the rest are counted in notes.
(b) The report-level consistency score out of 20 (the paper's): an LLM judge scores four
    criteria 0-5 (`JudgeScores`, prompt `report_judge`), total = their sum. Optional: skipped,
    with a note, when no judge backend is given. An answer still invalid after re-asking is
    recorded as that report's judge error and left out of the mean.
(c) Text overlap: BLEU-4 (sacrebleu, default tokenizer; corpus-level and per report) and ROUGE-L
    F-measure (rouge-score with Porter stemming; per report, and their mean as the corpus
    figure), each between the FINDINGS + IMPRESSION text of the generated and of the source report
    (the whole text where a report has neither section).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

from labeling.core.errors import ClalaError, InputError
from labeling.core.files import atomic_path
from labeling.core.formatting import finite
from labeling.ingest import FINDING_SECTIONS
from labeling.review import Comparison, bin_counts, cell_bins, check_options, comparison_vocabulary
from labeling.store.store import Store
from model.reports.writer import LLMOptions, ask_all, generated_dataset, generated_reports
from prompts.render import load_prompt
from schemas.labels import PRESENT, UNCERTAIN
from schemas.vocabulary import Vocabulary, load_vocabulary

JUDGE_PROMPT = "report_judge"
CRITERIA = ("lesion_correctness", "location_correctness", "internal_consistency", "clinical_coherence_completeness")
MAX_TOTAL = 5 * len(CRITERIA)
RATIONALE_MAX_CHARS = 1000
ROUGE_STEMMER = True


# --- the judge's answer -------------------------------------------------------------------------------
def _rationale(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise ValueError("rationale must not be empty")
    if len(text) > RATIONALE_MAX_CHARS:
        raise ValueError(f"rationale is {len(text)} characters; at most {RATIONALE_MAX_CHARS}")
    return text


CriterionScore = Annotated[StrictInt, Field(ge=0, le=5)]


class JudgeScores(BaseModel):
    """One generated report judged against its reference: four integer scores 0-5 (anything
    else, 2.5 or "3" included, is rejected and re-asked) and a short rationale."""

    model_config = ConfigDict(extra="forbid")
    lesion_correctness: CriterionScore = Field(description="lesions present/absent as in the reference")
    location_correctness: CriterionScore = Field(description="side and zone of the shared lesions")
    internal_consistency: CriterionScore = Field(description="no contradictions within the report")
    clinical_coherence_completeness: CriterionScore = Field(description="coherent, ordered, complete")
    rationale: Annotated[str, AfterValidator(_rationale)] = Field(description="the main errors, briefly")

    @property
    def total(self) -> int:
        """The consistency score out of 20."""
        return sum(getattr(self, name) for name in CRITERIA)


# --- results ---------------------------------------------------------------------------------------------
@dataclass
class ReportScore:
    """The scores of one generated report."""

    report_id: str
    report_key: int
    source_report_key: int | None
    bleu4: float | None = None
    rouge_l: float | None = None
    judge: JudgeScores | None = None
    judge_error: str | None = None

    def row(self) -> dict[str, Any]:
        judged = {name: getattr(self.judge, name) if self.judge else None for name in CRITERIA}
        return {
            "report_id": self.report_id,
            "report_key": self.report_key,
            "source_report_key": self.source_report_key,
            "bleu4": self.bleu4,
            "rouge_l": self.rouge_l,
            **judged,
            "judge_total": self.judge.total if self.judge else None,
            "judge_rationale": self.judge.rationale if self.judge else None,
            "judge_error": self.judge_error,
        }


@dataclass
class ReportScores:
    name: str
    dataset: str
    reference: str
    label_run: str
    uncertain: str
    reports: int  # generated reports
    aligned: int  # with a source report
    region: Comparison | None  # None when the reference has no region-level labels
    image: Comparison
    bleu4: float | None
    rouge_l: float | None
    per_report: list[ReportScore]
    judge_model: str | None = None
    judge_prompt_sha256: str | None = None
    judge_note: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def judged(self) -> list[JudgeScores]:
        return [r.judge for r in self.per_report if r.judge is not None]

    def judge_means(self) -> dict[str, float] | None:
        """Mean of each criterion and of the total over the judged reports (None if none)."""
        judged = self.judged
        if not judged:
            return None
        means = {name: float(np.mean([getattr(j, name) for j in judged])) for name in CRITERIA}
        means["total"] = float(np.mean([j.total for j in judged]))
        return means

    def summary(self) -> dict[str, Any]:
        """Every corpus-level figure, JSON-ready (undefined values are None)."""

        def consistency(comparison: Comparison | None) -> dict[str, Any] | None:
            if comparison is None:
                return None
            micro, macro = comparison.micro, comparison.macro
            return {
                "reports": comparison.reports,
                "findings": list(comparison.findings),
                "tp": micro.tp,
                "fp": micro.fp,
                "fn": micro.fn,
                "precision": micro.precision,
                "recall": micro.recall,
                "f1": micro.f1,
                "kappa": micro.kappa,
                "macro_precision": macro.precision,
                "macro_recall": macro.recall,
                "macro_f1": macro.f1,
            }

        summary = {
            "name": self.name,
            "dataset": self.dataset,
            "reference": self.reference,
            "label_run": self.label_run,
            "uncertain": self.uncertain,
            "reports": self.reports,
            "aligned": self.aligned,
            "label_consistency": {"region": consistency(self.region), "image": consistency(self.image)},
            "bleu4": self.bleu4,
            "rouge_l": self.rouge_l,
            "judge": {
                "model": self.judge_model,
                "prompt_sha256": self.judge_prompt_sha256,
                "judged": len(self.judged),
                "failed": sum(1 for r in self.per_report if r.judge_error),
                "means": self.judge_means(),
                "max_total": MAX_TOTAL,
                "note": self.judge_note,
            },
            "notes": list(self.notes),
        }
        return finite(summary)


# --- text --------------------------------------------------------------------------------------------------
def report_sections(text: str, sections: Sequence[dict]) -> dict[str, str]:
    """FINDINGS and IMPRESSION bodies of a stored report (whitespace-normalized; empty if absent)."""
    bodies = {name: [] for name in FINDING_SECTIONS}
    for section in sections:
        if section.get("name") in bodies:
            bodies[section["name"]].append(" ".join(text[section["start"] : section["end"]].split()))
    return {name: " ".join(b for b in parts if b) for name, parts in bodies.items()}


def scored_text(text: str, sections: Sequence[dict]) -> str:
    """The text compared by BLEU and ROUGE: FINDINGS then IMPRESSION, or the whole report."""
    parts = report_sections(text, sections)
    joined = " ".join(p for p in (parts["findings"], parts["impression"]) if p)
    return joined or " ".join(text.split())


def text_scores(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, float, list[float], list[float]]:
    """(corpus BLEU-4, mean ROUGE-L F, per-pair BLEU-4, per-pair ROUGE-L F)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if not hypotheses:
        return float("nan"), float("nan"), [], []
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score
    per_bleu = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hypotheses, references)]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=ROUGE_STEMMER)
    per_rouge = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references)]
    return bleu, float(np.mean(per_rouge)), per_bleu, per_rouge


# --- labeling the generated reports --------------------------------------------------------------------
def label_run_name(name: str, labeler: str) -> str:
    return f"score:{name}:{labeler}"


def label_generated(store: Store, name: str, labeler: str = "rules", *, allow_remote: bool = False) -> str:
    """Label generation `name`'s reports with `labeler` ("rules", or the name of a rules or LLM run
    whose source to reuse) as run `score:<name>:<labeler>`; an existing such run that covers them
    all is reused. Returns the run name."""
    from labeling.sources import ReportSelection
    from labeling.sources.llm import LabelOptions, LlmRequest, label_with_llm
    from labeling.sources.rules import RulesRequest, label_with_rules

    run_name = label_run_name(name, labeler)
    dataset = generated_dataset(name)
    keys = [row["report_key"] for row in generated_reports(store, name)]
    existing = next((run for run in store.runs() if run.name == run_name), None)
    if existing is not None:
        missing = np.setdiff1d(keys, store.covered_reports(run_name))
        if not len(missing):
            return run_name
        if existing.status.value == "complete":
            raise InputError(
                f"run {run_name!r} exists but does not cover {len(missing):,} of the generated "
                "reports; score with another --labeler"
            )
    source = None if labeler == "rules" else store.run(labeler)
    new_name, resume = (run_name, None) if existing is None else (None, run_name)
    reports = ReportSelection(report_keys=keys)  # the generated reports, nothing else
    if source is None:
        label_with_rules(store, RulesRequest(name=new_name, resume=resume, reports=reports))
    elif source.kind.value == "rules":
        vocabulary, enable = source.params.get("vocabulary"), source.params.get("enable", [])
        request = RulesRequest(name=new_name, resume=resume, reports=reports, vocabulary=vocabulary, enable=enable)
        label_with_rules(store, request)
    elif source.kind.value == "llm":
        options = LabelOptions.model_validate({**source.params, "dataset": dataset, "report_ids": [], "limit": None})
        request = LlmRequest(name=new_name, options=options, resume=resume, allow_remote=allow_remote)
        summary = label_with_llm(store, request)
        if not summary.status.finished:  # partial: the reports that failed validation are not scored
            raise ClalaError(
                f"labeling the generated reports stopped ({summary.stopped_because or summary.status.value}); "
                f"finish it with `clala label --resume {run_name}` and score again"
            )
    else:
        raise InputError(
            f"--labeler: run {source.name!r} is a {source.kind.value} run; name a rules or LLM run, or use rules"
        )
    return run_name


# --- label consistency -------------------------------------------------------------------------------------
def _consistency(
    store: Store,
    label_run: str,
    reference: str,
    pairs: Sequence[tuple[int, int]],
    level: str,
    uncertain: str,
    vocab: Vocabulary,
    notes: list[str],
) -> Comparison:
    generated_keys = [g for g, _ in pairs]
    source_keys = [s for _, s in pairs]
    read = store.label_matrix if level == "region" else store.image_matrix
    ours = read(label_run, vocab.region_names, vocab.finding_names, report_keys=generated_keys).codes
    theirs = read(reference, vocab.region_names, vocab.finding_names, report_keys=source_keys).codes
    flat = np.concatenate([ours.reshape(-1, ours.shape[-1]), theirs.reshape(-1, theirs.shape[-1])])
    finding_index = np.flatnonzero(((flat == PRESENT) | (flat == UNCERTAIN)).any(axis=0))
    counts = bin_counts(cell_bins(ours[..., finding_index], theirs[..., finding_index], uncertain))
    chosen = set(finding_index.tolist())
    return Comparison(
        run=label_run,
        reference=reference,
        level=level,
        uncertain=uncertain,
        vocabulary=vocab.version,
        reports=len(pairs),
        reports_run=len(store.covered_reports(label_run)),
        reports_reference=len(store.covered_reports(reference)),
        findings=tuple(vocab.finding_names[i] for i in finding_index),
        regions=vocab.region_names if level == "region" else (),
        cell_counts=counts,
        findings_left_out=tuple(f for i, f in enumerate(vocab.finding_names) if i not in chosen),
        notes=list(notes),
    )


# --- the whole scoring --------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class ScoreRequest:
    """What `clala score-reports` scores, and how: generation `name` against label run
    `reference`, its reports labeled by `labeler`; `judge`: the LLM judge (None: no judge);
    `out`: the folder for the scores files (None: only stored as an experiment)."""

    name: str
    reference: str
    labeler: str = "rules"
    judge: LLMOptions | None = None
    uncertain: str = "exclude"
    allow_remote: bool = False
    vocabulary: Vocabulary | str | None = None
    out: Path | None = None

    def __post_init__(self) -> None:
        check_options("region", self.uncertain)


@dataclass
class RecordedScores:
    """A scored generation and where its figures went."""

    scores: ReportScores
    experiment_id: int
    files: list[Path] = field(default_factory=list)


def judge_chat_text(reference: tuple[str, list[dict]], generated: tuple[str, list[dict]]) -> str:
    """The judge prompt's `$text`: both reports as FINDINGS / IMPRESSION."""

    def block(text: str, sections: list[dict]) -> str:
        parts = report_sections(text, sections)
        if not any(parts.values()):
            return " ".join(text.split())
        return f"FINDINGS: {parts['findings'] or '(none)'}\nIMPRESSION: {parts['impression'] or '(none)'}"

    return f"REFERENCE REPORT:\n{block(*reference)}\n\nGENERATED REPORT:\n{block(*generated)}"


def _consistency_pairs(
    store: Store, label_run: str, reference: str, sources: dict[int, int], notes: list[str]
) -> list[tuple[int, int]]:
    """(generated, source) report keys that the label run and the reference both cover."""
    labeled = set(store.covered_reports(label_run).tolist())
    covered = set(store.covered_reports(reference).tolist())
    pairs = [(key, source) for key, source in sources.items() if key in labeled and source in covered]
    if len(pairs) < len(sources):
        notes.append(
            f"{len(sources) - len(pairs):,} aligned reports are left out of label consistency: "
            f"not labeled by {label_run!r} or their source not covered by {reference!r}"
        )
    return pairs


def score_reports(store: Store, request: ScoreRequest) -> ReportScores:
    """Score generation `request.name` against run `request.reference` (see the module docstring)."""
    vocab = comparison_vocabulary(request.vocabulary)
    name = request.name
    reference = store.run(request.reference).name
    rows = generated_reports(store, name)
    label_run = label_generated(store, name, request.labeler, allow_remote=request.allow_remote)
    notes: list[str] = []
    per_report = [ReportScore(r["report_id"], r["report_key"], r["source_report_key"]) for r in rows]
    sources = {r.report_key: r.source_report_key for r in per_report if r.source_report_key is not None}
    aligned = [r for r in per_report if r.source_report_key is not None]
    if len(aligned) < len(per_report):
        notes.append(f"{len(per_report) - len(aligned):,} generated reports name no source report; they are not scored")
    if not aligned:
        raise InputError(f"no generated report of {name!r} names its source report; nothing to score against")
    texts = store.report_texts_and_sections([r.report_key for r in per_report] + list(sources.values()))
    pairs = _consistency_pairs(store, label_run, reference, sources, notes)
    if not pairs:
        raise InputError(f"reference run {reference!r} covers none of the source reports of {name!r}")
    region = None
    regional, _ = store.label_level_counts(reference)
    if regional:
        region = _consistency(store, label_run, reference, pairs, "region", request.uncertain, vocab, notes)
    else:
        notes.append(f"reference {reference!r} has image-level labels only; label consistency is image level only")
    image = _consistency(store, label_run, reference, pairs, "image", request.uncertain, vocab, notes)

    hypotheses = [scored_text(*texts[r.report_key]) for r in aligned]
    references = [scored_text(*texts[sources[r.report_key]]) for r in aligned]
    bleu, rouge, per_bleu, per_rouge = text_scores(hypotheses, references)
    for report, b, r in zip(aligned, per_bleu, per_rouge):
        report.bleu4, report.rouge_l = b, r

    result = ReportScores(
        name=name,
        dataset=generated_dataset(name),
        reference=reference,
        label_run=label_run,
        uncertain=request.uncertain,
        reports=len(per_report),
        aligned=len(aligned),
        region=region,
        image=image,
        bleu4=bleu,
        rouge_l=rouge,
        per_report=per_report,
        notes=notes,
    )
    if request.judge is None:
        result.judge_note = "skipped: no judge backend given (--judge-backend)"
    else:
        chats = [(texts[sources[r.report_key]], texts[r.report_key]) for r in aligned]
        _judge(result, aligned, chats, request)
    return result


def _judge(
    result: ReportScores,
    aligned: Sequence[ReportScore],
    chats: Sequence[tuple[tuple[str, list[dict]], tuple[str, list[dict]]]],
    request: ScoreRequest,
) -> None:
    """Ask the judge about each aligned report ((reference, generated) texts in `chats`) and
    record its answers in `result`."""
    from labeling.sources.llm import UnitFailed

    assert request.judge is not None
    prompt = load_prompt(JUDGE_PROMPT, load_vocabulary())
    messages = [prompt.messages(judge_chat_text(reference, generated)) for reference, generated in chats]
    model, outcomes = ask_all(request.judge, messages, JudgeScores, allow_remote=request.allow_remote)
    for report, outcome in zip(aligned, outcomes):
        if isinstance(outcome, UnitFailed):
            report.judge_error = outcome.error
        else:
            report.judge = outcome.parsed
    result.judge_model, result.judge_prompt_sha256 = model, prompt.sha256
    failed = sum(1 for r in aligned if r.judge_error)
    if failed:
        result.judge_note = f"{failed:,} of {len(aligned):,} judge answers were invalid after re-asking; left out"


def score_and_record(store: Store, request: ScoreRequest) -> RecordedScores:
    """`clala score-reports`: score the generation, then store and write its figures."""
    scores = score_reports(store, request)
    experiment_id, files = record_scores(store, scores, judge=request.judge, out=request.out)
    return RecordedScores(scores, experiment_id, files)


# --- recording ----------------------------------------------------------------------------------------------
def record_scores(
    store: Store, scores: ReportScores, *, judge: LLMOptions | None = None, out: str | Path | None = None
) -> tuple[int, list[Path]]:
    """Store the corpus-level figures as an `experiments` row (name `score-reports:<name>`) and,
    with `out`, write `<name>.scores.json` and `<name>.per_report.csv` there (each written whole
    or not at all). Returns (experiment id, files written)."""
    summary = scores.summary()
    config = {
        "labeler": scores.label_run,
        "uncertain": scores.uncertain,
        "rouge_stemmer": ROUGE_STEMMER,
        "judge": judge.model_dump(exclude={"api_key_env"}) if judge else None,
    }
    written: list[Path] = []
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        stem = scores.name.replace(":", "_")
        json_path, csv_path = folder / f"{stem}.scores.json", folder / f"{stem}.per_report.csv"
        with atomic_path(json_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
            json.dump({**summary, "config": config}, stream, indent=2)
        write_per_report_csv(csv_path, scores.per_report)
        written = [json_path, csv_path]
    experiment_id = store.add_experiment(
        f"score-reports:{scores.name}", {"reference": scores.reference}, config, metrics=summary, status="complete"
    )
    return experiment_id, written


def write_per_report_csv(path: Path, per_report: Sequence[ReportScore]) -> None:
    """One row per generated report (undefined figures empty), written whole or not at all."""
    rows = [finite(r.row()) for r in per_report]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
