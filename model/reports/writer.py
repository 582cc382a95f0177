"""Report aggregation: one image's region sentences and predicted lesions -> one report with
FINDINGS and IMPRESSION, written by an LLM through the labeling backends or, without one, by a
deterministic fallback; and storage of generated reports with their provenance.

Inputs (`ReportInputs`): the sentences the region decoder wrote for the regions the caller
selected (predicted abnormal, or asked for), and the lesions the model predicts with their
probabilities. Both paths first put the sentences in anatomical order and remove
near-duplicates (`ordered_sentences`):
- order: lungs (zones, hila, whole lungs) -> pleura (costophrenic angles, hemidiaphragms) ->
  heart and mediastinum (cardiac, mediastinal, central veins, airway) -> bones (spine,
  clavicles) -> anything else; within a group, the vocabulary's region order; sentences of one
  region keep their given order;
- near-duplicates: equal after `labeling.ingest.sentences.normalize_sentence`, or a word-set Jaccard
  similarity >= 0.8 with a sentence already kept; the first one is kept.
The LLM path (`report_aggregator` prompt, rendered by `prompts.render` and identified by its
sha256) then merges them into prose; its answer is validated by `AggregatedReport` and re-asked by
instructor when invalid; an answer still invalid falls back for that report, with the error kept
in the report's metadata. The fallback writes the ordered sentences as FINDINGS and lists the
lesions predicted at or above the threshold as IMPRESSION ("No acute cardiopulmonary
abnormality." when there are none).

Generated reports are stored as `reports` rows of dataset `generated:<name>`, split into sections
and sentences exactly as `clala ingest` splits reports, so `clala label --dataset generated:<name>`
labels them like any other report.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from labeling.core.errors import ClalaError, InputError
from labeling.core.files import file_sha256
from labeling.ingest import normalize_sentence
from labeling.sources.llm import BackendOptions
from labeling.sources.rules import RulesLabeler
from labeling.store.store import Store
from model.reports.round_trip import RoundTrip, check_report, round_trip_problem
from model.reports.structure import (
    NORMAL_IMPRESSION,
    SaidSentence,
    findings_sentences,
    impression_lines,
    names_only,
    prompt_structure,
)
from model.reports.wording import LesionWords, clause, lesion_words
from prompts.render import Prompt, load_prompt
from schemas.labels import Severity, Temporal
from schemas.reports import SourceReport
from schemas.runs import run_name_problem
from schemas.vocabulary import Vocabulary, load_vocabulary

AGGREGATOR_PROMPT = "report_aggregator"
FINDINGS_MAX_CHARS = 3000
IMPRESSION_MAX_CHARS = 1000
NEAR_DUPLICATE_JACCARD = 0.8
DEFAULT_THRESHOLD = 0.5
GENERATED_PREFIX = "generated:"
ANATOMY_SECTIONS = ("lungs", "pleura", "heart and mediastinum", "bones", "other")


# --- inputs and the validated answer -------------------------------------------------------------
def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


class RegionSentence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    region: str
    text: Annotated[str, AfterValidator(_not_blank)]


class PredictedLesion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    finding: str
    probability: float = Field(ge=0.0, le=1.0)
    regions: tuple[str, ...] = Field(default=(), description="regions the region head places it in")
    severity: Severity | None = Field(default=None, description="written as its word when given (labels, or a head)")
    temporal: Temporal | None = None
    uncertain: bool = Field(default=False, description='written hedged ("possible ...")')


class ReportInputs(BaseModel):
    """What the model produced for one image: the report's parts, and where it came from."""

    model_config = ConfigDict(extra="forbid")
    report_id: str = Field(min_length=1, description="id of the generated report: the source study id")
    source_report_key: int | None = Field(default=None, description="the reference report of this image")
    image_paths: list[str] = []
    region_sentences: list[RegionSentence] = []
    lesions: list[PredictedLesion] = []


def _section_text(limit: int, header: str) -> Callable[[str], str]:
    leading_header = re.compile(rf"^\s*{header}\s*:\s*", re.IGNORECASE)

    def check(text: str) -> str:
        text = " ".join(leading_header.sub("", text).split())
        if not text:
            raise ValueError(f"{header.lower()} must not be empty")
        if len(text) > limit:
            raise ValueError(f"{header.lower()} is {len(text)} characters; at most {limit}")
        return text

    return check


