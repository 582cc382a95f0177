"""Which region-decoder sentences a deterministic report may use (issue 15, item 7).

A checkpoint's sentence decoder writes one sentence per selected region. The writer uses such a
sentence only where the rules read it as exactly what the model predicts for that region:

- the sentence's present/uncertain cells (finding, region, status, severity, temporal; read by
  `round_trip.read_cells`, the reader of the whole report) are exactly the cells of the lesions
  whose canonical regions (model/reports/grouping.py) include the sentence's region, at that
  region: no subset, no superset, so a used sentence can neither add nor drop a finding;
- the sentence calls no finding of the report absent ("Atelectasis, no effusion." beside a
  predicted effusion is refused);
- at most one sentence per region (the first in anatomical order), and none for a region the
  report does not name for a lesion (a lung whose zone is predicted, a zone of a lung whose zones
  all are: the report names the zone, or the lung).

The cells a used sentence says are taken out of the writer's lesions; the writer phrases what is
left (a lesion with no region left is not phrased again). The impression is still written from
every lesion. The caller checks the round trip of the whole report and, should it fail, writes
the report without decoder sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from labeling.sources.rules import RulesLabeler
from model.reports.round_trip import Cell, read_cells, written_cells
from model.reports.structure import SaidSentence
from model.reports.wording import LesionWords, lesion_words
from schemas.vocabulary import Vocabulary


@dataclass(frozen=True)
class DecoderChoice:
    said: tuple[SaidSentence, ...]  # the decoder sentences used, in the order given
    rest: tuple[LesionWords, ...]  # what the writer still phrases


def cells_at(region: str, lesions: Sequence[LesionWords]) -> frozenset[Cell]:
    """The cells the lesions promise at `region` (a canonical region of theirs)."""
    return frozenset(cell for cell in written_cells(lesions) if cell[1] == region)


def choose_decoder_sentences(
    sentences: Sequence[tuple[str, str]],
    lesions: Sequence[LesionWords],
    labeler: RulesLabeler,
    vocabulary: Vocabulary,
) -> DecoderChoice:
    """The consistent sentences of `sentences` ((region, text), in anatomical order) for `lesions`
    (see the module doc), and the lesions left for the writer."""
    if not sentences or not lesions:
        return DecoderChoice((), tuple(lesions))
    report_findings = {words.finding for words in lesions}
    reads = read_cells([text for _, text in sentences], labeler)
    said: list[SaidSentence] = []
    covered: dict[str, set[str]] = {}  # finding -> regions said by a decoder sentence
    used_regions: set[str] = set()
    for (region, text), read in zip(sentences, reads):
        expected = cells_at(region, lesions)
        positive = frozenset(cell for cell in read if cell[2] != "absent")
        denied = {cell[0] for cell in read if cell[2] == "absent"}
        if region in used_regions or not expected or positive != expected or denied & report_findings:
            continue
        used_regions.add(region)
        findings = tuple(dict.fromkeys(cell[0] for cell in sorted(expected, key=_vocabulary_order(vocabulary))))
        said.append(SaidSentence(" ".join(text.split()), findings))
        for finding in findings:
            covered.setdefault(finding, set()).add(region)
    rest = []
    for words in lesions:
        left = tuple(r for r in words.regions if r not in covered.get(words.finding, ()))
        if left == words.regions:
            rest.append(words)
        elif left:
            rest.append(_with_regions(words, left, vocabulary))
    return DecoderChoice(tuple(said), tuple(rest))


def _vocabulary_order(vocabulary: Vocabulary):
    index = {name: i for i, name in enumerate(vocabulary.finding_names)}
    return lambda cell: index.get(cell[0], len(index))


def _with_regions(words: LesionWords, regions: tuple[str, ...], vocabulary: Vocabulary) -> LesionWords:
    # A subset of canonical regions is canonical itself, so the rewritten words name exactly `regions`.
    return lesion_words(
        words.finding,
        regions,
        vocabulary,
        severity=words.severity,
        temporal=words.temporal,
        uncertain=words.status == "uncertain",
    )


__all__ = ["DecoderChoice", "cells_at", "choose_decoder_sentences"]