class AggregatedReport(BaseModel):
    """The aggregator's answer. Whitespace is normalized and a repeated section header removed;
    empty or over-long sections are rejected (and re-asked). The lengths are checked here rather
    than with maxLength, which not every structured-output backend accepts."""

    model_config = ConfigDict(extra="forbid")
    findings: Annotated[str, AfterValidator(_section_text(FINDINGS_MAX_CHARS, "FINDINGS"))] = Field(
        description="the FINDINGS section, plain sentences ordered by anatomy"
    )
    impression: Annotated[str, AfterValidator(_section_text(IMPRESSION_MAX_CHARS, "IMPRESSION"))] = Field(
        description="the IMPRESSION section: the main abnormal findings, or no acute abnormality"
    )


@dataclass
class WrittenReport:
    """One generated report with how it was written."""

    inputs: ReportInputs
    report: AggregatedReport
    aggregator: str  # "llm:<model>" or "fallback"
    prompt_name: str | None = None
    prompt_sha256: str | None = None
    llm_error: str | None = None  # why the LLM's answer was not used, when it fell back
    decoder_sentences: int = 0  # FINDINGS sentences taken from the region decoder
    round_trip: str | None = None  # an LLM's report: kept | re-asked and kept | replaced (ROUND_TRIP_OUTCOMES)

    @property
    def text(self) -> str:
        return report_text(self.report)


# --- ordering and de-duplication --------------------------------------------------------------------
def anatomical_order(vocabulary: Vocabulary) -> dict[str, tuple[int, int]]:
    """Region -> (anatomy section index in ANATOMY_SECTIONS, vocabulary index): the sort key."""
    groups = vocabulary.data.region_groups
    pleura = [*groups.get("costophrenic", []), *groups.get("hemidiaphragms", [])]
    sections = (
        [r for r in groups.get("lungs", []) if r not in pleura],
        pleura,
        [
            *groups.get("cardiac", []),
            *groups.get("cardiomediastinal", []),
            *groups.get("mediastinal", []),
            *groups.get("central_veins", []),
            *groups.get("airway", []),
        ],
        groups.get("bones", []),
    )
    rank = {}
    for region in vocabulary.regions:
        section = next((i for i, names in enumerate(sections) if region.name in names), len(sections))
        rank[region.name] = (section, region.index)
    return rank


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9]+", normalize_sentence(text)))


def is_near_duplicate(text: str, kept: Sequence[str], threshold: float = NEAR_DUPLICATE_JACCARD) -> bool:
    """Equal to a kept sentence once normalized, or sharing >= `threshold` of their words (Jaccard)."""
    normalized, words = normalize_sentence(text), _words(text)
    for other in kept:
        if normalize_sentence(other) == normalized:
            return True
        other_words = _words(other)
        union = words | other_words
        if union and len(words & other_words) / len(union) >= threshold:
            return True
    return False


def ordered_sentences(
    sentences: Sequence[RegionSentence], vocabulary: Vocabulary, threshold: float = NEAR_DUPLICATE_JACCARD
) -> list[RegionSentence]:
    """The sentences in anatomical order with near-duplicates removed (the first is kept)."""
    rank = anatomical_order(vocabulary)
    ordered = sorted(enumerate(sentences), key=lambda item: (rank[item[1].region], item[0]))
    kept: list[RegionSentence] = []
    for _, sentence in ordered:
        if not is_near_duplicate(sentence.text, [s.text for s in kept], threshold):
            kept.append(sentence)
    return kept


def predicted_findings(
    lesions: Sequence[PredictedLesion], vocabulary: Vocabulary, threshold: float = DEFAULT_THRESHOLD
) -> list[PredictedLesion]:
    """Lesions at or above the threshold, most probable first (vocabulary order among equals)."""
    order = {name: i for i, name in enumerate(vocabulary.finding_names)}
    chosen = [lesion for lesion in lesions if lesion.probability >= threshold]
    return sorted(chosen, key=lambda lesion: (-lesion.probability, order.get(lesion.finding, len(order))))


def words_of(lesion: PredictedLesion, vocabulary: Vocabulary) -> LesionWords:
    return lesion_words(
        lesion.finding,
        lesion.regions,
        vocabulary,
        severity=lesion.severity.value if lesion.severity else None,
        temporal=lesion.temporal.value if lesion.temporal else None,
        uncertain=lesion.uncertain,
    )


def fallback_report(
    inputs: ReportInputs, vocabulary: Vocabulary | None = None, threshold: float = DEFAULT_THRESHOLD
) -> AggregatedReport:
    """The deterministic report, written from the lesions predicted at or above `threshold`:
    FINDINGS by system with normal statements, IMPRESSION by clinical priority
    (model/reports/structure.py), in the vocabulary's radiology wording (wording.py, grouping.py).
    The region sentences are not used here (see `deterministic_report` for decoder sentences)."""
    vocabulary = vocabulary or load_vocabulary()
    return deterministic_report(inputs, vocabulary, threshold)[0]


def deterministic_report(
    inputs: ReportInputs,
    vocabulary: Vocabulary,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    decoder_labeler: RulesLabeler | None = None,
) -> tuple[AggregatedReport, int]:
    """The deterministic report and how many of its FINDINGS sentences are the region decoder's.

    Given `decoder_labeler`, the region sentences the rules read as exactly the lesions predicted
    in their region are used (model/reports/decoder_sentences.py) and the writer phrases the rest;
    when the whole report then fails the round trip, it is written without them."""
    from model.reports.decoder_sentences import choose_decoder_sentences

    lesions = [words_of(lesion, vocabulary) for lesion in predicted_findings(inputs.lesions, vocabulary, threshold)]
    plain = _report_from(lesions, lesions, (), vocabulary)
    if decoder_labeler is None or not inputs.region_sentences or not lesions:
        return plain, 0
    sentences = [(s.region, s.text) for s in ordered_sentences(inputs.region_sentences, vocabulary)]
    choice = choose_decoder_sentences(sentences, lesions, decoder_labeler, vocabulary)
    if not choice.said:
        return plain, 0
    mixed = _report_from(lesions, choice.rest, choice.said, vocabulary)
    if not check_report(report_text(mixed), lesions, decoder_labeler).faithful:
        return plain, 0
    return mixed, len(choice.said)


def _report_from(
    lesions: Sequence[LesionWords],
    phrased: Sequence[LesionWords],
    said: Sequence[SaidSentence],
    vocabulary: Vocabulary,
) -> AggregatedReport:
    """FINDINGS from the writer's `phrased` lesions and the `said` sentences; IMPRESSION from all `lesions`."""
    impression = impression_lines(lesions, vocabulary)
    if len(" ".join(impression)) > IMPRESSION_MAX_CHARS:
        # A model that predicts lesions in many regions: name the lesions without their places.
        impression = names_only(lesions, vocabulary)
    return AggregatedReport(
        findings=_whole_sentences(findings_sentences(phrased, vocabulary, said), FINDINGS_MAX_CHARS),
        impression=_whole_sentences(impression, IMPRESSION_MAX_CHARS) or NORMAL_IMPRESSION,
    )


def report_text(report: AggregatedReport) -> str:
    return f"FINDINGS: {report.findings}\n\nIMPRESSION: {report.impression}\n"


def _whole_sentences(sentences: Sequence[str], limit: int) -> str:
    """The leading sentences whose joined text fits in `limit` characters (the rest left out)."""
    kept, length = [], -1
    for sentence in (s.strip() for s in sentences):
        if not sentence:
            continue
        if length + 1 + len(sentence) > limit:
            break
        kept.append(sentence)
        length += 1 + len(sentence)
    return " ".join(kept)


def aggregator_text(inputs: ReportInputs, vocabulary: Vocabulary, threshold: float = DEFAULT_THRESHOLD) -> str:
    """The `$text` of the aggregator prompt: ordered region sentences and the predicted lesions."""
    lines = ["REGION SENTENCES (region: sentence), in anatomical order:"]
    sentences = ordered_sentences(inputs.region_sentences, vocabulary)
    lines += [f"- {s.region}: {' '.join(s.text.split())}" for s in sentences] or ["- none"]
    lines.append(f"PREDICTED LESIONS (probability >= {threshold:.2f}):")
    lesions = predicted_findings(inputs.lesions, vocabulary, threshold)
    lines += [
        f"- {lesion.finding}: {lesion.probability:.2f}" + (f" ({', '.join(lesion.regions)})" if lesion.regions else "")
        for lesion in lesions
    ] or ["- none"]
    if lesions:
        # The writer's words for each lesion: what the round trip reads back as exactly that lesion.
        lines.append("SAY EACH LESION AS (these words, each lesion once):")
        lines += [f"- {lesion.finding}: {clause([words_of(lesion, vocabulary)], vocabulary)}" for lesion in lesions]
    return "\n".join(lines)


def check_inputs(items: Sequence[ReportInputs], vocabulary: Vocabulary) -> None:
    seen: set[str] = set()
    for item in items:
        if item.report_id in seen:
            raise InputError(f"report id {item.report_id!r} is given twice; write one report per study")
        seen.add(item.report_id)
        for sentence in item.region_sentences:
            if sentence.region not in vocabulary.region_names:
                raise InputError(
                    f"report {item.report_id!r}: region {sentence.region!r} is not in vocabulary {vocabulary.version}"
                )
        for lesion in item.lesions:
            if lesion.finding not in vocabulary.finding_names:
                raise InputError(
                    f"report {item.report_id!r}: finding {lesion.finding!r} is not in vocabulary {vocabulary.version}"
                )
            for region in lesion.regions:
                if region not in vocabulary.region_names:
                    raise InputError(
                        f"report {item.report_id!r}: lesion {lesion.finding!r}: region {region!r} "
                        f"is not in vocabulary {vocabulary.version}"
                    )


# --- LLM calls through the labeling backends ---------------------------------------------------------
class LLMOptions(BackendOptions):
    """An LLM backend for writing or judging reports: the labeling backends (`local` llama.cpp
    server, any `openai`-compatible server, in-process `vllm`), opened by
    `labeling.sources.llm.open_backend`, with the decoding used for these calls."""

    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, ge=16)
    max_retries: int = Field(default=2, ge=0, le=10)
    concurrency: int = Field(default=4, ge=1, le=512)
    seed: int | None = 0
    n_ctx: int = 8192


def ask_all(
    options: LLMOptions, chats: Sequence[list[dict]], answer_model: type[BaseModel], *, allow_remote: bool = False
) -> tuple[str, list[Any]]:
    """Ask every chat for an `answer_model` answer, `options.concurrency` at a time.

    Returns (model id, one `labeling.sources.llm.backends.Answer` or `UnitFailed` per chat, in order). A
    server that cannot be reached or refuses the request stops everything with a ClalaError.
    """
    model, outcomes, _ = ask_and_reask(options, chats, answer_model, allow_remote=allow_remote)
    return model, outcomes


def ask_and_reask(
    options: LLMOptions,
    chats: Sequence[list[dict]],
    answer_model: type[BaseModel],
    *,
    reask: Callable[[int, Any], list[dict] | None] | None = None,
    allow_remote: bool = False,
) -> tuple[str, list[Any], dict[int, Any]]:
    """`ask_all`, then once more, on the same backend, for every chat `reask(index, outcome)`
    answers with a follow-up chat; returns the second outcomes by index as well."""
    from labeling.sources.llm import ServerRefused, TransportFailed, UnitFailed, open_backend

    schema = answer_model.model_json_schema()
    with open_backend(options, allow_remote) as (backend, model):

        async def one(chat: list[dict], semaphore: asyncio.Semaphore) -> Any:
            async with semaphore:
                try:
                    return await backend.ask(
                        chat,
                        answer_model,
                        schema,
                        temperature=options.temperature,
                        max_tokens=options.max_tokens,
                        reasks=options.max_retries,
                        seed=options.seed,
                    )
                except UnitFailed as exc:
                    return exc

        async def main() -> tuple[list[Any], dict[int, Any]]:
            semaphore = asyncio.Semaphore(options.concurrency)
            try:
                first = list(await asyncio.gather(*(one(chat, semaphore) for chat in chats)))
                follow_ups = {i: reask(i, outcome) for i, outcome in enumerate(first)} if reask else {}
                again = {i: chat for i, chat in follow_ups.items() if chat is not None}
                second = await asyncio.gather(*(one(chat, semaphore) for chat in again.values()))
                return first, dict(zip(again, second))
            finally:
                await backend.close()

        try:
            first, second = asyncio.run(main())
            return model, first, second
        except (TransportFailed, ServerRefused) as exc:
            raise ClalaError(f"the LLM server gave no usable answer ({exc}); nothing was written") from None


def aggregator_prompt(vocabulary: Vocabulary | None = None) -> Prompt:
    vocabulary = vocabulary or load_vocabulary()
    return load_prompt(AGGREGATOR_PROMPT, vocabulary, values={"structure": prompt_structure(vocabulary)})


ROUND_TRIP_OUTCOMES = ("kept", "re-asked and kept", "replaced")
REASK_MESSAGE = (
    "Your report does not match the predicted lesions when read back: {problem}. Write it again with "
    "exactly the predicted lesions, each in its regions and with its words (SAY EACH LESION AS), "
    "and no other finding."
)


@dataclass(kw_only=True)
class _Writing:
    """What writing one batch of reports needs: the vocabulary, threshold, rules reader and prompt."""

    vocabulary: Vocabulary
    threshold: float
    labeler: RulesLabeler
    decoder_sentences: bool

    def deterministic(self, item: ReportInputs, **how: Any) -> WrittenReport:
        decoder = self.labeler if self.decoder_sentences else None
        report, said = deterministic_report(item, self.vocabulary, self.threshold, decoder_labeler=decoder)
        return WrittenReport(item, report, "fallback", decoder_sentences=said, **how)

    def check(self, item: ReportInputs, report: AggregatedReport) -> RoundTrip:
        chosen = predicted_findings(item.lesions, self.vocabulary, self.threshold)
        return check_report(report_text(report), [words_of(x, self.vocabulary) for x in chosen], self.labeler)


def write_reports(
    items: Sequence[ReportInputs],
    options: LLMOptions | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    allow_remote: bool = False,
    vocabulary: Vocabulary | None = None,
    decoder_sentences: bool = False,
) -> list[WrittenReport]:
    """One report per item: by the LLM `options` describe, or by the deterministic writer when None
    (with `decoder_sentences`: using the region sentences the rules check, `deterministic_report`).

    Every LLM report is read back by the rules (model/reports/round_trip.py): one that adds, drops
    or contradicts a finding is re-asked once with the reason, and if still unfaithful (or invalid)
    replaced by the deterministic report; `WrittenReport.round_trip` says which happened."""
    from labeling.sources.llm import UnitFailed

    vocabulary = vocabulary or load_vocabulary()
    check_inputs(items, vocabulary)
    writing = _Writing(
        vocabulary=vocabulary,
        threshold=threshold,
        labeler=RulesLabeler(vocabulary),
        decoder_sentences=decoder_sentences,
    )
    if options is None:
        return [writing.deterministic(item) for item in items]
    prompt = aggregator_prompt(vocabulary)
    chats = [prompt.messages(aggregator_text(item, vocabulary, threshold)) for item in items]
    problems: dict[int, str] = {}

    def reask(index: int, outcome: Any) -> list[dict] | None:
        if isinstance(outcome, UnitFailed):
            return None
        trip = writing.check(items[index], outcome.parsed)
        if trip.faithful:
            return None
        problems[index] = round_trip_problem(trip)
        answer = {"role": "assistant", "content": outcome.parsed.model_dump_json()}
        return [*chats[index], answer, {"role": "user", "content": REASK_MESSAGE.format(problem=problems[index])}]

    model, outcomes, second = ask_and_reask(options, chats, AggregatedReport, reask=reask, allow_remote=allow_remote)
    written = []
    for index, (item, outcome) in enumerate(zip(items, outcomes)):
        how: dict[str, Any] = {"prompt_name": prompt.name, "prompt_sha256": prompt.sha256}
        if isinstance(outcome, UnitFailed):
            written.append(writing.deterministic(item, **how, llm_error=outcome.error, round_trip="replaced"))
        elif index not in second:
            written.append(WrittenReport(item, outcome.parsed, f"llm:{model}", **how, round_trip="kept"))
        else:
            again = second[index]
            if isinstance(again, UnitFailed):
                error = f"re-asked because {problems[index]}; then: {again.error}"
            else:
                trip = writing.check(item, again.parsed)
                if trip.faithful:
                    written.append(
                        WrittenReport(item, again.parsed, f"llm:{model}", **how, round_trip="re-asked and kept")
                    )
                    continue
                error = f"re-asked because {problems[index]}; still {round_trip_problem(trip)}"
            written.append(writing.deterministic(item, **how, llm_error=error, round_trip="replaced"))
    return written


# --- storing generated reports ------------------------------------------------------------------------
@dataclass
class StoredReports:
    name: str
    dataset: str
    report_keys: list[int]
    sentences: int
    aggregators: dict[str, int] = field(default_factory=dict)
    round_trips: dict[str, int] = field(default_factory=dict)  # LLM reports: kept | re-asked and kept | replaced
    decoder_sentences: int = 0  # FINDINGS sentences taken from the region decoder, all reports


def generated_dataset(name: str) -> str:
    return f"{GENERATED_PREFIX}{name}"


def store_generated_reports(
    store: Store,
    name: str,
    reports: Sequence[WrittenReport],
    *,
    checkpoint: str | Path | None = None,
    provenance: dict[str, Any] | None = None,
) -> StoredReports:
    """Store `reports` as dataset `generated:<name>` in one transaction: report_id = the item's id
    (the source study id); patient and study ids from the source report; metadata = source
    report_key, checkpoint path and sha256, aggregator, prompt name and sha256, the LLM error if
    it fell back, the predicted lesions, the region sentences the report was written from, and
    `provenance` (how the generation ran: split, region selection, decoding; the same for every
    report) under "generation", the LLM round trip's outcome ("round_trip") and how many FINDINGS
    sentences are the region decoder's ("decoder_sentences"). A name already used is an error."""
    from labeling.ingest import batch_tables as report_tables  # the rows `clala ingest` writes

    check_generation_name(name, store)
    if not reports:
        raise InputError("no reports to store")
    checkpoint_sha = None
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise InputError(f"{checkpoint}: checkpoint file not found")
        checkpoint_sha = file_sha256(checkpoint)
    dataset = generated_dataset(name)
    ids = [r.inputs.report_id for r in reports]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate is not None:
        raise InputError(f"report id {duplicate!r} is given twice; write one report per study")
    source_keys = sorted({r.inputs.source_report_key for r in reports if r.inputs.source_report_key is not None})
    sources = store.report_identities(source_keys)
    missing = [k for k in source_keys if k not in sources]
    if missing:
        raise InputError(f"{store.path}: source report_key {missing[0]} is not in the database")
    checkpoint_path = str(checkpoint.resolve()) if checkpoint else None
    rows = []
    for number, written in enumerate(reports, start=1):
        item = written.inputs
        key = item.source_report_key
        patient, study = sources[key] if key is not None else (None, None)
        metadata = {
            "source_report_key": item.source_report_key,
            "checkpoint_path": checkpoint_path,
            "checkpoint_sha256": checkpoint_sha,
            "aggregator": written.aggregator,
            "prompt_name": written.prompt_name,
            "prompt_sha256": written.prompt_sha256,
            "llm_error": written.llm_error,
            "round_trip": written.round_trip,
            "decoder_sentences": written.decoder_sentences,
            "lesions": [lesion.model_dump(mode="json") for lesion in item.lesions],
            "region_sentences": [sentence.model_dump(mode="json") for sentence in item.region_sentences],
            "generation": dict(provenance or {}),
        }
        rows.append(
            SourceReport(
                dataset=dataset,
                report_id=item.report_id,
                text=written.text,
                patient_id=patient,
                study_id=study or item.report_id,
                image_paths=item.image_paths,
                metadata=metadata,
                source=f"{dataset} #{number}",
            )
        )
    with store.transaction():
        ingest_id = store.start_ingest(f"clala generate {name}", "generated", dataset, len(rows))
        first_key = store.next_report_key()
        batch = [(report, first_key + i, 1) for i, report in enumerate(rows)]
        reports_table, sentences_table, n_sentences = report_tables(batch, ingest_id, datetime.now())
        store.add_reports(reports_table, sentences_table)
        store.finish_ingest(ingest_id, len(rows), 0, 0, 0)
    aggregators = dict(Counter(written.aggregator for written in reports))
    round_trips = Counter(written.round_trip for written in reports if written.round_trip)
    return StoredReports(
        name,
        dataset,
        [key for _, key, _ in batch],
        n_sentences,
        aggregators,
        {outcome: round_trips[outcome] for outcome in ROUND_TRIP_OUTCOMES if round_trips[outcome]},
        sum(written.decoder_sentences for written in reports),
    )


def check_generation_name(name: str, store: Store | None = None) -> None:
    """A generation's name: well formed, and (given the store) no generated reports stored under it yet."""
    problem = run_name_problem(name)
    if problem:
        raise InputError(f"--name: {problem.replace('run name', 'name')}")
    if store is not None and store.dataset_report_count(generated_dataset(name)):
        raise InputError(f"{store.path}: generated reports named {name!r} already exist; choose another --name")


def generated_reports(store: Store, name: str) -> list[dict[str, Any]]:
    """The stored reports of generation `name`: report_key, report_id, text, sections, metadata
    (parsed), source_report_key; in report order. Unknown name: InputError."""
    dataset = generated_dataset(name)
    rows = store.dataset_reports(dataset)
    if not rows:
        raise InputError(f"{store.path}: no generated reports named {name!r} (dataset {dataset!r})")
    for row in rows:
        row["source_report_key"] = row["metadata"].get("source_report_key")
    return rows
